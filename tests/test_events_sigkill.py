"""The service as a real process, SIGKILLed between a payout's completion and its event's
delivery: after a restart the event is delivered, once. On SQLite and MariaDB."""

import signal
import time

import requests
import sqlalchemy as sa

import service
from mpesa_service.events import signature
from mpesa_service.storage import events
from tests.conftest import free_port
from tests.service_support import wait_until
from tests.test_entrypoint import serve_until_healthy
from tests.test_events import SECRET, Receiver, serving_on

KEY = "sigkill-test-key"


def settings(database_url: str, tmp_path, receiver_port: int) -> dict:
    return {
        "DATABASE_URL": database_url,
        "PORT": str(free_port()),
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "journal.log"),
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": "",
        "API_KEYS": KEY,
        "EVENTS_URL": f"http://127.0.0.1:{receiver_port}/events",
        "EVENTS_SECRET": SECRET,
        "EVENTS_TIMEOUT_SECONDS": "2",
        "EVENTS_INTERVAL_SECONDS": "1",
        # The next attempt comes 8 s after the first refused one: the test sees the event
        # unclaimed and kills the process well within that, even on a loaded machine (a kill
        # while it is claimed would hold it for the claim's 62 s).
        "EVENTS_RETRY_SCHEDULE_SECONDS": "8",
    }


def the_event(engine: sa.Engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(events)).one_or_none()


def the_retry_comes_due(engine: sa.Engine) -> None:
    """Time passes while the service is down: the next attempt is due when it starts again."""
    with engine.begin() as conn:
        conn.execute(sa.update(events).values(next_attempt_at=events.c.created_at))


def test_an_event_written_before_a_sigkill_is_delivered_once_after_the_restart(
    database_url, tmp_path
):
    receiver_port = free_port()  # nothing listens yet: connection refused
    environ = settings(database_url, tmp_path, receiver_port)
    engine = service.make_engine(database_url)
    process, base_url = serve_until_healthy(environ)
    try:
        payout = requests.post(
            f"{base_url}/payouts",
            json={"user_id": "trainer-1", "phone": "0712345678", "amount": 250, "reason": "x"},
            headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": "sigkill-1"},
            timeout=30,
        )
        assert payout.status_code == 201, payout.text
        # Completed, its event written and refused once, and not claimed at this moment (the
        # next attempt is 8 s away): the kill lands between completion and delivery.
        wait_until(lambda: (e := the_event(engine)) and e.attempts >= 1 and not e.claim_owner)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
    event = the_event(engine)
    assert (event.type, event.state) == ("payout.completed", "pending")
    the_retry_comes_due(engine)
    assert event.subject == payout.json()["reference_id"]
    made = Receiver()
    with serving_on(made.app, receiver_port):
        process, _ = serve_until_healthy(environ)
        try:
            wait_until(lambda: the_event(engine).state == "delivered", timeout=30)
            time.sleep(1.5)  # a second delivery, were there one, would come within a run
        finally:
            process.terminate()
            process.communicate(timeout=10)
    delivered = the_event(engine)
    engine.dispose()
    assert (delivered.state, delivered.attempts) == ("delivered", event.attempts + 1)
    ((headers, body),) = made.received
    assert headers["Mpesa-Event-Id"] == event.id and body == event.body.encode()
    timestamp = int(headers["Mpesa-Signature"].split(",")[0].removeprefix("t="))
    assert headers["Mpesa-Signature"] == signature(SECRET, timestamp, body)
