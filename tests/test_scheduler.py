"""The jobs, with short schedules, over real HTTP against the simulator (SQLite and MariaDB):
resolve by Transaction Status, retry only what is safe, review, alerts, balance, the emailed
reconciliation, /metrics, and what a real scheduler run writes to the log."""

import email
import logging
import re
import shutil
from collections import Counter
from datetime import UTC, datetime
from email import policy

import pytest
import sqlalchemy as sa

import service
from mpesa_service.entrypoint import QUIET_LIBRARIES, configure_logging
from mpesa_service.jobs import (
    BALANCE,
    RESOLVE,
    alerts_job,
    check_balance,
    email_reconciliation,
    make_scheduler,
    prometheus_text,
    run_job,
    send_alerts,
)
from mpesa_service.resolution import (
    expire_stuck_submissions,
    resolve_payouts,
    retry_failed_payouts,
)
from tests.service_support import wait_until

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
QUICK = {
    "RESOLVE_PENDING_AFTER_SECONDS": "0",
    "RESOLVE_UNKNOWN_AFTER_SECONDS": "0",
    "RESOLVE_SCHEDULE_SECONDS": "0,0,0",
    "STATUS_NOT_FOUND_AFTER_SECONDS": "0",
    "RETRY_DELAY_SECONDS": "0",
}
# Result callbacks for payouts go nowhere: only status queries can tell what happened.
RESULTS_LOST = {**QUICK, "MPESA_RESULT_URL": "http://127.0.0.1:9/lost"}


def pay(stack, phone="0712345678", amount=1000, key=None):
    body = {"user_id": "trainer-1", "phone": phone, "amount": amount, "reason": "weekly"}
    headers = {"Idempotency-Key": key or f"k-{phone}-{amount}"}
    return stack.post("/payouts", body, headers=headers).json()


def payout(stack, reference_id):
    return stack.get(f"/payouts/{reference_id}").json()


def resolved(stack, reference_id, status):
    def probe():
        resolve_payouts(stack.svc)
        current = payout(stack, reference_id)
        return current if current["status"] == status else None

    return wait_until(probe)


def queries_of(stack, reference_id):
    (row,) = stack.rows(service.b2c_payments, service.b2c_payments.c.reference_id == reference_id)
    return stack.rows(service.status_queries, service.status_queries.c.payout_id == row.id)


def test_dropped_result_is_resolved_by_a_status_query(make_stack):
    stack = make_stack(RESULTS_LOST)
    created = pay(stack)
    assert created["status"] == "pending"
    done = resolved(stack, created["reference_id"], "completed")
    (paid,) = stack.sim.ledger()
    assert (done["transaction_id"], done["paid_amount"]) == (paid["receipt"], 1000)
    # With no wait between steps a second query may be out when the first answer lands.
    assert "answered" in [q.status for q in queries_of(stack, created["reference_id"])]


def test_timeout_after_acceptance_is_resolved_as_paid_with_one_request(make_stack):
    stack = make_stack({**RESULTS_LOST, "DARAJA_TIMEOUT_SECONDS": "1"}, hang_seconds=3)
    created = pay(stack, phone="254733000001")
    assert created["status"] == "unknown"
    resolved(stack, created["reference_id"], "completed")
    assert len(stack.sim_requests(B2C_PATH)) == 1
    assert len(stack.sim.ledger()) == 1


def test_request_that_never_arrived_fails_then_is_retried_once_and_paid_once(make_stack):
    stack = make_stack(QUICK)
    stack.sim.arm("server_error_before_accept", times=1, path=B2C_PATH)
    created = pay(stack)
    assert created["status"] == "unknown"
    failed = resolved(stack, created["reference_id"], "failed")
    assert failed["result_code"] == "404"
    assert retry_failed_payouts(stack.svc) == 1
    assert retry_failed_payouts(stack.svc) == 0
    done = wait_until(
        lambda: (p := payout(stack, created["reference_id"]))["status"] == "completed" and p
    )
    assert [a["status"] for a in done["attempts"]] == ["not_found", "completed"]
    ocids = {a["originator_conversation_id"] for a in done["attempts"]}
    assert len(ocids) == 2
    assert len(stack.sim.ledger()) == 1


def test_insufficient_balance_is_not_retried(make_stack):
    stack = make_stack(QUICK)
    created = pay(stack, phone="254711000001")
    wait_until(lambda: payout(stack, created["reference_id"])["status"] == "failed")
    assert retry_failed_payouts(stack.svc) == 0


