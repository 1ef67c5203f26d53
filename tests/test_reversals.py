"""Reversals of collections (refunds) end to end, over real HTTP against the simulator, on SQLite
and MariaDB: one reversal per collection whatever the callers do, an unknown outcome resolved by
asking, a result applied once."""

import json
import re
import threading
from datetime import datetime

import pytest
import requests

import service
from mpesa_service.entrypoint import main
from mpesa_service.reversals import REVERSAL_STATES, resolve_reversals, transition
from mpesa_service.storage import (
    c2b_payments,
    collection_audit,
    events,
    payment_flags,
    reversal_callbacks,
    reversals,
    utcnow,
)
from recon.checks import Options, check_reversal, check_unrecorded_statement_entry
from recon.load import load_frames
from recon.rules import NAIROBI
from recon.statement import parse_statement
from tests.recon_support import entry, write_statement
from tests.service_support import API_KEY, TOKEN, payment_completed, wait_until
from tests.sim_support import credential_for, fetch_token
from tests.test_c2b import customer_pays, registered, stored_once

OPERATOR = "ops-secret-7"
KEYS = {"API_KEYS": f"{API_KEY},ops:operator+read:{OPERATOR}"}
EVENTS_ON = {"EVENTS_URL": "http://127.0.0.1:9/events", "EVENTS_SECRET": "s" * 32}
REVERSAL_PATH = "/mpesa/reversal/v1/request"


@pytest.fixture
def ops(make_stack):
    return make_stack({**KEYS, **EVENTS_ON})


def paid_collection(stack, amount=150) -> str:
    body = {
        "phone": "0712345678",
        "amount": amount,
        "account_reference": "INV10023",
        "description": "Booking",
    }
    started = stack.post("/payments/mpesa/stk-initiate", body).json()
    return payment_completed(stack, started["payment_id"]).id


def reverse(stack, payment_id, reason="booking cancelled", **extra):
    return stack.post(
        f"/payments/{payment_id}/reverse",
        {"reason": reason, **extra},
        headers={"Authorization": f"Bearer {OPERATOR}"},
    )


def payment(stack, payment_id):
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    return row


def reversal_rows(stack, payment_id):
    return stack.rows(reversals, reversals.c.payment_id == payment_id)


def reversed_in_simulator(stack):
    return [entry for entry in stack.sim.ledger() if entry["kind"] == "reversal"]


def test_a_paid_collection_is_reversed_once_with_its_receipt_audit_and_event(ops):
    payment_id = paid_collection(ops)
    receipt = payment(ops, payment_id).mpesa_receipt

    answer = reverse(ops, payment_id)

    assert answer.status_code == 201, answer.text
    sent = ops.sim_requests(REVERSAL_PATH)
    assert len(sent) == 1
    body = sent[0]["body"]
    assert body["CommandID"] == "TransactionReversal"
    assert body["TransactionID"] == receipt
    assert body["Amount"] == 150
    assert body["RecieverIdentifierType"] == "11"
    assert body["ResultURL"].startswith(f"{ops.base_url}/hooks/reversal/result/{TOKEN}/")
    reversed_row = wait_until(lambda: payment(ops, payment_id).status == "reversed")
    assert reversed_row
    (row,) = reversal_rows(ops, payment_id)
    assert row.status == "completed"
    (ledger,) = reversed_in_simulator(ops)
    assert (row.receipt, row.original_receipt) == (ledger["receipt"], receipt)
    assert payment(ops, payment_id).mpesa_receipt == receipt  # never loses its own receipt
    audit = ops.rows(collection_audit, collection_audit.c.payment_id == payment_id)
    assert sorted((a.action, a.actor, a.status_after) for a in audit) == [
        ("reversal_requested", "ops", "completed"),
        ("reversed", "system", "reversed"),
    ]
    (event,) = ops.rows(events, events.c.type == "payment.reversed")
    data = json.loads(event.body)["data"]
    assert (data["status"], data["reversal_receipt"]) == ("reversed", row.receipt)
    again = reverse(ops, payment_id)
    assert again.status_code == 200
    assert again.json()["receipt"] == row.receipt
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1


def test_concurrent_requests_send_one_reversal(ops):
    payment_id = paid_collection(ops)
    barrier = threading.Barrier(10)
    answers = []

    def ask():
        barrier.wait()
        answers.append(reverse(ops, payment_id))

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status_code for a in answers) == [200] * 9 + [201]
    assert len({a.json()["reversal_id"] for a in answers}) == 1
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1
    assert len(reversal_rows(ops, payment_id)) == 1
    wait_until(lambda: payment(ops, payment_id).status == "reversed")
    assert len(reversed_in_simulator(ops)) == 1


