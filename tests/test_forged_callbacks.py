"""Forged callbacks the payout tests do not already cover: a missing token, a rejected delivery
on every callback route, and a genuine callback replayed against another payout's ids with a
different amount. None may change a payout; every one is journaled as rejected or flagged.

(Wrong token on the B2C result URL, a foreign IP, a spoofed X-Forwarded-For, an oversized and
a non-JSON body are in test_payouts.py.)"""

import copy

import service
from mpesa_service.routes import CALLBACK_PATHS
from tests.service_support import wait_until
from tests.test_payouts import detail, pay, result_body, silent_payout

KIND_OF_PATH = {path: kind for kind, path in CALLBACK_PATHS.items()}


def stored_callbacks(stack) -> int:
    return len(stack.rows(service.b2c_payment_callbacks)) + len(stack.rows(service.stk_callbacks))


def flags_of(stack, payout_reference: str) -> list[str]:
    (payout,) = stack.rows(
        service.b2c_payments, service.b2c_payments.c.reference_id == payout_reference
    )
    flags = stack.rows(service.payment_flags, service.payment_flags.c.subject_id == payout.id)
    return [flag.flag for flag in flags]


def genuine_result_of(stack, ocid: str) -> dict:
    """The result body the simulator actually delivered for one OriginatorConversationID."""
    delivered = wait_until(
        lambda: [
            c
            for c in stack.sim.callbacks()
            if c["purpose"] == "result"
            and c["body"]["Result"]["OriginatorConversationID"] == ocid
            and c["status"] == 200
        ]
    )
    return delivered[0]["body"]


def with_ids_and_amount(body: dict, ocid: str, conversation_id: str, amount: int) -> dict:
    forged = copy.deepcopy(body)
    result = forged["Result"]
    result["OriginatorConversationID"] = ocid
    result["ConversationID"] = conversation_id
    for item in result["ResultParameters"]["ResultParameter"]:
        if item["Key"] == "TransactionAmount":
            item["Value"] = amount
    return forged


# --- a missing token --------------------------------------------------------------------------


def test_callback_without_a_token_changes_nothing(stack):
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    response = stack.post_callback("/hooks/b2c/result", json=body)
    assert response.status_code == 404
    assert detail(stack, created["reference_id"])["status"] == "pending"
    assert stored_callbacks(stack) == 0


def test_callback_without_a_token_is_journaled_as_rejected(stack):
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    stack.post_callback("/hooks/b2c/result", json=body)
    assert [entry["state"] for entry in stack.journal()] == ["rejected"]


def test_legacy_url_without_its_token_is_journaled_as_rejected(stack):
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    response = stack.post_callback("/clientpaymentcallback.php", json=body)
    assert response.status_code == 404
    assert detail(stack, created["reference_id"])["status"] == "pending"
    assert [(e["state"], e["reason"]) for e in stack.journal()] == [
        ("rejected", "wrong callback token")
    ]


# --- every route journals what it refuses ------------------------------------------------------


def test_wrong_token_on_every_callback_route_is_journaled_and_stores_nothing(stack):
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    answers = [stack.hook(path, body, token="forged").status_code for path in KIND_OF_PATH]
    assert answers == [404] * len(KIND_OF_PATH)
    assert [(e["state"], e["kind"]) for e in stack.journal()] == [
        ("rejected", kind) for kind in KIND_OF_PATH.values()
    ]
    assert stored_callbacks(stack) == 0
    assert detail(stack, created["reference_id"])["status"] == "pending"


def test_foreign_sender_on_every_callback_route_is_journaled_and_stores_nothing(make_stack):
    stack = make_stack({"CALLBACK_ALLOWED_IPS": "196.201.214.0/24"})
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    answers = [stack.hook(path, body).status_code for path in KIND_OF_PATH]
    assert answers == [403] * len(KIND_OF_PATH)
    reasons = {(e["state"], e["reason"]) for e in stack.journal()}
    assert reasons == {("rejected", "callback from 127.0.0.1, which is not an allowed address")}
    assert len(stack.journal()) == len(KIND_OF_PATH)
    assert stored_callbacks(stack) == 0
    assert detail(stack, created["reference_id"])["status"] == "pending"


# --- a genuine callback replayed for another payout --------------------------------------------


def paid_result_forged_onto_a_pending_payout(stack) -> tuple[dict, dict]:
    """(a pending payout of 5,000, the genuine result of another, paid payout rewritten with
    the pending one's ids and amount)."""
    paid = pay(stack).json()
    wait_until(lambda: detail(stack, paid["reference_id"])["status"] == "completed")
    victim = silent_payout(stack, amount=5000)
    victim_ids = detail(stack, victim["reference_id"])
    genuine = genuine_result_of(stack, paid["originator_conversation_id"])
    forged = with_ids_and_amount(
        genuine,
        victim_ids["originator_conversation_id"],
        victim_ids["conversation_id"],
        amount=5000,
    )
    return victim, forged


def test_replayed_receipt_with_another_payouts_ids_and_amount_is_kept_and_flagged(stack):
    _, forged = paid_result_forged_onto_a_pending_payout(stack)
    response = stack.hook("/hooks/b2c/result", forged)
    assert response.status_code == 200
    entry = stack.journal()[-1]
    assert entry["state"] == "received"
    (stored,) = stack.rows(
        service.b2c_payment_callbacks,
        service.b2c_payment_callbacks.c.journal_id == entry["id"],
    )
    assert stored.raw_response == entry["body"]


def test_replayed_receipt_with_another_payouts_ids_does_not_complete_it(stack):
    victim, forged = paid_result_forged_onto_a_pending_payout(stack)
    stack.hook("/hooks/b2c/result", forged)
    assert detail(stack, victim["reference_id"])["status"] == "pending"
    assert flags_of(stack, victim["reference_id"]) != []


def test_replayed_callback_with_a_different_amount_leaves_the_paid_payout_alone(stack):
    paid = pay(stack).json()
    settled = wait_until(
        lambda: (d := detail(stack, paid["reference_id"]))["status"] == "completed" and d
    )
    genuine = genuine_result_of(stack, paid["originator_conversation_id"])
    forged = with_ids_and_amount(
        genuine, paid["originator_conversation_id"], settled["conversation_id"], amount=250000
    )
    assert stack.hook("/hooks/b2c/result", forged).status_code == 200
    after = detail(stack, paid["reference_id"])
    assert (after["status"], after["paid_amount"], after["transaction_id"]) == (
        "completed",
        settled["paid_amount"],
        settled["transaction_id"],
    )


def test_replayed_callback_with_a_different_amount_is_flagged(stack):
    paid = pay(stack).json()
    settled = wait_until(
        lambda: (d := detail(stack, paid["reference_id"]))["status"] == "completed" and d
    )
    genuine = genuine_result_of(stack, paid["originator_conversation_id"])
    forged = with_ids_and_amount(
        genuine, paid["originator_conversation_id"], settled["conversation_id"], amount=250000
    )
    stack.hook("/hooks/b2c/result", forged)
    assert flags_of(stack, paid["reference_id"]) != []
