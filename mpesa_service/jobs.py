"""Scheduled jobs (APScheduler 3), started by `python service.py` only, never at import; and
the figures `/metrics` reports about them and about the payouts.

Every job has an id, runs one instance at a time and coalesces missed runs; what it claims in
the database it claims with a compare-and-set, so a second process running the same jobs is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import NamedTuple

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from mpesa_service import log
from mpesa_service.approval import expire_approvals
from mpesa_service.batches import FINISHED, batch_detail, result_file, send_batches
from mpesa_service.c2b import pull_c2b
from mpesa_service.callbacks import replay_journal
from mpesa_service.context import Service
from mpesa_service.events import backlog, deliver_events, emit, writes_events
from mpesa_service.flags import add_flag, subject_name
from mpesa_service.resolution import resolve_payouts, retry_failed_payouts
from mpesa_service.reversals import resolve_reversals
from mpesa_service.settings import Settings, operator_emails
from mpesa_service.stk import sweep_stk
from mpesa_service.storage import b2c_payments, payment_flags, payout_batches, utcnow
from recon.mail import MailError, SmtpSettings, send_email, send_report
from recon.rules import NAIROBI, nairobi_day_start_utc

# Where the scheduled reconciliation keeps its reports (the console links the newest).


def make_scheduler(svc: Service):
    settings = svc.settings
    scheduler = BackgroundScheduler(
        timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True}
    )

    def add(job: Job, trigger, **when) -> None:
        scheduler.add_job(run_job, trigger, id=job.name, name=job.name, args=[job, svc], **when)

    add(RESOLVE, "interval", seconds=settings.integer("RESOLVE_INTERVAL_SECONDS"))
    add(REVERSAL_RESOLVE, "interval", seconds=settings.integer("RESOLVE_INTERVAL_SECONDS"))
    add(RETRY, "interval", seconds=settings.integer("RETRY_INTERVAL_SECONDS"))
    add(STK_SWEEP, "interval", seconds=settings.integer("SWEEP_INTERVAL_SECONDS"))
    add(JOURNAL_REPLAY, "interval", seconds=60)
    add(APPROVAL_EXPIRY, "interval", seconds=60)
    add(BATCHES, "interval", seconds=2)
    if settings["EVENTS_URL"]:
        add(EVENTS, "interval", seconds=settings.integer("EVENTS_INTERVAL_SECONDS"))
    add(alerts_job(settings), "interval", seconds=settings.integer("ALERT_INTERVAL_SECONDS"))
    if settings.integer("C2B_PULL_INTERVAL_MINUTES"):
        add(C2B_PULL, "interval", minutes=settings.integer("C2B_PULL_INTERVAL_MINUTES"))
    if settings.integer("BALANCE_CHECK_MINUTES"):
        add(BALANCE, "interval", minutes=settings.integer("BALANCE_CHECK_MINUTES"))
    if settings.listing("RECON_EMAIL_TO"):
        add(
            RECONCILIATION,
            CronTrigger.from_crontab(settings["RECON_SCHEDULE"], timezone=NAIROBI),
        )
    return scheduler


@dataclass(frozen=True)
class Job:
    """A scheduled job. `name` is its one name: the scheduler's job id and name, and the label
    of its log lines and of its /metrics figures. `run` returns how many things it did (None:
    nothing); a run that did something logs one line, `<name>: <count> <noun>s <done>`."""

    name: str
    run: Callable[[Service], int | None]
    noun: str
    done: str

    def did(self, count: int) -> str:
        plural = "" if count == 1 else "s"
        return f"{self.name}: {count} {self.noun}{plural} {self.done}"


class JobRun(NamedTuple):
    """A job's last run, kept in Service.job_runs (written by the scheduler's threads, read by
    /metrics): when it finished (epoch seconds) and "ok" or the error."""

    finished_at: float
    outcome: str


def run_job(job: Job, svc: Service) -> int | None:
    """Run a job, recording when it finished and how, and logging what it did; log (never
    raise) what goes wrong so the scheduler keeps going."""
    try:
        count = job.run(svc)
    except Exception as error:
        log.exception("job %s failed", job.name)
        svc.job_runs[job.name] = JobRun(time.time(), f"error: {type(error).__name__}")
        return None
    svc.job_runs[job.name] = JobRun(time.time(), "ok")
    if count:
        log.info("%s", job.did(count))
    return count


# --- alerts -------------------------------------------------------------------------------------


def send_alerts(svc: Service) -> int:
    """One email for every flag raised since the last one (review, mismatches, orphans,
    conflicts, low balance, low space for the journal, an events backlog). Flags are marked
    notified only once the email went out."""
    flag_journal_space(svc)
    keep_flag(svc, "events", "outbox", "events_backlog", events_backlog_problem(svc))
    with svc.engine.connect() as conn:
        flags = conn.execute(
            sa.select(payment_flags)
            .where(payment_flags.c.notified_at.is_(None))
            .order_by(payment_flags.c.created_at)
            .limit(500)
        ).all()
        names = {flag.id: subject_name(conn, flag.subject_type, flag.subject_id) for flag in flags}
    if not flags:
        return 0
    recipients = svc.settings.listing("ALERT_EMAIL_TO")
    if recipients:
        send_email(
            alert_message(flags, names, recipients, svc.settings["SMTP_FROM"]),
            to=recipients,
            smtp=smtp_settings(svc),
        )
    with svc.engine.begin() as conn:
        conn.execute(
            payment_flags.update()
            .where(payment_flags.c.id.in_([flag.id for flag in flags]))
            .values(notified_at=utcnow())
        )
    return len(flags)


def journal_space_problem(svc: Service) -> str | None:
    """What is wrong with the journal's free space (below JOURNAL_MIN_FREE_MB), or None."""
    minimum = svc.settings.integer("JOURNAL_MIN_FREE_MB")
    free = svc.journal.free_bytes() // 2**20
    if minimum and free < minimum:
        return (
            f"low on space: {free:,} MB free on the journal's filesystem, under "
            f"JOURNAL_MIN_FREE_MB {minimum:,}; callbacks cannot be journaled once it is full"
        )
    return None


