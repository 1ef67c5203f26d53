"""Maker-checker approval of single payouts, over real HTTP against the simulator, on SQLite and
MariaDB: a payout above APPROVAL_ABOVE waits and nothing reaches Daraja; its creator's key may
not decide on it (refused and audited); another operator's approval sends it once, a rejection
or the expiry job ends it unsent; limits are checked again at approval."""

import threading
import uuid
from datetime import timedelta

import pytest
import requests

from mpesa_service.approval import expire_approvals
from mpesa_service.storage import utcnow
from tests.service_support import API_KEY, wait_until
from tests.test_console import csrf_of, signed_in

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
MAKER, CHECKER, CHECKER_2 = "maker-secret-1", "checker-secret-1", "checker-secret-2"
KEYS = (
    f"{API_KEY},maker:initiate+operator+read:{MAKER},checker:operator+read:{CHECKER},"
    f"checker2:operator+read:{CHECKER_2}"
)
APPROVALS = {"API_KEYS": KEYS, "APPROVAL_ABOVE": "5000"}


def as_key(secret):
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def ops(make_stack):
    return make_stack(APPROVALS)


def ask(stack, amount=6000, secret=MAKER, key=None, user="coach-7"):
    body = {"user_id": user, "phone": "0712345678", "amount": amount, "reason": "weekly"}
    headers = {**as_key(secret), "Idempotency-Key": key or str(uuid.uuid4())}
    return stack.post("/payouts", body, headers=headers)


def decide(stack, reference, verb, secret=CHECKER, reason="checked the invoice"):
    body = {} if reason is None else {"reason": reason}
    return stack.post(f"/payouts/{reference}/{verb}", body, headers=as_key(secret))


def detail(stack, reference):
    return stack.get(f"/payouts/{reference}").json()


def history(stack, reference) -> set:
    """(who, action, status after) of each audit row: a set, as MariaDB keeps their times to
    the second and rows of one second come in any order."""
    entries = detail(stack, reference)["history"]
    return {(h["actor"], h["action"], h["status_after"]) for h in entries}


def sent(stack):
    return stack.sim_requests(B2C_PATH)


def waiting(stack, **kwargs) -> str:
    created = ask(stack, **kwargs)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "awaiting_approval"
    return created.json()["reference_id"]


def test_a_payout_above_the_threshold_waits_and_nothing_is_sent(ops):
    created = ask(ops, key="k-wait")
    assert created.status_code == 201
    answer = created.json()
    assert (answer["status"], answer["originator_conversation_id"]) == ("awaiting_approval", None)
    again = ask(ops, key="k-wait")
    assert (again.status_code, again.json()) == (200, answer)
    payout = detail(ops, answer["reference_id"])
    assert (payout["created_by"], payout["attempts"]) == ("maker", [])
    assert history(ops, answer["reference_id"]) == {("maker", "created", "awaiting_approval")}
    assert sent(ops) == [] and ops.sim.ledger() == []
    listed = ops.get("/payouts", params={"status": "awaiting_approval"}).json()["payouts"]
    assert [p["reference_id"] for p in listed] == [answer["reference_id"]]


def test_a_payout_at_the_threshold_is_sent_at_once_and_records_its_key(ops):
    created = ask(ops, amount=5000).json()
    assert created["status"] == "pending"
    assert len(sent(ops)) == 1
    assert detail(ops, created["reference_id"])["created_by"] == "maker"


def test_no_threshold_means_no_payout_waits(make_stack):
    stack = make_stack({"API_KEYS": KEYS})
    assert ask(stack, amount=200000).json()["status"] == "pending"


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_the_creators_key_is_refused_and_the_refusal_audited(ops, verb):
    reference = waiting(ops)
    refused = decide(ops, reference, verb, secret=MAKER)
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        f"API key maker created payout {reference}: another operator's key must {verb} it"
    )
    assert detail(ops, reference)["status"] == "awaiting_approval"
    assert ("maker", f"{verb}_refused", "awaiting_approval") in history(ops, reference)
    assert sent(ops) == []


def test_a_key_without_the_operator_role_cannot_decide(ops):
    reference = waiting(ops)
    assert decide(ops, reference, "approve", secret=API_KEY).status_code == 403
    assert history(ops, reference) == {("maker", "created", "awaiting_approval")}


