"""`ALERT` log lines name what a person looks up: a payout by its reference_id and a collection
by its CheckoutRequestID, each with the internal id after it (SQLite and MariaDB)."""

import logging
import uuid
from datetime import timedelta

import pytest

import service
from mpesa_service.events import emit
from mpesa_service.flags import add_flag
from mpesa_service.jobs import send_alerts
from mpesa_service.storage import events, utcnow
from tests.service_support import wait_until

UNDERPAYING_PHONE = "254744000001"  # the simulator pays one shilling less than asked


def alert_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT ")]


def test_a_payout_alert_names_the_payout_by_its_reference(stack, caplog):
    caplog.set_level(logging.WARNING, logger="mpesa")
    body = {"user_id": "trainer-1", "phone": UNDERPAYING_PHONE, "amount": 1000}
    body["reference_id"] = "ref-123"
    stack.post("/payouts", body, headers={"Idempotency-Key": str(uuid.uuid4())})
    wait_until(lambda: alert_lines(caplog))
    (row,) = stack.rows(service.b2c_payments, service.b2c_payments.c.reference_id == "ref-123")
    assert alert_lines(caplog) == [
        f"ALERT amount_mismatch on payout ref-123 (id {row.id}): amount mismatch: "
        "requested 1,000.00 != paid 999.00 (1.00 short)"
    ]


def test_a_collection_alert_names_the_collection_by_its_checkout_request_id(stack, caplog):
    caplog.set_level(logging.WARNING, logger="mpesa")
    body = {"phone": UNDERPAYING_PHONE, "amount": 150, "account_reference": "INV7"}
    started = stack.post("/payments/mpesa/stk-initiate", body).json()
    wait_until(lambda: alert_lines(caplog))
    checkout = started["checkout_request_id"]
    assert alert_lines(caplog) == [
        f"ALERT underpaid on payment {checkout} (id {started['payment_id']}): "
        "requested 150.00 != paid 149.00 (1.00 short)"
    ]


def test_an_alert_about_something_without_a_reference_names_it_by_its_id(engine, caplog):
    caplog.set_level(logging.WARNING, logger="mpesa")
    with engine.begin() as conn:
        conn.execute(
            service.b2c_payments.insert().values(
                id="old-1", amount=100, phone_number="254712345678", status="pending"
            )
        )
        add_flag(conn, "payout", "old-1", "review", "an old row")
        add_flag(conn, "account", "600000", "balance_low", "low")
    assert alert_lines(caplog) == [
        "ALERT review on payout old-1: an old row",
        "ALERT balance_low on account 600000: low",
    ]


# --- the outbound events' backlog -----------------------------------------------------------


def backlog_flags(stack) -> list:
    return [f for f in stack.rows(service.payment_flags) if f.flag == "events_backlog"]


def age_events(stack, minutes: int) -> None:
    with stack.svc.engine.begin() as conn:
        conn.execute(events.update().values(created_at=utcnow() - timedelta(minutes=minutes)))


def test_an_old_undelivered_event_raises_one_backlog_alert_closed_when_it_clears(
    make_stack, caplog
):
    stack = make_stack(
        {"EVENTS_URL": "http://127.0.0.1:9/events", "EVENTS_SECRET": "s", "ALERT_EMAIL_TO": ""}
    )
    with stack.svc.engine.begin() as conn:
        for number in range(3):
            emit(conn, "payout.completed", f"ref-{number}", {"reference_id": f"ref-{number}"})
    send_alerts(stack.svc)
    assert backlog_flags(stack) == []  # not old enough yet
    age_events(stack, 61)
    with caplog.at_level(logging.WARNING):
        send_alerts(stack.svc)
        send_alerts(stack.svc)  # told once, not every minute
    (flag,) = backlog_flags(stack)
    assert (flag.subject_type, flag.subject_id, flag.resolved_at) == ("events", "outbox", None)
    assert flag.detail.startswith("3 event(s) waiting for delivery to EVENTS_URL, the oldest since")
    assert " EAT: more than EVENTS_ALERT_AFTER_MINUTES (60)" in flag.detail
    assert [line for line in alert_lines(caplog) if "events_backlog" in line] == [
        f"ALERT events_backlog on events outbox: {flag.detail}"
    ]
    with stack.svc.engine.begin() as conn:
        conn.execute(events.update().values(state="delivered"))
    send_alerts(stack.svc)
    (closed,) = backlog_flags(stack)
    assert closed.resolved_at is not None


@pytest.mark.parametrize(
    "settings",
    [
        {"EVENTS_URL": "", "EVENTS_SECRET": ""},  # events are off: none is written, none late
        {
            "EVENTS_URL": "http://127.0.0.1:9/e",
            "EVENTS_SECRET": "s",
            "EVENTS_ALERT_AFTER_MINUTES": "0",
        },
    ],
)
def test_no_backlog_alert_without_a_url_or_with_the_alert_off(make_stack, settings):
    stack = make_stack(settings)
    with stack.svc.engine.begin() as conn:
        emit(conn, "payout.completed", "ref-old", {"reference_id": "ref-old"})
    age_events(stack, 24 * 60)
    send_alerts(stack.svc)
    assert backlog_flags(stack) == []
