"""B2C payouts that never pay twice, over real HTTP against the simulator, on SQLite and MariaDB."""

import threading
import uuid

import pytest
import requests
import sqlalchemy as sa

import service
from mpesa_service.callbacks import receive_callback, replay_journal
from mpesa_service.resolution import retry_failed_payouts
from tests.service_support import TOKEN, wait_until

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
PAYEE = "0712345678"


def pay(stack, phone=PAYEE, amount=1000, key=None, **extra):
    body = {
        "user_id": "trainer-1",
        "user_type": "trainer",
        "phone": phone,
        "amount": amount,
        "reason": "weekly_payout",
        "description": "Weekly earnings payout",
        **extra,
    }
    return stack.post("/payouts", body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def detail(stack, reference_id):
    return stack.get(f"/payouts/{reference_id}").json()


def settled(stack, reference_id, status="completed"):
    return wait_until(lambda: (d := detail(stack, reference_id))["status"] == status and d)


def callbacks_of(stack, reference_id):
    return stack.rows(
        service.b2c_payment_callbacks, service.b2c_payment_callbacks.c.reference_id == reference_id
    )


def result_body(ocid, code=0, amount=1000, receipt="TK58QW1RTY", single_object=False):
    body = {
        "Result": {
            "ResultType": 0,
            "ResultCode": code,
            "ResultDesc": "The service request is processed successfully."
            if code == 0
            else "The initiator information is invalid.",
            "OriginatorConversationID": ocid,
            "ConversationID": "AG_20251105_2010a1b2c3d4e5f60718",
            "TransactionID": receipt if code == 0 else "TK50000000",
            "ReferenceData": {
                "ReferenceItem": {
                    "Key": "QueueTimeoutURL",
                    "Value": "https://internalsandbox.safaricom.co.ke",
                }
            },
        }
    }
    if code == 0:
        parameters = [
            {"Key": "TransactionAmount", "Value": amount},
            {"Key": "TransactionReceipt", "Value": receipt},
            {"Key": "ReceiverPartyPublicName", "Value": "254712345678 - JANE WANJIRU-DOE"},
            {"Key": "TransactionCompletedDateTime", "Value": "05.11.2025 14:31:07"},
        ]
        body["Result"]["ResultParameters"] = {
            "ResultParameter": parameters[0] if single_object else parameters
        }
    return body


def silent_payout(stack, **extra):
    """A payout Daraja accepted but whose callback never comes (we deliver it ourselves)."""
    created = pay(stack, phone="254722000001", **extra).json()
    assert created["status"] == "pending"
    return created


def test_paid_payout_is_completed_with_receipt_and_time(stack):
    response = pay(stack)
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {
        "reference_id",
        "status",
        "amount",
        "phone_number",
        "originator_conversation_id",
    }
    assert (created["amount"], created["phone_number"]) == (1000, "254712345678")
    payout = settled(stack, created["reference_id"])
    (paid,) = stack.sim.ledger()
    assert payout["transaction_id"] == paid["receipt"]
    assert payout["completed_at"] is not None
    assert [a["status"] for a in payout["attempts"]] == ["completed"]
    assert payout["flags"] == []
    (row,) = stack.rows(
        service.b2c_payments, service.b2c_payments.c.reference_id == created["reference_id"]
    )
    assert (row.status, row.reason_code, row.transaction_id) == ("completed", "0", paid["receipt"])


@pytest.mark.parametrize(
    ("phone", "code"),
    [
        ("254711000001", "1"),
        ("254711002001", "2001"),
        ("254711002040", "2040"),
        ("254711008006", "8006"),
        ("254711000003", "SFC_IC0003"),
    ],
)
def test_failure_result_marks_the_payout_failed_with_its_code(stack, phone, code):
    created = pay(stack, phone=phone).json()
    payout = settled(stack, created["reference_id"], "failed")
    assert payout["result_code"] == code
    assert payout["transaction_id"] is None
    (callback,) = callbacks_of(stack, created["reference_id"])
    assert callback.result_code_text == code
    assert callback.result_code == (int(code) if code.isdigit() else None)
    assert callback.transaction_id is None  # the zeros placeholder is not a receipt


def test_timeout_after_acceptance_is_unknown_and_never_resent(make_stack):
    stack = make_stack({"DARAJA_TIMEOUT_SECONDS": "1"}, hang_seconds=3, callback_delay_seconds=2)
    created = pay(stack, phone="254733000001").json()
    assert created["status"] == "unknown"
    assert len(stack.sim_requests(B2C_PATH)) == 1
    # The simulator did pay; its result callback is applied when it comes.
    payout = settled(stack, created["reference_id"])
    assert len(stack.sim_requests(B2C_PATH)) == 1
    assert payout["attempts"][0]["status"] == "completed"


def test_rejection_before_acceptance_fails_with_darajas_code(stack):
    created = pay(stack, phone="254733000003").json()
    assert created["status"] == "failed"
    assert created["result_code"] == "500.003.02"
    assert len(stack.sim_requests(B2C_PATH)) == 1


def test_server_error_without_proof_of_rejection_is_unknown(stack):
    created = pay(stack, phone="254733000002").json()
    assert created["status"] == "unknown"


def test_duplicate_callback_is_applied_once(stack):
    created = pay(stack, phone="254722000002").json()
    wait_until(lambda: len(callbacks_of(stack, created["reference_id"])) == 2)
    rows = callbacks_of(stack, created["reference_id"])
    assert sorted(row.outcome for row in rows) == ["applied", "duplicate"]
    assert [row.transaction_id for row in rows].count(None) == 1


def test_twenty_concurrent_deliveries_move_the_payout_once(stack):
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    answers = []

    def deliver():
        answers.append(stack.hook("/hooks/b2c/result", body).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 20
    outcomes = [row.outcome for row in callbacks_of(stack, created["reference_id"])]
    assert outcomes.count("applied") == 1
    assert outcomes.count("duplicate") == 19
    assert detail(stack, created["reference_id"])["status"] == "completed"


def test_single_object_result_parameter_is_read(stack):
    created = silent_payout(stack)
    stack.hook(
        "/hooks/b2c/result", result_body(created["originator_conversation_id"], single_object=True)
    )
    payout = detail(stack, created["reference_id"])
    assert (payout["status"], payout["paid_amount"]) == ("completed", 1000)


def test_failure_without_result_parameters_is_read(stack):
    created = silent_payout(stack)
    stack.hook("/hooks/b2c/result", result_body(created["originator_conversation_id"], code=2001))
    payout = detail(stack, created["reference_id"])
    assert (payout["status"], payout["result_code"]) == ("failed", "2001")


def test_receiver_name_is_split_on_the_first_separator(stack):
    created = silent_payout(stack)
    stack.hook("/hooks/b2c/result", result_body(created["originator_conversation_id"]))
    (row,) = stack.rows(
        service.b2c_payments, service.b2c_payments.c.reference_id == created["reference_id"]
    )
    assert row.receiver_name == "JANE WANJIRU-DOE"
    assert row.completed_at.isoformat() == "2025-11-05T11:31:07"  # 14:31:07 in Nairobi


def test_orphan_result_is_stored_flagged_and_applies_to_nothing(stack):
    created = silent_payout(stack)
    response = stack.hook("/hooks/b2c/result", result_body("b2c-nobody", receipt="TK5ORPHAN1"))
    assert response.status_code == 200
    (orphan,) = stack.rows(
        service.b2c_payment_callbacks,
        service.b2c_payment_callbacks.c.originator_conversation_id == "b2c-nobody",
    )
    assert (orphan.outcome, orphan.payout_id) == ("orphan", None)
    assert detail(stack, created["reference_id"])["status"] == "pending"


def test_amount_mismatch_is_completed_and_flagged(stack):
    created = pay(stack, phone="254744000001").json()
    payout = settled(stack, created["reference_id"])
    assert (payout["amount"], payout["paid_amount"]) == (1000, 999)
    assert payout["flags"] == ["amount_mismatch"]
    (flag,) = stack.rows(service.payment_flags, service.payment_flags.c.flag == "amount_mismatch")
    assert flag.detail == "amount mismatch: requested 1,000.00 != paid 999.00 (1.00 short)"


def test_queue_timeout_means_unknown_and_a_late_success_is_applied(stack):
    created = pay(stack, phone="254722000004").json()
    wait_until(
        lambda: [r for r in callbacks_of(stack, created["reference_id"]) if r.kind == "timeout"]
    )
    settled(stack, created["reference_id"])
    kinds = [(row.kind, row.outcome) for row in callbacks_of(stack, created["reference_id"])]
    assert ("timeout", "applied") in kinds and ("result", "applied") in kinds


def test_queue_timeout_alone_leaves_the_payout_unknown(stack):
    created = pay(stack, phone="254722000005").json()
    settled(stack, created["reference_id"], "unknown")


def test_success_for_a_failed_payout_completes_it_flagged_as_a_conflict(stack):
    created = silent_payout(stack)
    ocid = created["originator_conversation_id"]
    stack.hook("/hooks/b2c/result", result_body(ocid, code=2001))
    stack.hook("/hooks/b2c/result", result_body(ocid))
    payout = detail(stack, created["reference_id"])
    assert (payout["status"], payout["transaction_id"]) == ("completed", "TK58QW1RTY")
    assert "status_conflict" in payout["flags"]


def test_legacy_callback_url_matches_an_old_row_by_reference_id(stack):
    with stack.svc.engine.begin() as conn:
        conn.execute(
            service.b2c_payments.insert().values(
                id="old-1",
                user_id="u-1",
                phone_number="254712345678",
                amount=100,
                reference_id="payout_ref_old",
                status="pending",
            )
        )
    seed_shape = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request has been processed successfully.",
            "OriginatorConversationID": "29112-34801843-1",
            "ConversationID": "AG_20191219_00006c6fddb15123addf",
            "TransactionID": "NLJ41HAY6Q",
            "ReferenceData": {
                "ReferenceItem": [
                    {"Key": "TransactionAmount", "Value": 100.00},
                    {"Key": "ReceiverPartyPublicName", "Value": "254712345678"},
                    {"Key": "ReferenceID", "Value": "payout_ref_old"},
                ]
            },
        }
    }
    response = requests.post(
        f"{stack.base_url}/clientpaymentcallback.php?token={TOKEN}", json=seed_shape, timeout=30
    )
    assert response.json()["success"] is True
    assert response.json()["transaction_id"] == "NLJ41HAY6Q"
    (row,) = stack.rows(service.b2c_payments, service.b2c_payments.c.id == "old-1")
    assert (row.status, row.transaction_id) == ("completed", "NLJ41HAY6Q")


