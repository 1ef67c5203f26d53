"""C2B paybill and till payments: validation and confirmation through the journal-first intake,
stored once per receipt; on SQLite and MariaDB, over real HTTP."""

import json
from datetime import datetime
from decimal import Decimal

import pytest
import requests

import service
from mpesa_service.callbacks import replay_journal
from mpesa_service.storage import c2b_payments, events
from tests.test_console import signed_in
from tests.test_operator import KEYS

VALIDATION, CONFIRMATION = "/hooks/c2b/validation", "/hooks/c2b/confirmation"
RULES = {"C2B_ACCOUNT_PATTERN": "BK[0-9]{4}", "C2B_MIN_AMOUNT": "10", "C2B_MAX_AMOUNT": "5000"}
WITH_EVENTS = {"EVENTS_URL": "http://127.0.0.1:9/events", "EVENTS_SECRET": "s3cret"}


def c2b_body(trans_id="TKR1234ABC", amount="1500.00", reference="BK1234", **extra) -> dict:
    """A confirmation as REFERENCE 14 shows it (masked MSISDN, Nairobi time)."""
    return {
        "TransactionType": "Pay Bill",
        "TransID": trans_id,
        "TransTime": "20261207093015",
        "TransAmount": amount,
        "BusinessShortCode": "174379",
        "BillRefNumber": reference,
        "InvoiceNumber": "",
        "OrgAccountBalance": "",
        "ThirdPartyTransID": "",
        "MSISDN": "2547 ***** 126",
        "FirstName": "Wanjiru",
        "MiddleName": "",
        "LastName": "Kamau",
        **extra,
    }


def stored(stack, trans_id=None) -> list:
    condition = c2b_payments.c.trans_id == trans_id if trans_id else c2b_payments.c.id.isnot(None)
    return stack.rows(c2b_payments, condition)


@pytest.fixture
def c2b_stack(make_stack):
    return make_stack({**RULES, **WITH_EVENTS})


# --- confirmation ------------------------------------------------------------------------------


def test_a_confirmation_is_stored_with_its_details_as_sent(c2b_stack):
    answer = c2b_stack.hook(CONFIRMATION, c2b_body())

    assert (answer.status_code, answer.json()["ResultCode"]) == (200, 0)
    (row,) = stored(c2b_stack, "TKR1234ABC")
    assert row.amount == Decimal("1500.00")
    assert row.msisdn == "2547 ***** 126"  # as sent: never read as a phone
    assert (row.kind, row.business_short_code, row.bill_ref_number) == (
        "paybill",
        "174379",
        "BK1234",
    )
    assert row.trans_time == datetime(2026, 12, 7, 6, 30, 15)  # 09:30:15 in Nairobi
    assert (row.source, row.outcome, row.first_name, row.last_name) == (
        "confirmation",
        "recorded",
        "Wanjiru",
        "Kamau",
    )
    assert json.loads(row.raw_response) == c2b_body()


def test_a_till_payment_with_cents_keeps_its_cents(c2b_stack):
    c2b_stack.hook(CONFIRMATION, c2b_body("TKT0000001", "99.50", TransactionType="Buy Goods"))
    (row,) = stored(c2b_stack, "TKT0000001")
    assert (row.kind, row.amount) == ("till", Decimal("99.50"))


def test_a_confirmation_sent_twice_is_stored_once_with_one_event(c2b_stack):
    for _ in range(2):
        assert c2b_stack.hook(CONFIRMATION, c2b_body()).status_code == 200

    assert len(stored(c2b_stack, "TKR1234ABC")) == 1
    received = c2b_stack.rows(events, events.c.type == "c2b.received")
    assert [event.subject for event in received] == ["TKR1234ABC"]
    assert len([e for e in c2b_stack.journal() if e["kind"] == "c2b_confirmation"]) == 2


def test_a_confirmation_replayed_from_the_journal_is_applied_once(c2b_stack):
    c2b_stack.hook(CONFIRMATION, c2b_body())
    assert replay_journal(c2b_stack.svc) == 0
    assert len(stored(c2b_stack)) == 1


