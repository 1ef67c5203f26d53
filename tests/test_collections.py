"""STK Push collections end to end, over real HTTP against the simulator, on SQLite and MariaDB."""

import json

import pytest
import sqlalchemy as sa

import service
from mpesa_service.callbacks import replay_journal
from mpesa_service.stk import sweep_stk
from tests.service_support import TOKEN, payment_completed, wait_until

PAYER = "0712345678"


def initiate(stack, phone=PAYER, amount=150, **extra):
    body = {
        "phone": phone,
        "amount": amount,
        "account_reference": "INV10023",
        "description": "Top up",
        **extra,
    }
    return stack.post("/payments/mpesa/stk-initiate", body)


def settled(stack, checkout_request_id, receipt=False):
    """Poll the old front end's query URL until the payment leaves `pending` (and, with
    `receipt`, until the callback has brought the receipt: a query answer carries none)."""

    def probe():
        answer = stack.post(
            "/payments/mpesa/stk-query", {"checkout_request_id": checkout_request_id}
        ).json()
        done = answer["status"] != "pending" and (answer["mpesa_receipt"] or not receipt)
        return answer if done else None

    return wait_until(probe)


def payment_row(stack, checkout_request_id):
    (row,) = stack.rows(
        service.payments, service.payments.c.checkout_request_id == checkout_request_id
    )
    return row


def stk_callbacks(stack, checkout_request_id):
    return stack.rows(
        service.stk_callbacks, service.stk_callbacks.c.checkout_request_id == checkout_request_id
    )


def test_paid_collection_is_completed_with_its_receipt(stack):
    response = initiate(stack)
    assert response.status_code == 200
    started = response.json()
    assert started["status"] == "pending"

    answer = settled(stack, started["checkout_request_id"], receipt=True)
    assert answer["status"] == "completed"
    assert answer["paid_amount"] == 150
    row = payment_row(stack, started["checkout_request_id"])
    assert row.id == started["payment_id"]
    assert (row.method, row.amount, row.phone_number) == ("mpesa", 150, "254712345678")
    assert row.mpesa_receipt == row.transaction_reference == answer["mpesa_receipt"]
    assert len(answer["mpesa_receipt"]) == 10


def test_payment_row_is_written_before_daraja_is_called(stack):
    # spike_arrest turns the request away: the row must already exist to be marked failed.
    response = initiate(stack, phone="254733000003")
    assert response.status_code == 502
    body = response.json()
    assert body["daraja_code"] == "500.003.02"
    (row,) = stack.rows(service.payments, service.payments.c.id == body["payment_id"])
    assert (row.status, row.error_code) == ("failed", "500.003.02")


@pytest.mark.parametrize(
    ("phone", "code", "meaning"),
    [
        ("254700001032", "1032", "cancelled by the customer"),
        ("254700001037", "1037", "customer's phone could not be reached"),
        ("254700002001", "2001", "wrong PIN entered"),
        ("254700000001", "1", "customer balance insufficient"),
    ],
)
def test_failed_collection_keeps_the_code_and_its_meaning(stack, phone, code, meaning):
    started = initiate(stack, phone=phone).json()
    answer = settled(stack, started["checkout_request_id"])
    assert (answer["status"], answer["result_code"], answer["result_meaning"]) == (
        "failed",
        code,
        meaning,
    )
    assert answer["mpesa_receipt"] is None


def test_dropped_callback_is_resolved_by_the_sweep_job(make_stack):
    stack = make_stack({"STK_QUERY_AFTER_SECONDS": "0"})
    started = initiate(stack, phone="254722000001").json()
    wait_until(lambda: stack.sim.ledger())
    assert sweep_stk(stack.svc) == 1
    row = payment_row(stack, started["checkout_request_id"])
    assert (row.status, row.result_code) == ("completed", "0")
    assert stk_callbacks(stack, started["checkout_request_id"]) == []


def test_query_while_the_customer_has_not_answered_says_pending(make_stack):
    stack = make_stack(stk_answer_delay_seconds=5)
    started = initiate(stack).json()
    answer = stack.post(
        "/payments/mpesa/stk-query", {"checkout_request_id": started["checkout_request_id"]}
    ).json()
    assert answer["status"] == "pending"


def test_callback_delivered_twice_is_applied_once(stack):
    started = initiate(stack, phone="254722000002").json()
    checkout = started["checkout_request_id"]
    wait_until(lambda: len(stk_callbacks(stack, checkout)) == 2)
    outcomes = sorted(callback.outcome for callback in stk_callbacks(stack, checkout))
    assert outcomes == ["applied", "duplicate"]
    assert payment_row(stack, checkout).status == "completed"