def test_legacy_callback_url_needs_the_token_when_one_is_set(stack):
    response = requests.post(f"{stack.base_url}/clientpaymentcallback.php", json={}, timeout=30)
    assert response.status_code == 404
    assert response.json()["success"] is False


# --- forged and hostile callbacks ---------------------------------------------------------


def test_wrong_token_changes_nothing_and_is_journaled_as_rejected(stack):
    created = silent_payout(stack)
    response = stack.hook(
        "/hooks/b2c/result", result_body(created["originator_conversation_id"]), token="forged"
    )
    assert response.status_code == 404
    assert detail(stack, created["reference_id"])["status"] == "pending"
    assert [(e["state"], e["reason"]) for e in stack.journal()] == [
        ("rejected", "wrong callback token")
    ]


def test_callback_from_a_foreign_address_is_refused(make_stack):
    stack = make_stack({"CALLBACK_ALLOWED_IPS": "196.201.214.0/24"})
    created = silent_payout(stack)
    response = stack.hook("/hooks/b2c/result", result_body(created["originator_conversation_id"]))
    assert response.status_code == 403
    assert detail(stack, created["reference_id"])["status"] == "pending"
    assert stack.journal()[0]["reason"].startswith("callback from 127.0.0.1")


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_refused(make_stack):
    stack = make_stack({"CALLBACK_ALLOWED_IPS": "196.201.214.200"})
    created = silent_payout(stack)
    response = stack.hook(
        "/hooks/b2c/result",
        result_body(created["originator_conversation_id"]),
        headers={"X-Forwarded-For": "196.201.214.200"},
    )
    assert response.status_code == 403


