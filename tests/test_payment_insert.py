"""The old front end's last call, api.php `payment_insert`: it confirms or links a collection the
service holds, asks Daraja when the outcome is open, and never creates or completes a payment
from the client's word. Over real HTTP against the simulator, on SQLite and MariaDB."""

import service
from simulator import STK_QUERY_PATH
from tests.service_support import wait_until
from tests.test_collections import initiate, payment_row, settled

DROPPED_CALLBACK = "254722000001"
CANCELLED = "254700001032"


def insert(stack, **claim):
    return stack.post("/api.php", {"action": "payment_insert", **claim})


def payment_rows(stack):
    return stack.rows(service.payments)


def flag_details(stack, payment_id):
    rows = stack.rows(service.payment_flags, service.payment_flags.c.subject_id == payment_id)
    return [(row.flag, row.detail) for row in rows]


def paid_collection(stack, **extra):
    started = initiate(stack, **extra).json()
    return settled(stack, started["checkout_request_id"], receipt=True)


def test_a_paid_collection_is_confirmed_and_linked_once(stack):
    paid = paid_collection(stack)
    claim = {
        "checkout_request_id": paid["checkout_request_id"],
        "transaction_reference": paid["mpesa_receipt"].lower(),
        "amount": "150.00",
        "user_id": "client-7",
        "booking_id": "booking-42",
        "status": "completed",
        "method": "mpesa",
    }
    first = insert(stack, **claim)
    assert first.status_code == 200
    answer = first.json()
    assert (answer["status"], answer["message"]) == ("success", "Payment recorded")
    assert answer["data"]["payment_id"] == paid["payment_id"]
    assert answer["data"]["transaction_reference"] == paid["mpesa_receipt"]
    assert (answer["data"]["user_id"], answer["data"]["booking_id"]) == ("client-7", "booking-42")

    again = insert(stack, **claim)
    assert (again.status_code, again.json()) == (200, answer)
    (row,) = payment_rows(stack)
    assert (row.user_id, row.booking_id, row.status) == ("client-7", "booking-42", "completed")


def test_a_payment_the_service_does_not_hold_is_never_created(stack):
    response = insert(stack, checkout_request_id="ws_CO_forged", amount=5000, user_id="u-1")
    assert response.status_code == 404
    assert response.json()["status"] == "error"
    assert "never creates one" in response.json()["message"]
    assert payment_rows(stack) == []


def test_an_open_payment_is_asked_about_at_daraja(make_stack):
    stack = make_stack({"STK_QUERY_AFTER_SECONDS": "3600"})
    started = initiate(stack, phone=DROPPED_CALLBACK).json()
    wait_until(lambda: stack.sim.ledger())
    assert payment_row(stack, started["checkout_request_id"]).status == "pending"

    response = insert(stack, checkout_request_id=started["checkout_request_id"])
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "completed"
    assert len(stack.sim_requests(STK_QUERY_PATH)) == 1


def test_an_unconfirmed_payment_stays_pending_whatever_the_client_says(make_stack):
    stack = make_stack(stk_answer_delay_seconds=5)
    started = initiate(stack).json()
    response = insert(
        stack,
        checkout_request_id=started["checkout_request_id"],
        mpesa_receipt="QKX1234567",
        status="completed",
    )
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    row = payment_row(stack, started["checkout_request_id"])
    assert (row.status, row.mpesa_receipt, row.paid_amount) == ("pending", None, None)


def test_a_claim_on_a_failed_payment_is_refused_and_flagged_once(stack):
    started = initiate(stack, phone=CANCELLED).json()
    settled(stack, started["checkout_request_id"])
    for _ in range(2):
        response = insert(stack, checkout_request_id=started["checkout_request_id"])
        assert response.status_code == 409
        assert "the payment is failed (1032" in response.json()["message"]
    row = payment_row(stack, started["checkout_request_id"])
    assert row.status == "failed"
    assert [flag for flag, _ in flag_details(stack, row.id)] == ["client_claim_refused"]


def test_a_claim_contradicting_the_amount_or_receipt_is_refused(stack):
    paid = paid_collection(stack, user_id="client-7")
    checkout = paid["checkout_request_id"]
    cases = {
        "amount 1500 != 150": {"amount": 1500},
        "receipt QKX0000000 != ": {"mpesa_receipt": "QKX0000000"},
        "user_id client-8 != client-7": {"user_id": "client-8"},
    }
    for expected, claim in cases.items():
        response = insert(stack, checkout_request_id=checkout, **claim)
        assert response.status_code == 409, claim
        assert expected in response.json()["message"]
    row = payment_row(stack, checkout)
    assert (row.status, row.paid_amount, row.mpesa_receipt, row.user_id) == (
        "completed",
        150,
        paid["mpesa_receipt"],
        "client-7",
    )
    assert len(flag_details(stack, row.id)) == len(cases)


def test_ids_naming_two_payments_are_refused_and_both_flagged(stack):
    first = paid_collection(stack)
    second = paid_collection(stack, phone="0712345679")
    response = insert(
        stack,
        checkout_request_id=first["checkout_request_id"],
        mpesa_receipt=second["mpesa_receipt"],
    )
    assert response.status_code == 409
    assert "ids name different payments" in response.json()["message"]
    for paid in (first, second):
        assert [flag for flag, _ in flag_details(stack, paid["payment_id"])] == [
            "client_claim_refused"
        ]


def test_a_claim_needs_an_id_and_a_readable_amount(stack):
    no_id = insert(stack, amount=150)
    assert no_id.status_code == 400
    assert "checkout_request_id" in no_id.json()["message"]
    bad_amount = insert(stack, checkout_request_id="ws_CO_1", amount="lots")
    assert bad_amount.status_code == 400
    assert bad_amount.json() == {
        "status": "error",
        "message": "amount: must be a number of shillings, not 'lots'",
    }