def test_underpaid_collection_is_flagged_not_completed(stack):
    started = initiate(stack, phone="254744000001", amount=500).json()
    answer = settled(stack, started["checkout_request_id"], receipt=True)
    assert answer["status"] == "amount_mismatch"
    assert (answer["amount"], answer["paid_amount"]) == (500, 499)
    assert answer["flags"] == ["underpaid"]


def stk_success_body(checkout_request_id, amount=150):
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "29115-34620561-1",
                "CheckoutRequestID": checkout_request_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "PhoneNumber", "Value": 254712345678},
                        {"Name": "Balance"},
                        {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
                        {"Name": "TransactionDate", "Value": "20191219102115"},
                        {"Name": "Amount", "Value": str(amount)},
                    ]
                },
            }
        }
    }


def test_orphan_callback_is_stored_and_flagged(stack):
    response = stack.hook("/hooks/stk", stk_success_body("ws_CO_unknown"))
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    (callback,) = stk_callbacks(stack, "ws_CO_unknown")
    assert callback.outcome == "orphan"
    assert json.loads(callback.raw_response)["Body"]["stkCallback"]["CheckoutRequestID"]
    flags = stack.rows(service.payment_flags, service.payment_flags.c.subject_id == callback.id)
    assert [flag.flag for flag in flags] == ["orphan_callback"]


def test_callback_with_items_out_of_order_and_strings_is_read(make_stack):
    stack = make_stack({}, stk_answer_delay_seconds=30)  # the simulator stays silent
    started = initiate(stack).json()
    checkout = started["checkout_request_id"]
    stack.hook("/hooks/stk", stk_success_body(checkout))
    row = payment_row(stack, checkout)
    assert (row.status, row.mpesa_receipt, row.paid_amount) == ("completed", "NLJ7RT61SV", 150)
    assert row.completed_at.isoformat() == "2019-12-19T07:21:15"  # 10:21:15 Nairobi time


def test_malformed_json_is_refused_but_journaled_and_stored_raw(stack):
    response = stack.hook(
        "/hooks/stk",
        data=b'{"Body": {"stkCallback": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    (entry,) = stack.journal()
    assert entry["body"] == '{"Body": {"stkCallback": '
    (stored,) = stack.rows(service.stk_callbacks)
    assert (stored.outcome, stored.raw_response) == ("malformed", '{"Body": {"stkCallback": ')


def test_wrong_token_is_refused_and_nothing_is_applied(make_stack):
    stack = make_stack({}, stk_answer_delay_seconds=30)
    started = initiate(stack).json()
    response = stack.hook(
        "/hooks/stk", stk_success_body(started["checkout_request_id"]), token="guessed"
    )
    assert response.status_code == 404
    assert payment_row(stack, started["checkout_request_id"]).status == "pending"
    assert [(e["state"], e["reason"]) for e in stack.journal()] == [
        ("rejected", "wrong callback token")
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 150.5}, "amount"),
        ({"amount": "10.50"}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 250_001}, "amount"),
        ({"phone": "0201234567"}, "phone"),
        ({"phone": None}, "phone"),
        ({"account_reference": "INV-2025-000123"}, "account_reference"),
        ({"account_reference": ""}, "account_reference"),
    ],
)
def test_bad_request_is_400_naming_the_field_and_sends_nothing(stack, change, field):
    body = {"phone": PAYER, "amount": 150, "account_reference": "INV10023", **change}
    response = stack.post("/payments/mpesa/stk-initiate", body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}:")
    assert stack.sim_requests("/mpesa/stkpush/v1/processrequest") == []


def test_long_description_is_cut_to_thirteen_characters(stack):
    initiate(stack, description="Top up for the  big booking")
    (sent,) = stack.sim_requests("/mpesa/stkpush/v1/processrequest")
    assert sent["body"]["TransactionDesc"] == "Top up for th"


def test_initiation_needs_an_api_key(stack):
    response = stack.post(
        "/payments/mpesa/stk-initiate", {"phone": PAYER}, headers={"Authorization": "Bearer wrong"}
    )
    assert response.status_code == 401


def test_payment_with_no_answer_expires(make_stack):
    stack = make_stack({"STK_QUERY_AFTER_SECONDS": "0", "STK_EXPIRY_MINUTES": "1"})
    started = initiate(stack, phone="254722000001").json()
    with stack.svc.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE payments SET checkout_request_id = 'ws_CO_lost', "
                "created_at = :old, next_query_at = :old WHERE id = :id"
            ),
            {"old": "2020-01-01 00:00:00", "id": started["payment_id"]},
        )
    sweep_stk(stack.svc)
    (row,) = stack.rows(service.payments, service.payments.c.id == started["payment_id"])
    assert row.status == "failed"
    assert row.result_desc == "expired: no final answer from M-Pesa within 60 s"