def test_forwarded_for_from_a_trusted_proxy_is_believed(make_stack):
    stack = make_stack({"CALLBACK_ALLOWED_IPS": "196.201.214.200", "TRUSTED_PROXIES": "127.0.0.1"})
    created = silent_payout(stack)
    response = stack.hook(
        "/hooks/b2c/result",
        result_body(created["originator_conversation_id"]),
        headers={"X-Forwarded-For": "196.201.214.200"},
    )
    assert response.status_code == 200
    assert detail(stack, created["reference_id"])["status"] == "completed"


def test_oversized_body_is_413_and_journaled_as_rejected(make_stack):
    stack = make_stack({"CALLBACK_MAX_BYTES": "1024"})
    response = stack.hook("/hooks/b2c/result", {"Result": {"pad": "x" * 2000}})
    assert response.status_code == 413
    assert stack.journal()[0]["reason"] == "body over the size limit"


def test_non_json_body_is_400_and_kept(stack):
    response = stack.hook("/hooks/b2c/result", data=b"ResultCode=0")
    assert response.status_code == 400
    (stored,) = stack.rows(service.b2c_payment_callbacks)
    assert (stored.outcome, stored.raw_response) == ("malformed", "ResultCode=0")


def test_database_outage_is_acknowledged_then_replayed_once(stack, tmp_path):
    created = silent_payout(stack)
    body = result_body(created["originator_conversation_id"])
    settings = service.load_settings(
        {
            "DATABASE_URL": "mysql+pymysql://root@127.0.0.1:1/down",
            "CALLBACK_TOKEN": TOKEN,
            "CALLBACK_JOURNAL_PATH": str(stack.journal_path),
        },
        env_file=tmp_path / "none",
    )
    down = service.build_service(settings)
    status, answer = receive_callback(
        down,
        "b2c_result",
        TOKEN,
        str(body).replace("'", '"').replace("True", "true").encode(),
        "127.0.0.1",
    )
    assert (status, answer) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"})
    assert detail(stack, created["reference_id"])["status"] == "pending"

    assert replay_journal(stack.svc) == 1
    assert detail(stack, created["reference_id"])["status"] == "completed"
    assert replay_journal(stack.svc) == 0
    assert len(callbacks_of(stack, created["reference_id"])) == 1


