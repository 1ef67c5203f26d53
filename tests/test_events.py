"""Outbound events: written in the transaction of their change, delivered signed, at least once,
to a real receiver over HTTP, on SQLite and MariaDB."""

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import bottle
import pytest

from mpesa_service import events
from mpesa_service.events import deliver_events, emit, signature
from mpesa_service.storage import event_deliveries
from tests.conftest import free_port
from tests.http_support import serving
from tests.service_support import API_KEY, payment_completed, wait_until
from tests.test_payouts import callbacks_of, result_body

SECRET = "whsec-test-secret"
README = Path(__file__).resolve().parent.parent / "README.md"


class Receiver:
    """A real HTTP server keeping every delivery (headers, raw body); it answers 500 to the
    first `failures` deliveries, then 200."""

    def __init__(self, failures: int = 0):
        self.failures, self.received, self.lock = failures, [], threading.Lock()
        self.app = bottle.Bottle()
        self.app.post("/events", callback=self.take)

    def take(self):
        with self.lock:
            self.received.append((dict(bottle.request.headers), bottle.request.body.read()))
            failing = len(self.received) <= self.failures
        bottle.response.status = 500 if failing else 200
        return {"received": not failing}

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver():
    """A Receiver served on loopback, and its URL."""
    made = Receiver()
    with serving(made.app, threads=4) as base_url:
        yield made, f"{base_url}/events"


def event_settings(url: str) -> dict:
    return {
        "EVENTS_URL": url,
        "EVENTS_SECRET": SECRET,
        "EVENTS_TIMEOUT_SECONDS": "2",
        "EVENTS_RETRY_SCHEDULE_SECONDS": "0",
        "API_KEYS": f"{API_KEY},ops:operator:{OPERATOR_KEY}",
    }


def event_stack(make_stack, url: str):
    return make_stack(event_settings(url))


@pytest.fixture
def stack(make_stack):
    """The service with events on: EVENTS_URL names a port nothing listens on, and no job runs
    in these tests, so every event stays pending where the test can read it."""
    return event_stack(make_stack, "http://127.0.0.1:9/events")


def pay(stack, phone="0712345678", amount=1000):
    body = {"user_id": "trainer-1", "phone": phone, "amount": amount, "reason": "payout"}
    return stack.post("/payouts", body, headers={"Idempotency-Key": str(uuid.uuid4())}).json()


def collect(stack, phone="0712345678", amount=150):
    body = {"phone": phone, "amount": amount, "account_reference": "INV1", "description": "Top"}
    return stack.post("/payments/mpesa/stk-initiate", body).json()


def outbox(stack, **filters) -> list[dict]:
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    return stack.get(f"/events?{query}").json()["events"]


def events_of(stack, subject: str, count: int = 1) -> list[dict]:
    """The subject's events once there are `count` (waiting for the callback to land)."""

    def mine():
        return [event for event in outbox(stack) if event["subject"] == subject]

    wait_until(lambda: len(mine()) >= count)
    time.sleep(0.3)  # a second event would have landed by now
    return mine()


def readme_snippet(language: str) -> str:
    """The one fenced `language` block of the README's Outbound events section, as written."""
    section = README.read_text().split("## Outbound events", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)
    return snippet


def readme_verifier():
    """verify_event, executed from the README's Python snippet exactly as written."""
    snippet = readme_snippet("python")
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["verify_event"]


# --- written with the change, once ------------------------------------------------------------


def test_a_completed_payout_emits_one_event_with_the_payout_as_data(stack):
    created = pay(stack)
    (event,) = events_of(stack, created["reference_id"])
    detail = stack.get(f"/payouts/{created['reference_id']}").json()
    assert event["type"] == "payout.completed" and event["state"] == "pending"
    assert event["body"]["data"] == detail
    assert set(event["body"]) == {"id", "type", "created", "data"}
    assert event["body"]["id"] == event["id"]


def test_without_events_url_no_event_is_built_or_written(make_stack):
    plain = make_stack({"API_KEYS": f"{API_KEY},ops:operator:{OPERATOR_KEY}"})
    created = pay(plain)
    wait_until(
        lambda: plain.get(f"/payouts/{created['reference_id']}").json()["status"] == "completed"
    )
    collected = collect(plain)
    payment_completed(plain, collected["payment_id"])
    assert outbox(plain) == []


def test_a_failed_payout_emits_one_payout_failed_event(stack):
    created = pay(stack, phone="254711000001")
    (event,) = events_of(stack, created["reference_id"])
    assert event["type"] == "payout.failed"
    assert event["body"]["data"] == stack.get(f"/payouts/{created['reference_id']}").json()
    assert event["body"]["data"]["result_code"] == "1"