def test_a_lost_answer_and_result_are_resolved_by_transaction_status_never_resent(make_stack):
    stack = make_stack({**KEYS, "RESOLVE_UNKNOWN_AFTER_SECONDS": "0"}, hold_callbacks=True)
    payment_id = paid_collection_held(stack)
    stack.sim.arm("accepted_no_response", path=REVERSAL_PATH)

    answer = reverse(stack, payment_id)

    assert answer.status_code == 201
    assert answer.json()["status"] == "unknown"
    assert answer.json()["originator_conversation_id"] is None
    resolve_reversals(stack.svc)
    (query,) = stack.sim_requests("/mpesa/transactionstatus/v1/query")
    assert query["body"]["TransactionID"] == payment(stack, payment_id).mpesa_receipt
    deliver_held(stack, "/hooks/reversal/status/")
    (row,) = reversal_rows(stack, payment_id)
    assert row.status == "completed"
    (ledger,) = reversed_in_simulator(stack)
    assert row.receipt == ledger["receipt"]
    assert payment(stack, payment_id).status == "reversed"
    assert len(stack.sim_requests(REVERSAL_PATH)) == 1


def test_a_result_delivered_twice_is_applied_once(make_stack):
    stack = make_stack({**KEYS, **EVENTS_ON}, hold_callbacks=True)
    payment_id = paid_collection_held(stack)

    assert reverse(stack, payment_id).json()["status"] == "pending"
    deliver_held(stack, "/hooks/reversal/result/")
    deliver_held(stack, "/hooks/reversal/result/")

    (row,) = reversal_rows(stack, payment_id)
    assert (row.status, row.result_code) == ("completed", "0")
    outcomes = [c.outcome for c in stack.rows(reversal_callbacks)]
    assert sorted(outcomes) == ["applied", "duplicate"]
    assert len(stack.rows(events, events.c.type == "payment.reversed")) == 1
    audit = stack.rows(collection_audit, collection_audit.c.action == "reversed")
    assert len(audit) == 1


def test_an_invalid_original_fails_with_its_meaning_and_may_be_retried_explicitly(ops):
    payment_id = paid_collection(ops)
    ops.sim.reset()  # the simulator forgets the collection: its receipt is unknown there

    reverse(ops, payment_id)
    failed = wait_until(lambda: reversal_rows(ops, payment_id)[0].status == "failed")
    assert failed
    (row,) = reversal_rows(ops, payment_id)
    assert row.result_code == "R000002"
    assert payment(ops, payment_id).status == "completed"
    refused = reverse(ops, payment_id)
    assert refused.status_code == 409
    assert "R000002" in refused.json()["error"] and "retry" in refused.json()["error"]
    assert refused.json()["reversal"]["result_meaning"] == (
        "the original transaction id (receipt) is invalid"
    )
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1

    retried = reverse(ops, payment_id, retry=True)

    assert retried.status_code == 201
    assert retried.json()["attempt"] == 2
    assert len(ops.sim_requests(REVERSAL_PATH)) == 2


def test_a_receipt_reversed_already_is_not_reversed_again(ops):
    payment_id = paid_collection(ops)
    reverse(ops, payment_id)
    wait_until(lambda: payment(ops, payment_id).status == "reversed")

    again = reverse(ops, payment_id, retry=True)

    assert again.status_code == 409
    assert "completed" in again.json()["error"]
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1


def test_a_receipt_reversed_elsewhere_is_found_by_asking_after_r000001(make_stack):
    """R000001 says the receipt was reversed already, not by whom: the reversal is unknown
    until a status query about the receipt finds the reversal and its receipt."""
    stack = make_stack({**KEYS, "RESOLVE_UNKNOWN_AFTER_SECONDS": "0"}, hold_callbacks=True)
    payment_id = paid_collection_held(stack)
    receipt = payment(stack, payment_id).mpesa_receipt
    portal = reverse_in_simulator(stack, receipt)  # as an operator might in the org portal

    assert reverse(stack, payment_id).json()["status"] == "pending"
    deliver_held(stack, "/hooks/reversal/result/")
    (row,) = reversal_rows(stack, payment_id)
    assert (row.status, row.result_code) == ("unknown", "R000001")
    resolve_reversals(stack.svc)
    (query,) = stack.sim_requests("/mpesa/transactionstatus/v1/query")
    assert query["body"]["TransactionID"] == receipt
    deliver_held(stack, "/hooks/reversal/status/")

    (row,) = reversal_rows(stack, payment_id)
    assert (row.status, row.receipt) == ("completed", portal)
    assert payment(stack, payment_id).status == "reversed"
    assert len(reversed_in_simulator(stack)) == 1