def test_another_operators_approval_sends_it_and_it_is_paid_once(ops):
    reference = waiting(ops)
    approved = decide(ops, reference, "approve", reason=None)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "pending"
    payout = wait_until(lambda: (d := detail(ops, reference))["status"] == "completed" and d)
    assert [a["attempt_no"] for a in payout["attempts"]] == [1]
    assert len(sent(ops)) == 1
    (paid,) = ops.sim.ledger()
    assert payout["transaction_id"] == paid["receipt"]
    assert history(ops, reference) == {
        ("maker", "created", "awaiting_approval"),
        ("checker", "approved", "submitting"),
    }
    again = decide(ops, reference, "approve", secret=CHECKER_2)
    assert again.status_code == 409
    assert again.json()["error"] == f"payout {reference} is completed, not awaiting approval"
    assert len(sent(ops)) == 1


def test_a_rejection_needs_a_reason_and_ends_it_never_sent(ops):
    reference = waiting(ops)
    assert decide(ops, reference, "reject", reason=" ").json()["field"] == "reason"
    rejected = decide(ops, reference, "reject", reason="not on this week's sheet")
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    late = decide(ops, reference, "approve")
    assert (late.status_code, late.json()["current_status"]) == (409, "rejected")
    payout = detail(ops, reference)
    assert payout["status"] == "rejected"
    (rejection,) = [h for h in payout["history"] if h["action"] == "rejected"]
    assert (rejection["actor"], rejection["note"]) == ("checker", "not on this week's sheet")
    assert sent(ops) == []


def test_unapproved_payouts_expire_and_are_never_sent(ops):
    old = waiting(ops)
    assert expire_approvals(ops.svc) == 0  # not yet 24 hours old
    young = waiting(ops, user="coach-8")
    assert expire_approvals(ops.svc, now=utcnow() + timedelta(hours=24, seconds=1)) == 2
    for reference in (old, young):
        assert detail(ops, reference)["status"] == "expired"
        assert ("system", "expired", "expired") in history(ops, reference)
    assert decide(ops, old, "approve").status_code == 409
    assert expire_approvals(ops.svc, now=utcnow() + timedelta(days=2)) == 0
    assert sent(ops) == []