def test_a_result_delivered_twice_emits_once(stack):
    created = pay(stack, phone="254722000002")  # the simulator sends the callback twice
    wait_until(lambda: len(callbacks_of(stack, created["reference_id"])) == 2)
    assert [e["type"] for e in events_of(stack, created["reference_id"])] == ["payout.completed"]


def test_a_completed_collection_emits_one_event_with_the_query_answer_as_data(stack):
    started = collect(stack)
    checkout = started["checkout_request_id"]
    (event,) = events_of(stack, checkout)
    answer = stack.post("/payments/mpesa/stk-query", {"checkout_request_id": checkout}).json()
    assert event["type"] == "payment.completed"
    assert event["body"]["data"] == answer


def test_an_underpaid_collection_emits_one_amount_mismatch_event(stack):
    checkout = collect(stack, phone="254744000001", amount=500)["checkout_request_id"]
    (event,) = events_of(stack, checkout)
    assert event["type"] == "payment.amount_mismatch"
    assert event["body"]["data"]["flags"] == ["underpaid"]
    assert (event["body"]["data"]["amount"], event["body"]["data"]["paid_amount"]) == (500, 499)


def test_a_collection_callback_delivered_twice_emits_once(stack):
    checkout = collect(stack, phone="254722000002")["checkout_request_id"]
    assert [e["type"] for e in events_of(stack, checkout)] == ["payment.completed"]