def test_a_late_success_after_a_failure_completes_it_and_is_flagged(make_stack):
    stack = make_stack(KEYS, hold_callbacks=True)
    payment_id = paid_collection_held(stack)
    reverse(stack, payment_id)
    (row,) = reversal_rows(stack, payment_id)
    with stack.svc.engine.begin() as conn:  # believed failed, as a misread answer would make it
        assert transition(conn, row.id, "failed", result_code="2001", result_desc="x")

    deliver_held(stack, "/hooks/reversal/result/")

    (row,) = reversal_rows(stack, payment_id)
    assert row.status == "completed"
    assert payment(stack, payment_id).status == "reversed"
    flags = stack.rows(payment_flags, payment_flags.c.subject_id == payment_id)
    assert [f.flag for f in flags] == ["status_conflict"]


@pytest.mark.parametrize("phone", ["254700001032", "254722000001"])
def test_an_unpaid_collection_cannot_be_reversed(ops, phone):
    body = {"phone": phone, "amount": 100, "account_reference": "INV1", "description": "x"}
    payment_id = ops.post("/payments/mpesa/stk-initiate", body).json()["payment_id"]
    if phone == "254700001032":
        wait_until(lambda: payment(ops, payment_id).status == "failed")
    status = payment(ops, payment_id).status

    refused = reverse(ops, payment_id)

    assert refused.status_code == 409
    assert f"is {status}" in refused.json()["error"]
    assert ops.sim_requests(REVERSAL_PATH) == []
    assert reversal_rows(ops, payment_id) == []


def test_a_payout_cannot_be_reversed_and_the_api_says_why(ops):
    created = ops.post(
        "/payouts",
        {"user_id": "u1", "phone": "0712345678", "amount": 500},
        headers={"Idempotency-Key": "refund-me-1"},
    ).json()

    refused = reverse(ops, created["reference_id"])

    assert refused.status_code == 409
    assert "cannot be reversed by API" in refused.json()["error"]
    assert "organisation portal" in refused.json()["error"]
    assert ops.sim_requests(REVERSAL_PATH) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "reason"), ({"reason": "  "}, "reason"), ({"reason": "x", "retry": 1}, "retry")],
)
def test_a_bad_request_is_400_naming_the_field(ops, body, field):
    payment_id = paid_collection(ops)
    answer = ops.post(
        f"/payments/{payment_id}/reverse", body, headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == field


def test_only_an_operator_may_reverse(ops):
    payment_id = paid_collection(ops)
    answer = ops.post(f"/payments/{payment_id}/reverse", {"reason": "refund"})
    assert answer.status_code == 403
    assert (
        requests.post(f"{ops.base_url}/payments/{payment_id}/reverse", timeout=10).status_code
        == 401
    )


# --- C2B collections ---------------------------------------------------------------------------


def c2b_paid(stack, amount=1500) -> str:
    """A C2B payment made through the simulator's customer and confirmed: its row's id."""
    registered(stack)
    paid = customer_pays(stack, amount=amount)
    (row,) = stored_once(stack, paid)
    return row.id


def c2b_row(stack, payment_id):
    (row,) = stack.rows(c2b_payments, c2b_payments.c.id == payment_id)
    return row


def test_a_c2b_payment_is_reversed_once_by_the_same_route(ops):
    payment_id = c2b_paid(ops)
    receipt = c2b_row(ops, payment_id).trans_id

    answers = [reverse(ops, payment_id), reverse(ops, payment_id)]

    assert [a.status_code for a in answers] == [201, 200]
    assert answers[0].json()["payment_kind"] == "c2b"
    (sent,) = ops.sim_requests(REVERSAL_PATH)
    assert (sent["body"]["TransactionID"], sent["body"]["Amount"]) == (receipt, 1500)
    assert sent["body"]["ReceiverParty"] == c2b_row(ops, payment_id).business_short_code
    wait_until(lambda: c2b_row(ops, payment_id).reversed_at is not None)
    (row,) = reversal_rows(ops, payment_id)
    assert (row.status, row.payment_kind) == ("completed", "c2b")
    assert c2b_row(ops, payment_id).reversal_receipt == row.receipt
    (event,) = ops.rows(events, events.c.type == "payment.reversed")
    assert json.loads(event.body)["data"]["reversal_receipt"] == row.receipt
    audit = ops.rows(collection_audit, collection_audit.c.payment_id == payment_id)
    assert sorted((a.payment_kind, a.action) for a in audit) == [
        ("c2b", "reversal_requested"),
        ("c2b", "reversed"),
    ]
    refused = reverse(ops, payment_id, retry=True)
    assert refused.status_code == 409
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1


def test_the_console_reverses_a_c2b_payment_from_its_page(ops):
    payment_id = c2b_paid(ops)
    session = console_session(ops)
    listing = session.get(f"{ops.base_url}/console/c2b", timeout=10).text
    assert f'href="/console/payments/{payment_id}"' in listing
    page = session.get(f"{ops.base_url}/console/payments/{payment_id}", timeout=10).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)

    session.post(
        f"{ops.base_url}/console/payments/{payment_id}/reverse",
        data={"reason": "paid the wrong paybill", "csrf": csrf},
        timeout=10,
    )

    wait_until(lambda: c2b_row(ops, payment_id).reversed_at is not None)
    page = session.get(f"{ops.base_url}/console/payments/{payment_id}", timeout=10).text
    assert "C2B payment" in page and 'id="reverse"' not in page
    assert c2b_row(ops, payment_id).reversal_receipt in page
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1


