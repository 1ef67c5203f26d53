"""C2B paybill and till payments: validation and confirmation through the journal-first intake,
stored once per receipt; on SQLite and MariaDB, over real HTTP."""

import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

import service
from mpesa_service.c2b import PulledTransaction, store_pulled
from mpesa_service.callbacks import replay_journal
from mpesa_service.entrypoint import pull_c2b_command, register_urls_command
from mpesa_service.flags import subject_name
from mpesa_service.storage import c2b_payments, events
from mpesa_service.throughput.writer import wait_applied
from recon.api import build_report
from recon.rules import NAIROBI, nairobi_day_start_utc
from tests.recon_support import balanced_statement, header_block, write_statement
from tests.service_support import TOKEN, wait_until
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


# --- Register URL and the simulator's customer, end to end -------------------------------------


def registered(stack) -> dict:
    assert register_urls_command(stack.svc) == 0
    (registration,) = stack.sim.c2b_registered()["registrations"]
    return registration


def customer_pays(stack, amount=1500, bill_ref="BK1234", **extra) -> dict:
    answer = requests.post(
        f"{stack.sim_base_url}/simulator/c2b",
        json={"amount": amount, "bill_ref": bill_ref, **extra},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def stored_once(stack, paid: dict):
    """The rows of the receipt `paid` (the simulator's answer) names, once every confirmation
    the simulator sent for it has been answered and applied."""

    def delivered():
        sent = [
            c
            for c in stack.sim.callbacks()
            if c["purpose"] == "c2b_confirmation" and c["body"]["TransID"] == paid["TransID"]
        ]
        return len(sent) == paid["confirmations"] and all(c["status"] for c in sent)

    wait_until(delivered)
    assert wait_applied(stack.svc)
    return stored(stack, paid["TransID"])


def test_register_urls_registers_this_deployments_token_urls(c2b_stack, capsys):
    registration = registered(c2b_stack)

    base = c2b_stack.base_url
    assert registration == {
        "shortcode": "174379",
        "response_type": "Completed",
        "confirmation_url": f"{base}/hooks/c2b/confirmation/{TOKEN}",
        "validation_url": f"{base}/hooks/c2b/validation/{TOKEN}",
    }
    said = capsys.readouterr().out
    assert "registered C2B URLs for shortcode 174379" in said and TOKEN not in said


@pytest.mark.parametrize("base", ["https://pay.example.com/MPesa", "https://sqlpay.example.com"])
def test_register_urls_refuses_a_forbidden_keyword_before_calling_daraja(c2b_stack, capsys, base):
    c2b_stack.svc.public_base_url = base
    assert register_urls_command(c2b_stack.svc) == 1
    said = capsys.readouterr().err
    assert "not registered, nothing sent to Daraja" in said and "which Daraja rejects" in said
    assert c2b_stack.sim.requests("/mpesa/c2b/v1/registerurl") == []
    assert c2b_stack.sim.c2b_registered()["registrations"] == []


def test_register_urls_says_why_daraja_refused(make_stack, capsys):
    stack = make_stack({"C2B_SHORTCODE": "555555"})  # not a shortcode the simulator has
    assert register_urls_command(stack.svc) == 1
    assert "Daraja refused it (400.002.02: Bad Request - Invalid ShortCode)" in (
        capsys.readouterr().err
    )


def test_a_payment_through_the_simulator_is_validated_confirmed_and_stored_once(c2b_stack):
    registered(c2b_stack)
    paid = customer_pays(c2b_stack, scenario="confirmation_twice")

    assert (paid["status"], paid["validation"], paid["confirmations"]) == (
        "completed",
        "accepted",
        2,
    )
    (row,) = stored_once(c2b_stack, paid)
    assert (row.amount, row.bill_ref_number, row.source) == (
        Decimal("1500"),
        "BK1234",
        "confirmation",
    )
    assert row.msisdn == "2547 ***** 149"
    kinds = [e["kind"] for e in c2b_stack.journal()]
    assert kinds.count("c2b_validation") == 1 and kinds.count("c2b_confirmation") == 2
    (ledger,) = c2b_stack.sim.ledger()
    assert (ledger["kind"], ledger["receipt"], ledger["amount"]) == ("c2b", paid["TransID"], 1500)


def test_a_payment_rejected_by_validation_stores_nothing_and_moves_no_money(c2b_stack):
    registered(c2b_stack)
    paid = customer_pays(c2b_stack, bill_ref="not-an-account")

    assert (paid["status"], paid["result_code"], paid["TransID"]) == (
        "rejected",
        "C2B00012",
        None,
    )
    assert wait_applied(c2b_stack.svc)
    assert stored(c2b_stack) == [] and c2b_stack.sim.ledger() == []
    assert [c["purpose"] for c in c2b_stack.sim.callbacks()] == ["c2b_validation"]


@pytest.mark.parametrize(
    ("response_type", "status"), [("Completed", "completed"), ("Cancelled", "cancelled")]
)
def test_a_validation_timeout_does_what_response_type_says(make_stack, response_type, status):
    stack = make_stack({**RULES, "C2B_RESPONSE_TYPE": response_type})
    registered(stack)
    paid = customer_pays(stack, bill_ref="not-an-account", scenario="validation_timeout")

    assert paid["status"] == status
    assert len(stack.sim.ledger()) == (1 if status == "completed" else 0)
    if status == "completed":  # money moved although validation would have refused it
        (row,) = stored_once(stack, paid)
        assert row.bill_ref_number == "not-an-account"


def test_a_dropped_confirmation_is_found_by_pull_transactions_and_not_duplicated(c2b_stack):
    registered(c2b_stack)
    paid = customer_pays(c2b_stack, amount=2750, bill_ref="BK7777", scenario="confirmation_dropped")
    kept = customer_pays(c2b_stack, amount=100, bill_ref="BK1000")
    stored_once(c2b_stack, kept)
    assert stored(c2b_stack, paid["TransID"]) == []

    assert pull_c2b_command(c2b_stack.svc, 2) == 0
    (row,) = stored(c2b_stack, paid["TransID"])
    assert (row.source, row.amount, row.bill_ref_number, row.confirmed_at) == (
        "pull",
        Decimal("2750"),
        "BK7777",
        None,
    )
    assert row.msisdn == "2547 ***** 149"
    flags = c2b_stack.rows(service.payment_flags, service.payment_flags.c.subject_id == row.id)
    assert [flag.flag for flag in flags] == ["confirmation_missed"]
    with c2b_stack.svc.engine.connect() as conn:  # how the alert names it
        named = subject_name(conn, "c2b_payment", row.id)
    assert named == f"c2b_payment {paid['TransID']} (id {row.id})"
    assert len(stored(c2b_stack)) == 2  # the confirmed one is not stored again

    assert pull_c2b_command(c2b_stack.svc, 2) == 0  # a second run stores nothing more
    late = [dict(c2b_body(paid["TransID"], "2750.00", "BK7777"), FirstName="Late")]
    c2b_stack.hook(CONFIRMATION, late[0])
    (filled,) = stored(c2b_stack, paid["TransID"])
    assert (filled.source, filled.first_name, filled.confirmed_at is not None) == (
        "pull",
        "Late",
        True,
    )
    assert len(stored(c2b_stack)) == 2
    received = c2b_stack.rows(events, events.c.type == "c2b.received")
    assert sorted(e.subject for e in received) == sorted([paid["TransID"], kept["TransID"]])


def test_pull_transactions_pages_through_every_transaction(make_stack):
    stack = make_stack(pull_page_size=2)
    for amount in (10, 20, 30, 40, 50):
        customer_pays(stack, amount=amount)  # no URLs registered: money moves, nothing sent
    assert stored(stack) == []

    assert pull_c2b_command(stack.svc, 1) == 0
    assert sorted(row.amount for row in stored(stack)) == [10, 20, 30, 40, 50]
    offsets = [r["body"]["OffSetValue"] for r in stack.sim.requests("/pulltransactions/v1/query")]
    assert offsets == [0, 2, 4, 5]


def test_pull_c2b_refuses_more_hours_than_daraja_keeps(c2b_stack, capsys):
    assert pull_c2b_command(c2b_stack.svc, 49) == 2
    assert "1 to 48 hours" in capsys.readouterr().err


# --- reconciled against the statement ----------------------------------------------------------


def statement_of_today(path, movements) -> str:
    """A balanced org-portal statement of today's Nairobi day holding `movements`."""
    today = datetime.now(NAIROBI).strftime("%d-%m-%Y")
    rows, _ = balanced_statement(movements, header=False)
    paid_in = sum(Decimal(paid or 0) for _, _, paid, _, _ in movements)
    opening = Decimal("100000.00")
    header = header_block(
        opening=f"{opening:,.2f}",
        closing=f"{opening + paid_in:,.2f}",
        paid_in=f"{paid_in:,.2f}",
        withdrawn="0.00",
        start=f"{today} 00:00:00",
        end=f"{today} 23:59:59",
    )
    return str(write_statement(path, rows, header))


def test_a_c2b_payment_confirmed_through_the_simulator_reconciles_cleanly(c2b_stack, tmp_path):
    registered(c2b_stack)
    paid = customer_pays(c2b_stack, amount=1500, bill_ref="BK1234")
    (row,) = stored_once(c2b_stack, paid)
    when = row.trans_time.replace(tzinfo=UTC).astimezone(NAIROBI).strftime("%d-%m-%Y %H:%M:%S")
    on_statement = (paid["TransID"], when, "1500.00", None, "Pay Bill Online")
    start = nairobi_day_start_utc()

    clean = build_report(
        c2b_stack.svc.settings["DATABASE_URL"],
        since=start,
        until=start + timedelta(days=1),
        statement_path=statement_of_today(tmp_path / "clean.csv", [on_statement]),
    )
    lacking = build_report(
        c2b_stack.svc.settings["DATABASE_URL"],
        since=start,
        until=start + timedelta(days=1),
        statement_path=statement_of_today(tmp_path / "lacking.csv", []),
    )

    assert clean.findings.frame.empty, clean.render()
    assert clean.findings.traffic["C2B payment"] == 1
    assert list(lacking.findings.frame["check"]) == ["c2b_missing_from_statement"]


def test_a_late_confirmation_of_another_amount_than_pulled_is_flagged(c2b_stack):
    pulled = PulledTransaction.from_item(
        {"transactionId": "TKP0000001", "trxDate": "2026-12-07T06:30:15Z", "amount": "500.00"}
    )
    with c2b_stack.svc.engine.begin() as conn:
        assert store_pulled(conn, pulled) == 1
        assert store_pulled(conn, pulled) == 0  # a second pull stores nothing

    c2b_stack.hook(CONFIRMATION, c2b_body("TKP0000001", "450.00"))

    (row,) = stored(c2b_stack, "TKP0000001")
    assert (row.amount, row.source, row.first_name) == (Decimal("500.00"), "pull", "Wanjiru")
    flags = c2b_stack.rows(service.payment_flags, service.payment_flags.c.subject_id == row.id)
    details = {flag.flag: flag.detail for flag in flags}
    assert sorted(details) == ["amount_mismatch", "confirmation_missed"]
    assert details["amount_mismatch"] == (
        "C2B TKP0000001: Pull Transactions 500.00 != confirmation 450.00 (50.00 short)"
    )


def test_a_till_payment_through_the_simulator_is_validated_against_the_stk_till(make_stack):
    stack = make_stack({**RULES, "MPESA_STK_PARTY_B": "600100"})  # the simulator's till
    registered(stack)  # the head office's URLs; its till's payments go to them
    paid = customer_pays(stack, amount=250, bill_ref="BK0042", kind="till")

    assert (paid["status"], paid["validation"]) == ("completed", "accepted")
    (row,) = stored_once(stack, paid)
    assert (row.kind, row.transaction_type, row.business_short_code) == (
        "till",
        "Buy Goods",
        "600100",
    )


@contextlib.contextmanager
def database_held(stack):
    """Hold the database's write lock (SQLite) or the journal table (MariaDB) so that nothing
    can be applied until the block ends."""
    url = stack.svc.engine.url
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    with stack.svc.engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLES callback_journal WRITE")
        try:
            yield
        finally:
            holder.exec_driver_sql("UNLOCK TABLES")


def test_validation_answers_at_once_while_the_database_is_busy(c2b_stack):
    url = f"{c2b_stack.base_url}{VALIDATION}/{TOKEN}"
    with database_held(c2b_stack):
        started = time.monotonic()
        accepted = requests.post(url, json=c2b_body(), timeout=8)
        rejected = requests.post(url, json=c2b_body(reference="nope"), timeout=8)
        took = time.monotonic() - started

    assert took < 3, f"validation took {took:.1f} s while the database was held"
    assert [accepted.json()["ResultCode"], rejected.json()["ResultCode"]] == ["0", "C2B00012"]
    assert wait_applied(c2b_stack.svc)
    assert [e["kind"] for e in c2b_stack.journal()] == ["c2b_validation"] * 2