def test_nothing_is_retried_from_unknown_pending_or_review(make_stack, engine):
    stack = make_stack(QUICK)
    with engine.begin() as conn:
        for status in ("unknown", "pending", "review", "submitting"):
            conn.execute(
                service.b2c_payments.insert().values(
                    id=f"p-{status}",
                    status=status,
                    reason_code="17",
                    attempt_count=1,
                    amount=100,
                    phone_number="254712345678",
                    updated_at=sa.func.now(),
                )
            )
    assert retry_failed_payouts(stack.svc) == 0
    assert stack.sim_requests(B2C_PATH) == []


def test_exhausted_schedule_goes_to_review_with_one_alert_email(make_stack, smtp_server):
    recorder, port = smtp_server
    stack = make_stack(
        {
            **RESULTS_LOST,
            "STATUS_NOT_FOUND_AFTER_SECONDS": "3600",
            "ALERT_EMAIL_TO": "ops@example.com",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
        }
    )
    stack.sim.arm("server_error_before_accept", times=1, path=B2C_PATH)
    created = pay(stack)
    done = resolved(stack, created["reference_id"], "review")
    assert done["flags"] == ["review"]
    assert len(queries_of(stack, created["reference_id"])) == 3
    assert send_alerts(stack.svc) == 1
    assert send_alerts(stack.svc) == 0
    (envelope,) = recorder.envelopes
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "M-Pesa alerts: 1 review"
    (payout,) = stack.rows(
        service.b2c_payments, service.b2c_payments.c.reference_id == created["reference_id"]
    )
    assert f"review  payout {created['reference_id']} (id {payout.id}):" in message.get_content()


def test_each_status_step_is_claimed_once(make_stack):
    stack = make_stack(RESULTS_LOST)
    created = pay(stack, phone="254722000003")  # callback delayed: still pending at first
    resolve_payouts(stack.svc)
    resolve_payouts(stack.svc)
    steps = [q.step for q in queries_of(stack, created["reference_id"])]
    assert len(steps) == len(set(steps))


def test_stuck_submission_becomes_unknown(make_stack, engine):
    stack = make_stack(QUICK)
    with engine.begin() as conn:
        conn.execute(
            service.b2c_payments.insert().values(
                id="stuck",
                status="submitting",
                amount=100,
                attempt_count=1,
                updated_at=sa.text("'2020-01-01 00:00:00'"),
            )
        )
    expire_stuck_submissions(stack.svc)
    (row,) = stack.rows(service.b2c_payments, service.b2c_payments.c.id == "stuck")
    assert row.status == "unknown"


def test_low_balance_is_stored_and_alerted(make_stack):
    stack = make_stack({"BALANCE_ALERT_BELOW": "1000000"})
    check_balance(stack.svc)
    rows = wait_until(lambda: stack.rows(service.account_balances))
    assert {row.account for row in rows} >= {"Utility Account", "Working Account"}
    flags = stack.rows(service.payment_flags, service.payment_flags.c.flag == "balance_low")
    assert len(flags) == 1


def test_scheduled_reconciliation_emails_the_report(make_stack, smtp_server):
    recorder, port = smtp_server
    stack = make_stack(
        {"RECON_EMAIL_TO": "finance@example.com", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)}
    )
    email_reconciliation(stack.svc)
    (envelope,) = recorder.envelopes
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"].startswith("M-Pesa reconciliation")
    names = {part.get_filename() for part in message.iter_attachments()}
    assert {"report.xlsx", "findings.csv", "summary.csv"} <= names


def test_a_days_report_is_kept_under_the_nairobi_day_it_covers(make_stack, smtp_server):
    _, port = smtp_server
    stack = make_stack(
        {"RECON_EMAIL_TO": "finance@example.com", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)}
    )
    # 06:00 in Nairobi on 4 Feb is 03:00 UTC: the day covered is 3 Feb, which starts on 2 Feb
    # at 21:00 UTC.
    ran = datetime(2001, 2, 4, 3, 0, tzinfo=UTC)
    reports = stack.svc.settings.path("REPORTS_DIR")
    covered, day_before = reports / "2001-02-03", reports / "2001-02-02"
    try:
        email_reconciliation(stack.svc, today=ran)
        assert (covered / "report.json").is_file()
        assert not day_before.exists()
    finally:
        shutil.rmtree(covered, ignore_errors=True)


AGE_LINE = re.compile(r'^mpesa_payout_oldest_open_seconds\{status="(\w+)"\} (\d+)$', re.M)


def oldest_ages(metrics: str) -> dict[str, int]:
    return {status: int(age) for status, age in AGE_LINE.findall(metrics)}