def test_a_malformed_confirmation_is_journaled_and_stored_raw(c2b_stack):
    not_json = b'{"TransID": "TKR9", "TransAmount": '
    answer = c2b_stack.hook(CONFIRMATION, data=not_json)
    no_amount = c2b_stack.hook(CONFIRMATION, c2b_body("TKR8", amount="ten"))

    assert answer.status_code == 400 and no_amount.status_code == 200
    rows = stored(c2b_stack)
    assert sorted(row.raw_response for row in rows) == sorted(
        [not_json.decode(), json.dumps(c2b_body("TKR8", amount="ten"))]
    )
    assert {(row.trans_id, row.outcome) for row in rows} == {(None, "malformed")}
    flags = c2b_stack.rows(
        service.payment_flags, service.payment_flags.c.subject_type == "c2b_payment"
    )
    assert sorted(flag.flag for flag in flags) == ["malformed_callback"] * 2
    journaled = [e for e in c2b_stack.journal() if e["kind"] == "c2b_confirmation"]
    assert [e["body"] for e in journaled] == [
        not_json.decode(),
        json.dumps(c2b_body("TKR8", amount="ten")),
    ]


def test_a_confirmation_with_the_wrong_token_is_refused_and_stores_nothing(c2b_stack):
    answer = c2b_stack.hook(CONFIRMATION, c2b_body(), token="not-the-token")
    assert answer.status_code == 404
    assert stored(c2b_stack) == []
    assert [e["state"] for e in c2b_stack.journal()] == ["rejected"]


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({}, "0"),
        ({"BillRefNumber": "bk1234"}, "C2B00012"),
        ({"BillRefNumber": "BK12345"}, "C2B00012"),
        ({"TransAmount": "9.00"}, "C2B00013"),
        ({"TransAmount": "5000.01"}, "C2B00013"),
        ({"TransAmount": "lots"}, "C2B00013"),
        ({"BusinessShortCode": "999999"}, "C2B00015"),
    ],
)
def test_validation_accepts_or_rejects_by_the_rules_in_settings(c2b_stack, change, code):
    answer = c2b_stack.hook(VALIDATION, {**c2b_body(), **change})
    assert answer.status_code == 200
    assert answer.json()["ResultCode"] == code
    assert stored(c2b_stack) == []  # a validation moves no money and records no payment
    assert [e["kind"] for e in c2b_stack.journal()] == ["c2b_validation"]


def test_validation_of_a_body_that_is_not_json_is_rejected_and_journaled(c2b_stack):
    answer = c2b_stack.hook(VALIDATION, data=b"<xml/>")
    assert (answer.status_code, answer.json()["ResultCode"]) == (200, "C2B00016")
    assert [e["body"] for e in c2b_stack.journal()] == ["<xml/>"]


def test_validation_with_the_wrong_token_is_refused(c2b_stack):
    answer = c2b_stack.hook(VALIDATION, c2b_body(), token="nope")
    assert answer.status_code == 404


# --- reading -----------------------------------------------------------------------------------


def test_c2b_payments_are_listed_by_bill_reference_and_time(c2b_stack):
    c2b_stack.hook(CONFIRMATION, c2b_body("TKA0000001", reference="BK0001"))
    c2b_stack.hook(CONFIRMATION, c2b_body("TKA0000002", reference="BK0002"))

    every = c2b_stack.get("/c2b/payments").json()["payments"]
    one = c2b_stack.get("/c2b/payments", params={"bill_ref": "BK0002"}).json()["payments"]
    later = c2b_stack.get("/c2b/payments", params={"since": "2999-01-01"}).json()["payments"]
    bad = c2b_stack.get("/c2b/payments", params={"since": "yesterday"})

    assert sorted(p["trans_id"] for p in every) == ["TKA0000001", "TKA0000002"]
    assert [(p["trans_id"], p["amount"], p["source"]) for p in one] == [
        ("TKA0000002", 1500, "confirmation")
    ]
    assert later == []
    assert (bad.status_code, bad.json()["field"]) == (400, "since")


def test_the_console_lists_c2b_payments_with_their_flags(make_stack):
    stack = make_stack({"API_KEYS": KEYS})
    stack.hook(CONFIRMATION, c2b_body())
    stack.hook(CONFIRMATION, c2b_body("TKR2", amount="?"))
    assert requests.get(f"{stack.base_url}/console/c2b", timeout=10).url.endswith("/login")

    page = signed_in(stack).get(f"{stack.base_url}/console/c2b", timeout=10).text

    assert "TKR1234ABC" in page and "2547 ***** 126" in page and "1,500.00" in page
    assert "(none: malformed)" in page and "malformed_callback" in page
