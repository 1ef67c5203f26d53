"""Operators resolving what automation could not: paid with a receipt, not paid (then a new
attempt), conflicts acknowledged, re-queries; role checks and the append-only audit trail.
Over real HTTP against the simulator, on SQLite and MariaDB."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import service
from mpesa_service.resolution import resolve_payouts, retry_failed_payouts
from tests.service_support import API_KEY, wait_until

ROOT = Path(__file__).resolve().parent.parent
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
OPERATOR, READER = "ops-secret-1", "read-secret-1"
KEYS = f"{API_KEY},ops:operator+read:{OPERATOR},auditor:read:{READER}"
# Results never arrive and "not found" is not believed: payouts end in review.
TO_REVIEW = {
    "API_KEYS": KEYS,
    "MPESA_RESULT_URL": "http://127.0.0.1:9/lost",
    "RESOLVE_PENDING_AFTER_SECONDS": "0",
    "RESOLVE_UNKNOWN_AFTER_SECONDS": "0",
    "RESOLVE_SCHEDULE_SECONDS": "0,0",
    "STATUS_NOT_FOUND_AFTER_SECONDS": "3600",
    "RETRY_DELAY_SECONDS": "0",
}


def as_key(secret):
    return {"Authorization": f"Bearer {secret}"}


def payout_in_review(stack, key="k-review"):
    """A payout whose request reached nobody (Daraja answered 500 and processed nothing) and
    whose status queries found nothing: automation gives it to a person."""
    stack.sim.arm("server_error_before_accept", times=1, path=B2C_PATH)
    created = stack.post(
        "/payouts",
        {"user_id": "t-1", "phone": "0712345678", "amount": 700},
        headers={"Idempotency-Key": key},
    ).json()

    def in_review():
        resolve_payouts(stack.svc)
        return stack.get(f"/payouts/{created['reference_id']}").json()["status"] == "review"

    wait_until(in_review)
    return created["reference_id"]


def resolve(stack, reference_id, secret=OPERATOR, **body):
    return stack.post(f"/payouts/{reference_id}/resolve", body, headers=as_key(secret))


@pytest.fixture
def ops(make_stack):
    return make_stack(TO_REVIEW)


def test_paid_with_a_receipt_completes_and_is_audited(ops):
    reference = payout_in_review(ops)
    response = resolve(
        ops, reference, outcome="paid", receipt="tk58qw1rty", note="seen on the statement"
    )
    assert response.json() == {"reference_id": reference, "status": "completed", "outcome": "paid"}
    payout = ops.get(f"/payouts/{reference}").json()
    assert (payout["status"], payout["transaction_id"]) == ("completed", "TK58QW1RTY")
    (entry,) = payout["history"]
    assert {k: entry[k] for k in ("actor", "action", "status_before", "status_after", "note")} == {
        "actor": "ops",
        "action": "paid",
        "status_before": "review",
        "status_after": "completed",
        "note": "seen on the statement",
    }
    assert OPERATOR not in str(payout)


def test_receipt_of_another_payout_is_refused(ops):
    first, second = payout_in_review(ops, "k-1"), payout_in_review(ops, "k-2")
    resolve(ops, first, outcome="paid", receipt="TK58QW1RTY", note="statement")
    response = resolve(ops, second, outcome="paid", receipt="TK58QW1RTY", note="statement")
    assert response.status_code == 409
    assert response.json()["error"] == f"receipt TK58QW1RTY already belongs to payout {first}"
    assert ops.get(f"/payouts/{second}").json()["status"] == "review"


def test_not_paid_fails_then_one_new_attempt_pays_once(ops):
    reference = payout_in_review(ops)
    assert (
        resolve(ops, reference, outcome="not_paid", note="not on the statement").json()["status"]
        == "failed"
    )
    assert retry_failed_payouts(ops.svc) == 1
    assert retry_failed_payouts(ops.svc) == 0
    attempts = ops.get(f"/payouts/{reference}").json()["attempts"]
    assert [a["attempt_no"] for a in attempts] == [1, 2]
    assert len(ops.sim.ledger()) == 1
    assert len(ops.sim_requests(B2C_PATH)) == 2  # the first reached nobody


def test_only_review_or_unknown_payouts_can_be_resolved(ops):
    reference = payout_in_review(ops)
    resolve(ops, reference, outcome="paid", receipt="TK58QW1RTY", note="statement")
    again = resolve(ops, reference, outcome="not_paid", note="changed my mind")
    assert again.status_code == 409
    assert "is completed" in again.json()["error"]


def test_a_note_is_required(ops):
    reference = payout_in_review(ops)
    response = resolve(ops, reference, outcome="not_paid", note=" ")
    assert (response.status_code, response.json()["field"]) == (400, "note")


@pytest.mark.parametrize("body", [{"outcome": ""}, {"outcome": "  "}, {}])
def test_a_resolution_without_an_outcome_is_refused(ops, body):
    reference = payout_in_review(ops)
    response = resolve(ops, reference, receipt="TK58QW1RTY", note="statement", **body)
    assert (response.status_code, response.json()["field"]) == (400, "outcome")
    assert response.json()["error"] == "outcome: choose paid or not paid; none was chosen"
    assert ops.get(f"/payouts/{reference}").json()["status"] == "review"


@pytest.mark.parametrize(("secret", "status"), [(API_KEY, 403), (READER, 403), ("nope", 401)])
def test_resolving_needs_the_operator_role(ops, secret, status):
    reference = payout_in_review(ops)
    assert resolve(ops, reference, secret, outcome="not_paid", note="x").status_code == status


def test_roles_limit_every_endpoint(ops):
    body = {"phone": "0712345678", "amount": 100}
    assert (
        ops.post("/payouts", body, headers={**as_key(READER), "Idempotency-Key": "r"}).status_code
        == 403
    )
    assert (
        ops.post("/payouts", body, headers={**as_key(OPERATOR), "Idempotency-Key": "o"}).status_code
        == 403
    )
    assert (
        requests.get(f"{ops.base_url}/payouts", headers=as_key(READER), timeout=10).status_code
        == 200
    )


def test_conflict_can_be_acknowledged_with_a_note(ops):
    created = ops.post(
        "/payouts",
        {"user_id": "t-1", "phone": "254722000001", "amount": 100},
        headers={"Idempotency-Key": "c"},
    ).json()
    ocid = created["originator_conversation_id"]
    for code in (2001, 0):
        body = {
            "Result": {
                "ResultType": 0,
                "ResultCode": code,
                "ResultDesc": "x",
                "OriginatorConversationID": ocid,
                "ConversationID": "AG_1",
                "TransactionID": "TK5CONFLCT",
            }
        }
        ops.hook("/hooks/b2c/result", body)
    assert ops.get(f"/payouts/{created['reference_id']}").json()["flags"] == ["status_conflict"]
    response = resolve(
        ops,
        created["reference_id"],
        outcome="acknowledge",
        note="customer confirmed, refunded manually",
    )
    assert response.status_code == 200
    (flag,) = ops.rows(service.payment_flags, service.payment_flags.c.flag == "status_conflict")
    assert flag.resolved_at is not None
    assert (
        resolve(ops, created["reference_id"], outcome="acknowledge", note="again").status_code
        == 409
    )


def test_requery_asks_now_and_applies_the_answer(make_stack):
    stack = make_stack({**TO_REVIEW, "RESOLVE_SCHEDULE_SECONDS": "3600"})
    created = stack.post(
        "/payouts",
        {"user_id": "t-1", "phone": "0712345678", "amount": 100},
        headers={"Idempotency-Key": "q"},
    ).json()
    response = stack.post(
        f"/payouts/{created['reference_id']}/requery", {}, headers=as_key(OPERATOR)
    )
    assert response.json()["status"] == "queried"
    wait_until(
        lambda: stack.get(f"/payouts/{created['reference_id']}").json()["status"] == "completed"
    )
    history = stack.get(f"/payouts/{created['reference_id']}").json()["history"]
    assert [h["action"] for h in history] == ["requery"]


def test_cli_resolves_with_the_same_rules_and_audit(ops, database_url, tmp_path):
    reference = payout_in_review(ops)
    environ = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CALLBACK_TOKEN": "t",
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "cli.log"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "service.py",
            "resolve",
            reference,
            "--outcome",
            "paid",
            "--receipt",
            "TK58QW1RTY",
            "--note",
            "bank statement",
            "--actor",
            "cli:amina",
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"payout {reference} resolved as paid: now completed" in result.stdout
    (entry,) = ops.get(f"/payouts/{reference}").json()["history"]
    assert entry["actor"] == "cli:amina"