def test_a_malformed_c2b_confirmation_cannot_be_reversed(ops):
    ops.hook("/hooks/c2b/confirmation", {"TransID": "", "TransAmount": "x"})
    (row,) = ops.rows(c2b_payments)

    refused = reverse(ops, row.id)

    assert refused.status_code == 409
    assert "is malformed" in refused.json()["error"]
    assert ops.sim_requests(REVERSAL_PATH) == []


# --- reconciliation ----------------------------------------------------------------------------


def test_recon_matches_a_reversed_collection_to_its_statement_reversal_row(ops, tmp_path):
    payment_id = paid_collection(ops)
    reverse(ops, payment_id)
    wait_until(lambda: payment(ops, payment_id).status == "reversed")
    collected, refunded = ops.sim.ledger()
    when = datetime.now(NAIROBI).strftime("%d-%m-%Y %H:%M:%S")
    back = entry(refunded["receipt"], when, withdrawn="-150.00", reason="Reversal")
    rows = [
        entry(collected["receipt"], when, paid_in="150.00", reason="Pay Utility"),
        {**back, "Linked Transaction ID": collected["receipt"]},
        entry("TKX0000001", when, withdrawn="-150.00", reason="Reversal"),  # not ours
    ]
    statement = parse_statement(write_statement(tmp_path / "statement.csv", rows))

    frames = load_frames(ops.svc.settings["DATABASE_URL"], statement=statement)

    (row,) = frames.stk[frames.stk["id"] == payment_id].itertuples()
    assert row.reversal_receipt == refunded["receipt"]
    options = Options()
    assert list(check_reversal(frames, options=options)["transaction_id"]) == ["TKX0000001"]
    assert check_unrecorded_statement_entry(frames, options=options).empty


# --- the command line and the console --------------------------------------------------------


def test_the_command_line_reverses_a_collection_once(ops, monkeypatch, capsys):
    payment_id = paid_collection(ops)
    settings = ops.svc.settings
    for name in ("DATABASE_URL", "CALLBACK_TOKEN", "CALLBACK_JOURNAL_PATH", "API_KEYS"):
        monkeypatch.setenv(name, settings[name])
    monkeypatch.setenv("MPESA_BASE_URL", ops.sim_base_url)
    monkeypatch.setenv("PUBLIC_BASE_URL", ops.base_url)

    assert main(["reverse", payment_id, "--reason", "booking cancelled", "--actor", "cli:ann"]) == 0
    assert main(["reverse", payment_id, "--reason", "booking cancelled"]) == 0

    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith(f"reversal of {payment_id} sent: pending (attempt 1")
    assert said[1].startswith(f"reversal of {payment_id} already asked for")
    assert len(ops.sim_requests(REVERSAL_PATH)) == 1
    wait_until(lambda: payment(ops, payment_id).status == "reversed")
    (row,) = reversal_rows(ops, payment_id)
    assert row.requested_by == "cli:ann"
    assert main(["reverse", payment_id]) == 2  # no reason


def console_session(stack):
    session = requests.Session()
    session.post(f"{stack.base_url}/console/login", data={"key": OPERATOR}, timeout=10)
    return session


