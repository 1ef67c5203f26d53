"""`ALERT` log lines name what a person looks up: a payout by its reference_id and a collection
by its CheckoutRequestID, each with the internal id after it (SQLite and MariaDB)."""

import logging
import uuid

import service
from mpesa_service.flags import add_flag
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