def test_metrics_report_statuses_ages_and_jobs(make_stack):
    stack = make_stack(RESULTS_LOST)
    pay(stack)
    run_job(RESOLVE, stack.svc)
    text = stack.get("/metrics").text
    served, made_now = oldest_ages(text), oldest_ages(prometheus_text(stack.svc))
    # Whole seconds, read twice: an age may have ticked over between the two reads.
    assert "pending" in served and served.keys() == made_now.keys()
    assert all(0 <= made_now[status] - served[status] <= 1 for status in served)
    assert AGE_LINE.sub("", text) == AGE_LINE.sub("", prometheus_text(stack.svc))
    assert 'mpesa_job_last_run_ok{job="resolve"} 1' in text
    assert "mpesa_payouts{status=" in text


# Every interval job every second, and an STK push queried as soon as it is open.
FREQUENT = {
    "RESOLVE_INTERVAL_SECONDS": "1",
    "RETRY_INTERVAL_SECONDS": "1",
    "SWEEP_INTERVAL_SECONDS": "1",
    "ALERT_INTERVAL_SECONDS": "1",
    "STK_QUERY_AFTER_SECONDS": "0",
}
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
JOB_LINE = re.compile(r"(?P<job>\w+): (?P<count>\d+) \w")


@pytest.fixture
def service_logging(caplog):
    """The service's logging setup at LOG_LEVEL INFO, undone after the test; `caplog` records."""
    quieted = [logging.getLogger(name) for name in QUIET_LIBRARIES]
    levels = [logger.level for logger in quieted]
    configure_logging("INFO")
    caplog.set_level(logging.INFO)
    yield caplog
    for logger, level in zip(quieted, levels, strict=True):
        logger.setLevel(level)


def run_scheduler_until(stack, done) -> None:
    """Run the service's scheduler until `done()` and every interval job has run at least once."""
    scheduler = make_scheduler(stack.svc)
    scheduler.start()
    try:
        interval_jobs = {"resolve", "retry", "stk_sweep", "alerts"}
        wait_until(lambda: done() and interval_jobs <= set(stack.svc.job_runs), timeout=30)
    finally:
        scheduler.shutdown(wait=True)


def test_a_scheduler_run_logs_one_line_per_job_run_that_did_something(make_stack, service_logging):
    stack = make_stack({**RESULTS_LOST, **FREQUENT})
    created = pay(stack)  # its result is lost: only the resolve job can settle it
    push = {"phone": "254722000001", "amount": 150, "account_reference": "INV1", "description": "x"}
    stack.post("/payments/mpesa/stk-initiate", push)  # its callback is dropped: swept
    run_scheduler_until(
        stack,
        lambda: (
            payout(stack, created["reference_id"])["status"] == "completed"
            and stack.rows(service.payments, service.payments.c.status == "completed")
        ),
    )
    records = service_logging.records
    chatter = [r for r in records if r.name.startswith("apscheduler")]
    assert [r.getMessage() for r in chatter if r.levelno <= logging.INFO] == []
    job_lines = [
        match for r in records if r.name == "mpesa" and (match := JOB_LINE.match(r.getMessage()))
    ]
    # One line per run that did something (each run here works on the one open item), none
    # from the runs of retry and alerts, which had nothing to do.
    assert Counter(line["job"] for line in job_lines) == {
        "resolve": len(stack.sim_requests(STATUS_PATH)),
        "stk_sweep": len(stack.sim_requests(STK_QUERY_PATH)),
    }
    assert {line["count"] for line in job_lines} == {"1"}
    metrics = stack.get("/metrics").text
    for job in ("resolve", "stk_sweep"):
        assert f'mpesa_job_last_run_ok{{job="{job}"}} 1' in metrics


def test_balance_and_alerts_runs_say_what_they_did(make_stack, service_logging):
    stack = make_stack({"BALANCE_ALERT_BELOW": "1000000"})
    assert run_job(BALANCE, stack.svc) == 1
    wait_until(lambda: stack.rows(service.payment_flags))  # the low balance, once answered
    alerts = alerts_job(stack.svc.settings)
    assert run_job(alerts, stack.svc) == 1
    assert run_job(alerts, stack.svc) == 0
    lines = [r.getMessage() for r in service_logging.records if JOB_LINE.match(r.getMessage())]
    assert lines == [
        "balance: 1 Account Balance query sent",
        "alerts: 1 new flag marked notified (no ALERT_EMAIL_TO to email)",
    ]