# --- initiation: idempotency, validation, limits ---------------------------------------------


def test_same_key_and_body_replays_the_first_answer(stack):
    first = pay(stack, key="order-77")
    again = pay(stack, key="order-77")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(stack.sim_requests(B2C_PATH)) == 1


def test_same_key_with_another_body_is_409(stack):
    first = pay(stack, key="order-78")
    response = pay(stack, key="order-78", amount=2000)
    assert response.status_code == 409
    assert "different request body" in response.json()["error"]
    assert response.json()["reference_id"] == first.json()["reference_id"]


def test_missing_idempotency_key_is_400(stack):
    response = stack.post("/payouts", {"phone": PAYEE, "amount": 100})
    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"


def test_fifty_concurrent_requests_with_one_key_pay_once(stack):
    codes = []

    def send():
        codes.append(pay(stack, key="same-key-50").status_code)

    threads = [threading.Thread(target=send) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] * 49 + [201]
    assert len(stack.sim_requests(B2C_PATH)) == 1
    assert len(stack.rows(service.b2c_payments)) == 1


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (10.5, "amount: must be whole shillings, not 10.5"),
        (9, "amount: must be between 10 and 250,000 shillings, not 9"),
        ("1000.50", "amount: must be whole shillings, not '1000.50'"),
        (
            "1,000",
            "amount: must be whole shillings in digits (1500, \"1500\" or 1500.0), not '1,000'",
        ),
    ],
)
def test_bad_amount_is_400_and_nothing_is_sent(stack, amount, message):
    response = pay(stack, amount=amount)
    assert (response.status_code, response.json()["error"]) == (400, message)
    assert stack.sim_requests(B2C_PATH) == []