def flag_journal_space(svc: Service) -> None:
    """Raise `journal_space_low` once while space is low; close it when space comes back."""
    keep_flag(svc, "journal", "journal", "journal_space_low", journal_space_problem(svc))


def keep_flag(svc: Service, subject_type: str, subject_id: str, flag: str, problem: str | None):
    """Raise `flag` once while `problem` holds, and close it once it no longer does."""
    is_open = sa.and_(payment_flags.c.flag == flag, payment_flags.c.resolved_at.is_(None))
    with svc.engine.begin() as conn:
        raised = conn.execute(sa.select(payment_flags.c.id).where(is_open)).first()
        if problem and not raised:
            add_flag(conn, subject_type, subject_id, flag, problem)
        elif raised and not problem:
            conn.execute(payment_flags.update().where(is_open).values(resolved_at=utcnow()))


def events_backlog_problem(svc: Service) -> str | None:
    """How long events have waited for delivery, when the oldest has waited longer than
    EVENTS_ALERT_AFTER_MINUTES (and EVENTS_URL is set), or None.

    Checked by the alerts job, not the events job: a backlog usually means the events job is
    stuck on a slow receiver or not running at all, and the alerts job is what tells people."""
    minutes = svc.settings.integer("EVENTS_ALERT_AFTER_MINUTES")
    if not svc.settings["EVENTS_URL"] or not minutes:
        return None
    waiting = backlog(svc.engine)
    if waiting.oldest is None or utcnow() - waiting.oldest <= timedelta(minutes=minutes):
        return None
    since = waiting.oldest.replace(tzinfo=UTC).astimezone(NAIROBI)
    return (
        f"{waiting.count:,} event(s) waiting for delivery to EVENTS_URL, the oldest since "
        f"{since:%Y-%m-%d %H:%M %Z}: more than EVENTS_ALERT_AFTER_MINUTES ({minutes}); "
        "see the console's Outbound events page"
    )


def alert_message(flags, names: dict, recipients: list[str], sender: str) -> EmailMessage:
    """The alert email; `names` gives each flag's subject as a person can look it up (see
    flags.subject_name), by flag id."""
    counts: dict[str, int] = {}
    for flag in flags:
        counts[flag.flag] = counts.get(flag.flag, 0) + 1
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    message = EmailMessage()
    message["Subject"] = f"M-Pesa alerts: {summary}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    lines = [
        f"{flag.created_at:%Y-%m-%d %H:%M:%S} UTC  {flag.flag}  {names[flag.id]}: {flag.detail}"
        for flag in flags
    ]
    message.set_content("\n".join([f"{len(flags)} new alerts ({summary}):", "", *lines]))
    return message