def test_the_console_reverses_a_collection_with_a_reason_and_its_csrf_token(ops):
    payment_id = paid_collection(ops)
    session = console_session(ops)
    page = session.get(f"{ops.base_url}/console/payments/{payment_id}", timeout=10).text
    assert 'id="reverse"' in page
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    action = f"{ops.base_url}/console/payments/{payment_id}/reverse"

    forged = session.post(action, data={"reason": "refund", "csrf": "0" * 64}, timeout=10)
    assert forged.status_code == 403
    assert ops.sim_requests(REVERSAL_PATH) == []
    done = session.post(action, data={"reason": "booking cancelled", "csrf": csrf}, timeout=10)

    assert "reversal sent" in done.url.replace("%20", " ")
    wait_until(lambda: payment(ops, payment_id).status == "reversed")
    page = session.get(f"{ops.base_url}/console/payments/{payment_id}", timeout=10).text
    assert 'id="reverse"' not in page
    (row,) = reversal_rows(ops, payment_id)
    assert row.requested_by == "ops (console)"
    assert row.receipt in page and "booking cancelled" in page


def test_the_console_says_a_payout_cannot_be_reversed_by_api(ops):
    created = ops.post(
        "/payouts",
        {"user_id": "u1", "phone": "0712345678", "amount": 500},
        headers={"Idempotency-Key": "refund-me-2"},
    ).json()
    reference = created["reference_id"]
    wait_until(lambda: ops.get(f"/payouts/{reference}").json()["status"] == "completed")

    page = console_session(ops).get(f"{ops.base_url}/console/payouts/{reference}", timeout=10)

    assert "cannot be reversed by API" in page.text
    assert "M-Pesa organisation portal" in page.text


# --- the state machine ------------------------------------------------------------------------

EXPECTED = {
    "submitting": {"pending", "unknown", "failed", "completed"},
    "pending": {"completed", "failed", "unknown", "review"},
    "unknown": {"completed", "failed", "review"},
    "review": {"completed", "failed"},
    "failed": {"completed"},
    "completed": set(),
}


def test_the_state_table_in_the_code_is_the_documented_one():
    assert {state: set(targets) for state, (_, targets) in REVERSAL_STATES.items()} == EXPECTED


@pytest.mark.parametrize("state", list(EXPECTED))
def test_allowed_and_forbidden_transitions_from(engine, state):
    for target in EXPECTED:
        with engine.begin() as conn:
            conn.execute(
                reversals.insert().values(
                    id="r-1",
                    payment_kind="stk",
                    payment_id="p-1",
                    attempt_no=1,
                    status=state,
                    amount=100,
                    original_receipt="TK5AAAAAAA",
                    receiver_party="174379",
                    reason="test",
                    requested_by="ops",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
            moved = transition(conn, "r-1", target)
            now = conn.execute(reversals.select()).one().status
            conn.execute(reversals.delete())
        assert moved == (target in EXPECTED[state]), f"{state} -> {target}"
        assert now == (target if moved else state)


# --- helpers for held callbacks ---------------------------------------------------------------


def paid_collection_held(stack) -> str:
    """A paid collection on a simulator that holds its callbacks: its STK callback delivered."""
    body = {"phone": "0712345678", "amount": 150, "account_reference": "INV1", "description": "x"}
    payment_id = stack.post("/payments/mpesa/stk-initiate", body).json()["payment_id"]
    wait_until(stack.sim.ledger)  # the customer has paid
    deliver_held(stack, "/hooks/stk/")
    return payment_completed(stack, payment_id).id


def reverse_in_simulator(stack, receipt: str) -> str:
    """Reverse a receipt at the simulator directly, not through the service; its receipt."""
    config = stack.sim.config
    body = {
        "Initiator": config.initiator_name,
        "SecurityCredential": credential_for(),
        "CommandID": "TransactionReversal",
        "TransactionID": receipt,
        "Amount": 150,
        "ReceiverParty": config.shortcode,
        "RecieverIdentifierType": "11",
        "ResultURL": "http://127.0.0.1:9/portal",
        "QueueTimeOutURL": "http://127.0.0.1:9/portal",
        "Remarks": "portal",
    }
    token = fetch_token(stack.sim_base_url)
    answer = requests.post(
        stack.sim_base_url + REVERSAL_PATH,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    (entry,) = reversed_in_simulator(stack)
    return entry["receipt"]


def deliver_held(stack, path_part: str) -> None:
    """Deliver the newest held callback whose URL has `path_part`, and wait until applied."""
    from mpesa_service.throughput.writer import wait_applied

    (index,) = [h["index"] for h in stack.sim.held() if path_part in h["url"]][-1:]
    assert stack.sim.deliver(index)["status"] == 200
    assert wait_applied(stack.svc)