def test_payout_over_the_maximum_is_422_naming_the_limit(make_stack):
    stack = make_stack({"PAYOUT_MAX_AMOUNT": "5000"})
    response = pay(stack, amount=6000)
    assert response.status_code == 422
    assert response.json()["limit"] == "PAYOUT_MAX_AMOUNT"


def test_user_daily_limit_is_422_naming_the_limit(make_stack):
    stack = make_stack({"PAYOUT_USER_DAILY_LIMIT": "1500"})
    assert pay(stack, amount=1000).status_code == 201
    response = pay(stack, amount=1000)
    assert (response.status_code, response.json()["limit"]) == (422, "PAYOUT_USER_DAILY_LIMIT")
    assert len(stack.sim_requests(B2C_PATH)) == 1


def test_phone_is_looked_up_by_user_id_when_configured(make_stack):
    stack = make_stack({"PAYOUT_PHONE_QUERY": "SELECT phone FROM trainers WHERE id = :user_id"})
    with stack.svc.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE trainers (id VARCHAR(36), phone VARCHAR(20))"))
        conn.execute(sa.text("INSERT INTO trainers VALUES ('trainer-1', '0722000111')"))
    response = pay(stack, phone=None)
    assert response.json()["phone_number"] == "254722000111"


def test_old_api_php_action_answers_in_the_old_shape(stack):
    body = {
        "action": "b2c_payment_initiate",
        "user_id": "user_123",
        "amount": 1000,
        "reason": "weekly_payout",
        "description": "Weekly earnings payout",
        "phone": PAYEE,
        "reference_id": "payout_ref_abc",
    }
    response = stack.post("/api.php", body)
    assert response.json() == {
        "status": "success",
        "message": "Payout initiated",
        "data": {"reference_id": "payout_ref_abc", "status": "pending", "amount": 1000},
    }
    assert stack.post("/api.php", body).json()["data"]["reference_id"] == "payout_ref_abc"
    assert len(stack.sim_requests(B2C_PATH)) == 1