def smtp_settings(svc: Service):
    names = (
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_STARTTLS",
        "SMTP_SSL",
        "SMTP_USER",
        "SMTP_PASSWORD",
        "SMTP_FROM",
    )
    return SmtpSettings.from_environ({name: svc.settings[name] for name in names})


# --- bulk payout batches ------------------------------------------------------------------------


def run_batches(svc: Service) -> int:
    """Send the rows of approved batches at BULK_PAYOUTS_PER_SECOND, finish those whose rows
    have all settled, and email each finished batch's result file to its maker and checker.
    Returns how many rows were sent."""
    sent = send_batches(svc)
    email_finished_batches(svc)
    return sent


def email_finished_batches(svc: Service) -> int:
    """The result file of each finished batch not yet emailed, to its maker and its checker
    (their addresses from OPERATOR_EMAILS); a batch whose email could not be sent is tried
    again on the next run. Returns how many emails went out."""
    addresses = operator_emails(svc.settings["OPERATOR_EMAILS"])
    with svc.engine.connect() as conn:
        finished = conn.execute(
            sa.select(payout_batches)
            .where(payout_batches.c.status == FINISHED, payout_batches.c.emailed_at.is_(None))
            .limit(20)
        ).all()
    emailed = 0
    for batch in finished:
        people = dict.fromkeys(name for name in (batch.created_by, batch.decided_by) if name)
        recipients = [addresses[name] for name in people if name in addresses]
        if recipients:
            try:
                send_email(
                    batch_message(svc, batch.id, recipients), to=recipients, smtp=smtp_settings(svc)
                )
            except MailError as error:
                log.warning("batch %s result not emailed: %s", batch.id, error)
                continue
            emailed += 1
        with svc.engine.begin() as conn:
            conn.execute(
                payout_batches.update()
                .where(payout_batches.c.id == batch.id)
                .values(emailed_at=utcnow())
            )
    return emailed


def batch_message(svc: Service, batch_id: str, recipients: list[str]) -> EmailMessage:
    """The finished batch's counts, with its result file as CSV and XLSX."""
    detail = batch_detail(svc, batch_id)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(detail["counts"].items()))
    message = EmailMessage()
    message["Subject"] = f"Bulk payout batch {batch_id} finished: {counts}"
    message["From"] = svc.settings["SMTP_FROM"]
    message["To"] = ", ".join(recipients)
    checker = detail["decided_by"] or "nobody (no approval needed)"
    message.set_content(
        f"Batch {batch_id} ({detail['file_name'] or 'no file name'}), uploaded by "
        f"{detail['created_by']} and approved by {checker}, has finished: "
        f"{detail['row_count']} rows, KES {detail['total_amount']}; {counts}.\n\n"
        "Each row's status, receipt and result meaning are in the attached result file."
    )
    for kind, (main, sub) in (("csv", ("text", "csv")), ("xlsx", XLSX_PARTS)):
        message.add_attachment(
            result_file(svc, batch_id, kind),
            maintype=main,
            subtype=sub,
            filename=f"{batch_id}-result.{kind}",
        )
    return message


XLSX_PARTS = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


# --- balance and the scheduled reconciliation -----------------------------------------------


def check_balance(svc: Service) -> int:
    """Ask for the B2C account balances; the answer arrives at /hooks/balance/result. Returns
    1, the query sent."""
    svc.client.account_balance(
        result_url=svc.hook_url("balance", "result"),
        queue_timeout_url=svc.hook_url("balance", "timeout"),
    )
    return 1


def email_reconciliation(svc: Service, today: datetime | None = None) -> int:
    """Reconcile the previous Nairobi day, keep the report under data/reports/<day>/ (the
    console links it) and email it to RECON_EMAIL_TO. Returns 1, the report sent."""
    # Here, not at the top: recon.api brings pandas, which only this job needs.
    from recon.api import build_report

    until, since = previous_nairobi_day(today)
    report = build_report(
        svc.settings["DATABASE_URL"],
        since=since,
        until=until,
        as_of=utcnow(),
        stale_after_minutes=svc.settings.integer("RECON_STALE_AFTER_MINUTES"),
        tariff_path=svc.settings.path("RECON_TARIFF"),
        bill_ref_query=svc.settings["C2B_BILL_REF_QUERY"],
    )
    report.write(svc.settings.path("REPORTS_DIR") / nairobi_date(since))
    send_report(report, to=svc.settings.listing("RECON_EMAIL_TO"), smtp=smtp_settings(svc))
    with svc.engine.begin() as conn:
        if writes_events(conn):
            emit(conn, "recon.finished", f"recon:{nairobi_date(since)}", report.to_dict())
    return 1


