"""The console's page of outbound events: deliveries and failures, failures first, with a
Redeliver button behind the CSRF token. On SQLite and MariaDB."""

import re
from html import unescape

import requests
import sqlalchemy as sa

from mpesa_service.events import deliver_events, emit
from mpesa_service.storage import events, utcnow
from tests.http_support import serving
from tests.test_console import csrf_of, signed_in
from tests.test_events import Receiver, event_settings
from tests.test_operator import KEYS


def event_stack(make_stack, url: str):
    return make_stack({**event_settings(url), "API_KEYS": KEYS})


def emitted(stack, subject: str, event_type: str = "payout.completed") -> str:
    with stack.svc.engine.begin() as conn:
        return emit(conn, event_type, subject, {"reference_id": subject})


def rows_of(page: str) -> list[str]:
    table = page.split('<table id="events">', 1)[1].split("</table>", 1)[0]
    return [unescape(re.sub(r"<[^>]+>", " ", row)) for row in table.split("<tr")[2:]]


def state_of(stack, event_id: str):
    with stack.svc.engine.connect() as conn:
        return conn.execute(sa.select(events).where(events.c.id == event_id)).one()


def test_the_page_lists_a_failing_event_first_with_its_code_and_a_delivered_one(make_stack):
    made = Receiver(failures=1)  # the first delivery gets a 500, the next a 200
    with serving(made.app, threads=4) as base_url:
        stack = event_stack(make_stack, f"{base_url}/events")
        emitted(stack, "ref-fails")
        emitted(stack, "ref-delivered")
        assert deliver_events(stack.svc) == 1
    page = signed_in(stack).get(f"{stack.base_url}/console/events", timeout=10).text
    failing, delivered = rows_of(page)
    assert "failing" in failing and "ref-fails" in failing and "pending" in failing
    assert " 500 " in failing and " ms" in failing
    assert "ref-delivered" in delivered and "delivered" in delivered and " 200 " in delivered
    assert "failing" not in delivered
    assert 'href="/console/payouts/ref-fails"' in page
    assert 'href="/console/events"' in page  # the navigation links to it


def test_an_event_never_tried_says_so_and_a_refused_connection_shows_its_error(make_stack):
    stack = event_stack(make_stack, "http://127.0.0.1:9/events")
    emitted(stack, "ws_CO_1", "payment.completed")
    deliver_events(stack.svc)
    emitted(stack, "ref-new")
    page = signed_in(stack).get(f"{stack.base_url}/console/events", timeout=10).text
    refused, new = rows_of(page)
    assert "ws_CO_1" in refused and "ConnectionError" in refused
    assert "/console/payouts/ws_CO_1" not in page  # a payment's subject is not a payout
    assert "not tried yet" in new


def test_redeliver_makes_a_failed_event_pending_and_due(make_stack):
    stack = event_stack(make_stack, "http://127.0.0.1:9/events")
    event_id = emitted(stack, "ref-given-up")
    with stack.svc.engine.begin() as conn:
        conn.execute(events.update().values(state="failed", attempts=9))
    session = signed_in(stack)
    page = session.get(f"{stack.base_url}/console/events", timeout=10).text
    answer = session.post(
        f"{stack.base_url}/console/events/{event_id}/redeliver",
        data={"csrf": csrf_of(page)},
        timeout=10,
    )
    assert answer.url.startswith(f"{stack.base_url}/console/events?message=")
    assert f"event {event_id} (payout.completed, ref-given-up) is due" in answer.text
    after = state_of(stack, event_id)
    assert after.state == "pending" and after.next_attempt_at <= utcnow()


def test_redeliver_of_an_unknown_event_says_so(make_stack):
    stack = event_stack(make_stack, "")
    session = signed_in(stack)
    page = session.get(f"{stack.base_url}/console/events", timeout=10).text
    answer = session.post(
        f"{stack.base_url}/console/events/no-such-event/redeliver",
        data={"csrf": csrf_of(page)},
        timeout=10,
    )
    assert '<p class="error">no event no-such-event</p>' in answer.text


def test_redeliver_without_its_csrf_token_is_refused(make_stack):
    stack = event_stack(make_stack, "")
    event_id = emitted(stack, "ref-kept")
    with stack.svc.engine.begin() as conn:
        conn.execute(events.update().values(state="failed"))
    answer = signed_in(stack).post(
        f"{stack.base_url}/console/events/{event_id}/redeliver",
        data={"csrf": "0" * 32},
        timeout=10,
    )
    assert answer.status_code == 403
    assert state_of(stack, event_id).state == "failed"
    anonymous = requests.post(
        f"{stack.base_url}/console/events/{event_id}/redeliver", data={}, timeout=10
    )
    assert anonymous.url.endswith("/console/login")