def test_two_approvals_at_once_send_once(ops):
    reference = waiting(ops)
    barrier, answers = threading.Barrier(2), []

    def approve(secret):
        barrier.wait()
        answers.append(decide(ops, reference, "approve", secret=secret).status_code)

    threads = [threading.Thread(target=approve, args=(s,)) for s in (CHECKER, CHECKER_2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 409]
    wait_until(lambda: detail(ops, reference)["status"] == "completed")
    assert len(sent(ops)) == 1 and len(ops.sim.ledger()) == 1
    approvals = [h for h in detail(ops, reference)["history"] if h["action"] == "approved"]
    assert len(approvals) == 1


def test_limits_are_checked_again_at_approval(make_stack):
    """The daily limit was lowered after the payout was asked for: its approval is refused,
    named and audited, and it keeps waiting; the payout itself is counted once."""
    before = make_stack(APPROVALS)
    reference = waiting(before, amount=6000)
    assert ask(before, amount=3000).json()["status"] == "pending"
    lowered = make_stack({**APPROVALS, "PAYOUT_USER_DAILY_LIMIT": "8000"})
    refused = decide(lowered, reference, "approve")
    assert refused.status_code == 422
    assert refused.json()["limit"] == "PAYOUT_USER_DAILY_LIMIT"
    assert "not approved: user coach-7 would reach 9,000 today" in refused.json()["error"]
    assert detail(lowered, reference)["status"] == "awaiting_approval"
    assert ("checker", "approve_refused", "awaiting_approval") in history(lowered, reference)
    assert sent(lowered) == []
    enough = make_stack({**APPROVALS, "PAYOUT_USER_DAILY_LIMIT": "9000"})
    assert decide(enough, reference, "approve").status_code == 200
    assert len(sent(enough)) == 1


def test_rejected_and_expired_payouts_free_the_daily_limit(make_stack):
    stack = make_stack({**APPROVALS, "PAYOUT_USER_DAILY_LIMIT": "10000"})
    reference = waiting(stack, amount=8000)
    assert ask(stack, amount=3000).status_code == 422  # the waiting payout counts
    decide(stack, reference, "reject", reason="duplicate request")
    assert ask(stack, amount=3000).status_code == 201


def test_an_awaiting_payout_event_is_written_with_it(make_stack, tmp_path):
    stack = make_stack(
        {**APPROVALS, "EVENTS_URL": "http://127.0.0.1:9/events", "EVENTS_SECRET": "s"}
    )
    reference = waiting(stack)
    decide(stack, reference, "reject", reason="no")
    events = stack.get("/events").json()["events"]
    assert [(e["type"], e["subject"]) for e in events] == [
        ("payout.awaiting_approval", reference),
        ("payout.rejected", reference),
    ]
    assert events[0]["body"]["data"]["created_by"] == "maker"


# --- the console ------------------------------------------------------------------------------


def approvals_page(session, stack) -> requests.Response:
    return session.get(f"{stack.base_url}/console/approvals", timeout=10)


def console_decides(session, stack, reference, verb, reason="ok"):
    page = approvals_page(session, stack).text
    return session.post(
        f"{stack.base_url}/console/payouts/{reference}/{verb}",
        data={"csrf": csrf_of(page), "reason": reason},
        timeout=30,
    )


def test_the_console_lists_waiting_payouts_and_refuses_self_approval(ops):
    reference = waiting(ops)
    maker = signed_in(ops, MAKER)
    page = approvals_page(maker, ops)
    assert reference in page.text and 'href="/console/approvals"' in page.text
    refused = console_decides(maker, ops, reference, "approve")
    assert refused.url.split("?")[0].endswith("/console/approvals")
    assert f"API key maker created payout {reference}: another operator" in refused.text
    assert detail(ops, reference)["status"] == "awaiting_approval"
    assert sent(ops) == []
    checker = signed_in(ops, CHECKER)
    approved = console_decides(checker, ops, reference, "approve", reason="looks right")
    assert f"payout {reference} approved: now pending" in approved.text
    assert reference not in approvals_page(checker, ops).text.split("Nothing awaits")[0]
    wait_until(lambda: detail(ops, reference)["status"] == "completed")
    assert history(ops, reference) == {
        ("maker", "created", "awaiting_approval"),
        ("maker", "approve_refused", "awaiting_approval"),
        ("checker", "approved", "submitting"),
    }
    assert len(sent(ops)) == 1


def test_the_console_rejects_with_a_reason_behind_the_csrf_token(ops):
    reference = waiting(ops)
    checker = signed_in(ops, CHECKER)
    forged = checker.post(
        f"{ops.base_url}/console/payouts/{reference}/reject",
        data={"csrf": "0" * 32, "reason": "x"},
        timeout=10,
    )
    assert forged.status_code == 403
    rejected = console_decides(checker, ops, reference, "reject", reason="wrong phone")
    assert f"payout {reference} rejected: now rejected" in rejected.text
    assert detail(ops, reference)["status"] == "rejected"
    assert sent(ops) == []


def test_a_console_payout_above_the_threshold_waits_for_another_operator(ops):
    from tests.test_console_new_payout import TYPED, checked, hidden_fields

    maker = signed_in(ops, MAKER)
    fields = hidden_fields(checked(maker, ops, {**TYPED, "amount": "7000"}).text)
    saved = maker.post(f"{ops.base_url}/console/new-payout/send", data=fields, timeout=30)
    assert "nothing is sent until another operator approves it" in saved.text
    reference = saved.url.split("/console/payouts/")[1].split("?")[0]
    payout = detail(ops, reference)
    assert (payout["status"], payout["created_by"]) == ("awaiting_approval", "maker")
    assert history(ops, reference) == {("maker (console)", "created", "awaiting_approval")}
    refused = console_decides(maker, ops, reference, "approve")
    assert f"API key maker created payout {reference}: another operator" in refused.text
    assert detail(ops, reference)["status"] == "awaiting_approval"
    assert sent(ops) == []


def test_payouts_that_were_never_sent_are_no_reconciliation_finding(ops, database_url):
    """Awaiting approval, rejected and expired payouts moved no money: two days on, none is
    stale, missing or in conflict."""
    from recon.checks import Options, run_checks
    from recon.load import load_frames

    waiting(ops)
    decide(ops, waiting(ops, user="coach-8"), "reject", reason="not due")
    waiting(ops, user="coach-9")
    expire_approvals(ops.svc, now=utcnow() + timedelta(hours=25))
    waiting(ops, user="coach-10")
    statuses = {p["status"] for p in ops.get("/payouts").json()["payouts"]}
    assert statuses == {"awaiting_approval", "rejected", "expired"}
    findings = run_checks(load_frames(database_url), Options(as_of=utcnow() + timedelta(days=2)))
    assert findings.is_clean, findings.frame[["check", "reason"]].to_string()