def test_old_api_php_errors_answer_in_the_old_shape(stack):
    response = stack.post(
        "/api.php",
        {"action": "b2c_payment_initiate", "amount": 10.5, "phone": PAYEE, "reference_id": "r-1"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "message": "amount: must be whole shillings, not 10.5",
    }


def test_payouts_can_be_listed_by_status(stack):
    created = pay(stack).json()
    settled(stack, created["reference_id"])
    pay(stack, phone="254711002001")
    listed = stack.get("/payouts", params={"status": "completed"}).json()["payouts"]
    assert [p["reference_id"] for p in listed] == [created["reference_id"]]


def test_reads_need_an_api_key(stack):
    response = requests.get(f"{stack.base_url}/payouts", timeout=10)
    assert response.status_code == 401


# --- attempts exhausted -------------------------------------------------------------------------

BUSY_PHONE = "254711000026"  # the simulator answers every attempt with ResultCode 26 (retryable)


def failed_with_attempts(stack, reference_id, count):
    def probe():
        payout = detail(stack, reference_id)
        done = [a for a in payout["attempts"] if a["status"] == "failed"]
        return payout if payout["status"] == "failed" and len(done) == count else None

    return wait_until(probe)


def exhausted_flags(stack):
    return stack.rows(service.payment_flags, service.payment_flags.c.flag == "attempts_exhausted")


def test_a_payout_whose_last_allowed_attempt_fails_is_flagged_once(make_stack):
    stack = make_stack({"RETRY_DELAY_SECONDS": "0", "PAYOUT_MAX_ATTEMPTS": "2"})
    created = pay(stack, phone=BUSY_PHONE, reference_id="ref-busy").json()
    failed_with_attempts(stack, "ref-busy", 1)
    assert retry_failed_payouts(stack.svc) == 1
    failed_with_attempts(stack, "ref-busy", 2)
    for _ in range(3):
        assert retry_failed_payouts(stack.svc) == 0
    payout = detail(stack, created["reference_id"])
    assert (payout["status"], payout["flags"]) == ("failed", ["attempts_exhausted"])
    (flag,) = exhausted_flags(stack)
    assert flag.detail == (
        "payout ref-busy failed on attempt 2 of 2 (PAYOUT_MAX_ATTEMPTS) with retryable code 26: "
        "no attempt is left; a person must decide whether to pay it another way"
    )
    assert [(h["action"], h["status_before"], h["status_after"]) for h in payout["history"]] == [
        ("attempts_exhausted", "failed", "failed")
    ]
    assert len(stack.sim_requests(B2C_PATH)) == 2


def test_a_payout_with_attempts_left_is_not_flagged(make_stack):
    stack = make_stack({"RETRY_DELAY_SECONDS": "3600", "PAYOUT_MAX_ATTEMPTS": "2"})
    created = pay(stack, phone=BUSY_PHONE).json()
    failed_with_attempts(stack, created["reference_id"], 1)
    assert retry_failed_payouts(stack.svc) == 0
    assert exhausted_flags(stack) == []


def test_a_last_attempt_failing_with_a_code_never_retried_is_not_flagged(make_stack):
    stack = make_stack({"RETRY_DELAY_SECONDS": "0", "PAYOUT_MAX_ATTEMPTS": "1"})
    created = pay(stack, phone="254711000001").json()  # 1: insufficient balance
    failed_with_attempts(stack, created["reference_id"], 1)
    assert retry_failed_payouts(stack.svc) == 0
    assert exhausted_flags(stack) == []


def exhausted_row(engine, attempt_status="failed"):
    """A payout failed with a retryable code on its only allowed attempt, whose attempt is
    `attempt_status`."""
    with engine.begin() as conn:
        conn.execute(
            service.b2c_payments.insert().values(
                id="p-1",
                reference_id="ref-1",
                status="failed",
                reason_code="26",
                attempt_count=1,
                originator_conversation_id="b2c-1",
                amount=100,
                phone_number="254712345678",
                updated_at=sa.func.now(),
            )
        )
        conn.execute(
            service.b2c_payout_attempts.insert().values(
                id="a-1",
                payout_id="p-1",
                attempt_no=1,
                originator_conversation_id="b2c-1",
                status=attempt_status,
                receipt="TK5PAIDXYZ" if attempt_status == "completed" else None,
                created_at=sa.func.now(),
            )
        )


def test_a_payout_with_evidence_of_payment_is_never_flagged_exhausted(make_stack, engine):
    stack = make_stack({"PAYOUT_MAX_ATTEMPTS": "1"})
    exhausted_row(engine, attempt_status="completed")
    assert retry_failed_payouts(stack.svc) == 0
    assert exhausted_flags(stack) == []


def test_concurrent_retry_passes_flag_an_exhausted_payout_once(make_stack, engine):
    stack = make_stack({"PAYOUT_MAX_ATTEMPTS": "1"})
    exhausted_row(engine)
    threads = [threading.Thread(target=retry_failed_payouts, args=(stack.svc,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(exhausted_flags(stack)) == 1
    assert len(stack.rows(service.payout_audit)) == 1


def test_evidence_after_the_flag_completes_the_payout_and_closes_the_flag(make_stack):
    stack = make_stack({"RETRY_DELAY_SECONDS": "0", "PAYOUT_MAX_ATTEMPTS": "1"})
    created = silent_payout(stack)
    ocid = created["originator_conversation_id"]
    failure = result_body(ocid, code=2001)
    failure["Result"]["ResultCode"] = 26
    stack.hook("/hooks/b2c/result", failure)
    retry_failed_payouts(stack.svc)
    stack.hook("/hooks/b2c/result", result_body(ocid))
    payout = detail(stack, created["reference_id"])
    assert payout["status"] == "completed"
    assert {"attempts_exhausted", "status_conflict"} <= set(payout["flags"])
    (flag,) = exhausted_flags(stack)
    assert flag.resolved_at is not None