def test_journal_is_the_old_b2c_callbacks_log_format(stack):
    started = initiate(stack).json()
    settled(stack, started["checkout_request_id"], receipt=True)
    entry = stack.journal()[0]
    assert entry["kind"] == "stk" and entry["state"] == "received"
    assert (
        json.loads(entry["body"])["Body"]["stkCallback"]["CheckoutRequestID"]
        == started["checkout_request_id"]
    )
    assert TOKEN not in stack.journal_path.read_text()


def test_push_with_no_answer_is_504_then_expires(make_stack):
    stack = make_stack(
        {"DARAJA_TIMEOUT_SECONDS": "1", "STK_EXPIRY_SECONDS": "60"},
        hang_seconds=3,
        callback_delay_seconds=5,
    )
    response = initiate(stack, phone="254733000001")
    assert response.status_code == 504
    payment_id = response.json()["payment_id"]
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    assert row.status == "unknown"
    with stack.svc.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE payments SET created_at = '2020-01-01 00:00:00' WHERE id = :id"),
            {"id": payment_id},
        )
    assert sweep_stk(stack.svc) == 1
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    assert row.status == "failed"
    assert len(stack.sim_requests("/mpesa/stkpush/v1/processrequest")) == 1


def unrecorded_push(make_stack, **simulator):
    """An STK push Daraja took but never answered (504): its payment has no CheckoutRequestID.
    Returns (stack, payment id)."""
    stack = make_stack({"DARAJA_TIMEOUT_SECONDS": "1"}, hang_seconds=3, **simulator)
    response = initiate(stack, phone="254733000001")
    assert response.status_code == 504
    payment_id = response.json()["payment_id"]
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    assert (row.status, row.checkout_request_id) == ("unknown", None)
    return stack, payment_id


def test_a_push_whose_answer_never_came_is_settled_by_the_callback_its_url_names(make_stack):
    stack, payment_id = unrecorded_push(make_stack, callback_delay_seconds=2)
    (push,) = stack.sim_requests("/mpesa/stkpush/v1/processrequest")
    assert push["body"]["CallBackURL"].endswith(f"/hooks/stk/{TOKEN}/{payment_id}")
    row = payment_completed(stack, payment_id)
    (callback,) = stk_callbacks(stack, row.checkout_request_id)
    assert (callback.outcome, callback.payment_id) == ("applied", payment_id)
    assert row.mpesa_receipt and row.mpesa_receipt == callback.mpesa_receipt
    assert stack.rows(service.payment_flags) == []  # no orphan
    (entry,) = [e for e in stack.journal() if e["kind"] == "stk"]
    assert entry["payment_id"] == payment_id


def test_the_payment_a_callback_url_names_is_kept_when_replayed_from_the_journal(make_stack):
    stack, payment_id = unrecorded_push(make_stack, callback_delay_seconds=60)
    body = json.dumps(stk_success_body("ws_CO_replayed")).encode()
    stack.svc.journal.append_many([("stk", body, "127.0.0.1", payment_id)])
    assert replay_journal(stack.svc) == 1
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    assert (row.status, row.checkout_request_id) == ("completed", "ws_CO_replayed")


def test_a_callback_url_naming_a_payment_that_has_its_own_checkout_id_changes_nothing(stack):
    started = initiate(stack).json()
    settled(stack, started["checkout_request_id"], receipt=True)
    forged = stk_success_body("ws_CO_forged", amount=1)
    response = stack.post_callback(f"/hooks/stk/{TOKEN}/{started['payment_id']}", json=forged)
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    (callback,) = stk_callbacks(stack, "ws_CO_forged")
    assert (callback.outcome, callback.payment_id) == ("orphan", None)
    row = payment_row(stack, started["checkout_request_id"])
    assert (row.status, row.paid_amount) == ("completed", 150)


def test_a_callback_url_naming_no_plausible_payment_is_still_taken(stack):
    odd = "x" * 65
    response = stack.post_callback(f"/hooks/stk/{TOKEN}/{odd}", json=stk_success_body("ws_CO_odd"))
    assert response.status_code == 200
    (entry,) = stack.journal()
    assert "payment_id" not in entry
    (callback,) = stk_callbacks(stack, "ws_CO_odd")
    assert callback.outcome == "orphan"