def previous_nairobi_day(today: datetime | None = None) -> tuple[datetime, datetime]:
    """(start of today, start of yesterday) in Nairobi, as naive UTC."""
    start = nairobi_day_start_utc(today)
    return start, start - timedelta(days=1)  # Nairobi keeps no daylight saving time


def nairobi_date(moment: datetime) -> str:
    """The Nairobi calendar day of a naive UTC time, as YYYY-MM-DD (a day's report is named by
    the day it covers, as its readers know it)."""
    return f"{moment.replace(tzinfo=UTC).astimezone(NAIROBI):%Y-%m-%d}"


# --- the jobs' names and log lines ------------------------------------------------------------

RESOLVE = Job(
    "resolve", resolve_payouts, "payout", "asked about by Transaction Status or sent to review"
)
REVERSAL_RESOLVE = Job(
    "reversal_resolve",
    resolve_reversals,
    "reversal",
    "asked about by Transaction Status or sent to review",
)
RETRY = Job("retry", retry_failed_payouts, "failed payout", "sent again as a new attempt")
STK_SWEEP = Job("stk_sweep", sweep_stk, "open collection", "queried by STK Query or expired")
JOURNAL_REPLAY = Job("journal_replay", replay_journal, "journaled callback", "applied")
APPROVAL_EXPIRY = Job(
    "approval_expiry", expire_approvals, "payout", "expired unapproved (never sent)"
)
BATCHES = Job("batches", run_batches, "bulk row", "sent as a payout")
BALANCE = Job("balance", check_balance, "Account Balance query", "sent")
EVENTS = Job("events", deliver_events, "event", "delivered to EVENTS_URL")
C2B_PULL = Job(
    "c2b_pull", pull_c2b, "C2B payment", "found by Pull Transactions (its confirmation missed)"
)
RECONCILIATION = Job(
    "reconciliation", email_reconciliation, "reconciliation report", "emailed to RECON_EMAIL_TO"
)


def alerts_job(settings: Settings) -> Job:
    """The alerts job, its log line saying whether the new flags were emailed."""
    if settings.listing("ALERT_EMAIL_TO"):
        return Job("alerts", send_alerts, "new flag", "emailed to ALERT_EMAIL_TO")
    return Job("alerts", send_alerts, "new flag", "marked notified (no ALERT_EMAIL_TO to email)")


# --- /metrics -----------------------------------------------------------------------------------


# The statuses whose oldest payout /metrics shows the age of: those waiting for something.
OLDEST_SHOWN = ("awaiting_approval", "submitting", "pending", "unknown", "review")


def prometheus_text(svc: Service) -> str:
    """Counts by status, the age of the oldest open payouts, and each job's last run."""
    now = utcnow()
    with svc.engine.connect() as conn:
        counts = conn.execute(
            sa.select(b2c_payments.c.status, sa.func.count()).group_by(b2c_payments.c.status)
        ).all()
        oldest = conn.execute(
            sa.select(b2c_payments.c.status, sa.func.min(b2c_payments.c.updated_at))
            .where(b2c_payments.c.status.in_(OLDEST_SHOWN))
            .group_by(b2c_payments.c.status)
        ).all()
    lines = ["# TYPE mpesa_payouts gauge"]
    lines += [f'mpesa_payouts{{status="{status}"}} {count}' for status, count in counts]
    lines.append("# TYPE mpesa_payout_oldest_open_seconds gauge")
    lines += [
        f'mpesa_payout_oldest_open_seconds{{status="{status}"}} {(now - since).total_seconds():.0f}'
        for status, since in oldest
        if since
    ]
    lines.append("# TYPE mpesa_job_last_run_timestamp_seconds gauge")
    for job_id, run in sorted(svc.job_runs.items()):
        lines.append(
            f'mpesa_job_last_run_timestamp_seconds{{job="{job_id}"}} {run.finished_at:.0f}'
        )
        lines.append(f'mpesa_job_last_run_ok{{job="{job_id}"}} {int(run.outcome == "ok")}')
    return "\n".join(lines) + "\n"
