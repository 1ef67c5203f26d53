"""Reversals of collections (refunds) end to end, over real HTTP against the simulator, on SQLite
and MariaDB: one reversal per collection whatever the callers do, an unknown outcome resolved by
asking, a result applied once."""

import json
import threading

import pytest
import requests

import service
from mpesa_service.reversals import resolve_reversals
from mpesa_service.storage import collection_audit, events, reversal_callbacks, reversals
from tests.service_support import API_KEY, TOKEN, payment_completed, wait_until

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
    assert [(a.action, a.actor, a.status_after) for a in audit] == [
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
    assert outcomes == ["applied", "duplicate"]
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


# --- helpers for held callbacks ---------------------------------------------------------------


def paid_collection_held(stack) -> str:
    """A paid collection on a simulator that holds its callbacks: its STK callback delivered."""
    body = {"phone": "0712345678", "amount": 150, "account_reference": "INV1", "description": "x"}
    payment_id = stack.post("/payments/mpesa/stk-initiate", body).json()["payment_id"]
    wait_until(stack.sim.ledger)  # the customer has paid
    deliver_held(stack, "/hooks/stk/")
    return payment_completed(stack, payment_id).id


def deliver_held(stack, path_part: str) -> None:
    """Deliver the newest held callback whose URL has `path_part`, and wait until applied."""
    from mpesa_service.throughput.writer import wait_applied

    (index,) = [h["index"] for h in stack.sim.held() if path_part in h["url"]][-1:]
    assert stack.sim.deliver(index)["status"] == 200
    assert wait_applied(stack.svc)