def test_a_change_that_rolls_back_emits_nothing(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        emit(conn, "payout.completed", "ref-rolled-back", {"status": "completed"})
        raise RuntimeError("the state change failed after its event was written")
    with engine.begin() as conn:
        emit(conn, "payout.completed", "ref-committed", {"status": "completed"})
    subjects = [event["subject"] for event in events.list_events(engine, None, None)]
    assert subjects == ["ref-committed"]


# --- delivered, signed, at least once ---------------------------------------------------------


def test_a_receiver_failing_twice_gets_the_event_delivered_on_the_third_attempt(
    make_stack, receiver
):
    made, url = receiver
    made.failures = 2
    stack = event_stack(make_stack, url)
    created = pay(stack)
    (event,) = events_of(stack, created["reference_id"])
    delivered = sum(deliver_events(stack.svc) for _ in range(3))
    assert delivered == 1
    assert len(made.received) == 3
    for headers, body in made.received:
        assert headers["Mpesa-Event-Id"] == event["id"]
        assert headers["Content-Type"] == "application/json"
        timestamp = int(headers["Mpesa-Signature"].split(",")[0].removeprefix("t="))
        assert headers["Mpesa-Signature"] == signature(SECRET, timestamp, body)
        assert json.loads(body) == event["body"]
    attempts = events.delivery_log(stack.svc.engine, event["id"])
    assert sorted(a.status_code for a in attempts) == [200, 500, 500]
    assert all(a.latency_ms >= 0 for a in attempts)
    (after,) = events_of(stack, created["reference_id"])
    assert (after["state"], after["attempts"]) == ("delivered", 3)
    assert deliver_events(stack.svc) == 0  # nothing is due any more
    assert len(made.received) == 3


def test_a_receiver_that_was_down_gets_everything_in_order_per_payout(make_stack):
    port = free_port()  # nothing listens here yet: connection refused
    stack = event_stack(make_stack, f"http://127.0.0.1:{port}/events")
    completed = [pay(stack)["reference_id"] for _ in range(3)]
    twice = pay(stack, phone="254722000001")  # accepted; its callback never comes
    stack.hook("/hooks/b2c/result", result_body(twice["originator_conversation_id"], code=1))
    for reference in [*completed, twice["reference_id"]]:
        events_of(stack, reference)
    assert deliver_events(stack.svc) == 0
    refused = stack.rows(event_deliveries)
    assert len(refused) == 4 and all(a.status_code is None for a in refused)
    assert all("ConnectionError" in a.error for a in refused)
    # Evidence that it was paid after all arrives meanwhile: its second event waits for its
    # first.
    stack.hook("/hooks/b2c/result", result_body(twice["originator_conversation_id"]))
    events_of(stack, twice["reference_id"], count=2)
    made = Receiver()
    with serving_on(made.app, port):
        assert deliver_events(stack.svc) == 5
    subjects = [body["data"]["reference_id"] for body in made.bodies()]
    assert sorted(subjects) == sorted([*completed, *[twice["reference_id"]] * 2])
    of_twice = [
        body["type"]
        for body in made.bodies()
        if body["data"]["reference_id"] == twice["reference_id"]
    ]
    assert of_twice == ["payout.failed", "payout.completed"]
    assert {event["state"] for event in outbox(stack)} == {"delivered"}


OPERATOR_KEY = "ops-secret"


class serving_on:
    """Serve `app` on a given loopback port (the receiver coming back up)."""

    def __init__(self, app, port: int):
        import simulator
        from mpesa_service.entrypoint import WAITRESS_OPTIONS
        from mpesa_service.throughput import waitress_server

        self.server = simulator.BackgroundServer(
            app, port=port, threads=4, create_server=waitress_server.create, **WAITRESS_OPTIONS
        )

    def __enter__(self):
        return self.server.base_url

    def __exit__(self, *_):
        self.server.stop(3)


def test_two_delivery_jobs_at_once_never_deliver_one_event_twice(make_stack, receiver):
    made, url = receiver
    stack = event_stack(make_stack, url)
    with stack.svc.engine.begin() as conn:
        for number in range(40):
            emit(conn, "payout.completed", f"ref-{number}", {"reference_id": f"ref-{number}"})
    counts, barrier = [], threading.Barrier(2)

    def run():
        barrier.wait()
        counts.append(deliver_events(stack.svc))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [headers["Mpesa-Event-Id"] for headers, _ in made.received]
    assert sum(counts) == 40 and len(ids) == 40 and len(set(ids)) == 40
    assert len(stack.rows(event_deliveries)) == 40


# --- the API ------------------------------------------------------------------------------------


def test_events_are_listed_since_an_event_and_by_type_and_can_be_redelivered(make_stack, receiver):
    made, url = receiver
    stack = event_stack(make_stack, url)
    stack_ops = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    first = pay(stack)["reference_id"]
    events_of(stack, first)
    second = pay(stack, phone="254711000001")["reference_id"]
    events_of(stack, second)
    listed = outbox(stack)
    assert [e["subject"] for e in listed] == [first, second]
    assert [e["subject"] for e in outbox(stack, since=listed[0]["id"])] == [second]
    assert [e["subject"] for e in outbox(stack, type="payout.failed")] == [second]
    assert outbox(stack, since="2000-01-01T00:00:00Z") == listed
    assert stack.get("/events?since=yesterday").status_code == 400
    assert stack.get("/events?type=payout.paid").json()["field"] == "type"
    assert deliver_events(stack.svc) == 2
    assert stack.post(f"/events/{listed[0]['id']}/redeliver").status_code == 403
    redelivered = stack.post(f"/events/{listed[0]['id']}/redeliver", headers=stack_ops)
    assert redelivered.json()["state"] == "pending"
    assert stack.post("/events/no-such-event/redeliver", headers=stack_ops).status_code == 404
    assert deliver_events(stack.svc) == 1
    assert [h["Mpesa-Event-Id"] for h, _ in made.received].count(listed[0]["id"]) == 2


# --- the README's signature check ------------------------------------------------------------


def test_readme_snippet_verifies_a_real_delivery_and_refuses_tampering_and_old_ones(
    make_stack, receiver
):
    made, url = receiver
    stack = event_stack(make_stack, url)
    events_of(stack, pay(stack)["reference_id"])
    assert deliver_events(stack.svc) == 1
    ((headers, body),) = made.received
    verify_event = readme_verifier()
    header = headers["Mpesa-Signature"]
    assert verify_event(body, header, SECRET)
    assert not verify_event(body.replace(b"completed", b"failed"), header, SECRET)
    assert not verify_event(body, header, "another secret")
    old = int(time.time()) - 600
    assert not verify_event(body, signature(SECRET, old, body), SECRET)
    assert not verify_event(body, "v1=abc", SECRET)


NEEDS_PHP = pytest.mark.skipif(
    not shutil.which("php"), reason="needs php-cli (.ci/run installs it)"
)
PHP_RUNNER = """<?php
require __DIR__ . '/verify_event.php';
echo verify_event(file_get_contents($argv[1]), $argv[2], $argv[3]) ? 'valid' : 'invalid';
"""


def php_verdict(folder: Path, body: bytes, header: str, secret: str = SECRET) -> str:
    """What the README's PHP snippet, run by php-cli, says of a delivery."""
    (folder / "verify_event.php").write_text(readme_snippet("php"))
    (folder / "run.php").write_text(PHP_RUNNER)
    (folder / "body.json").write_bytes(body)
    argv = ["php", str(folder / "run.php"), str(folder / "body.json"), header, secret]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


@NEEDS_PHP
def test_readme_php_snippet_verifies_a_real_delivery_and_refuses_tampering_and_old_ones(
    make_stack, receiver, tmp_path
):
    made, url = receiver
    stack = event_stack(make_stack, url)
    events_of(stack, pay(stack)["reference_id"])
    assert deliver_events(stack.svc) == 1
    ((headers, body),) = made.received
    header = headers["Mpesa-Signature"]
    assert php_verdict(tmp_path, body, header) == "valid"
    assert php_verdict(tmp_path, body.replace(b"completed", b"failed"), header) == "invalid"
    assert php_verdict(tmp_path, body, header, "another secret") == "invalid"
    old = int(time.time()) - 600
    assert php_verdict(tmp_path, body, signature(SECRET, old, body)) == "invalid"
    assert php_verdict(tmp_path, body, "v1=abc") == "invalid"
