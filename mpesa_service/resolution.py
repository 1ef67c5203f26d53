"""Resolving payouts whose outcome is not known, and retrying only what is safe.

A payout that is `unknown`, or `pending` longer than it should be, is never re-sent: it gets a
Transaction Status query on a backoff schedule, and the answer is applied through the same
compare-and-set transitions as a result callback. When the schedule runs out the payout goes to
`review` and a person is told. Only a `failed` payout, with a result code that proves no money
moved and is worth trying again, gets a new attempt (a new OriginatorConversationID).

Every step is claimed with a compare-and-set first (`check_count`, `attempt_count`), and each
status query is unique per (attempt, step), so two processes never query or retry the same payout
at the same step.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.context import Service
from mpesa_service.daraja import DarajaError, daraja_error_fields
from mpesa_service.flags import add_flag
from mpesa_service.ids import new_id
from mpesa_service.parsing import (
    ResultCallback,
    json_or_problem,
    parse_result_callback,
    text_or_none,
)
from mpesa_service.payouts import (
    NO_EVIDENCE,
    SYSTEM_ACTOR,
    PayoutAttempt,
    audit,
    close_attempt,
    current_attempt,
    match_keys,
    on_attempt,
    payout_by,
    send_attempt,
    settle_payout,
    start_new_attempt,
    store_result_callback,
    transition,
)
from mpesa_service.settings import Settings
from mpesa_service.storage import (
    b2c_payment_callbacks,
    b2c_payments,
    b2c_payout_attempts,
    payment_flags,
    status_queries,
    utcnow,
)
from recon.codes import default_retryable

OPEN_FOR_RESOLUTION = ("pending", "unknown")
# TransactionStatus values (REFERENCE 6.3) that say the original transaction did not pay.
FAILED_STATES = frozenset({"declined", "cancelled", "expired", "failed"})
SAFE_TO_RETRY = frozenset({"500.003.02", "500.003.03", "NotSent"})


def resolve_schedule(settings: Settings) -> list[int]:
    return [int(step) for step in settings["RESOLVE_SCHEDULE_SECONDS"].replace(" ", "").split(",")]


def not_found_codes(settings: Settings) -> frozenset[str]:
    return frozenset(settings.listing("STATUS_NOT_FOUND_CODES"))


def retryable_codes(settings: Settings) -> frozenset[str]:
    configured = settings.listing("RETRYABLE_RESULT_CODES")
    if configured:
        return frozenset(configured)
    return default_retryable("b2c") | SAFE_TO_RETRY | {"not_paid"} | not_found_codes(settings)


# --- the resolve job ------------------------------------------------------------------------


def resolve_payouts(svc: Service) -> int:
    """One pass: apply status answers left waiting, send due status queries, move exhausted
    payouts to review. Returns how many payouts it worked on."""
    now = utcnow()
    expire_stuck_submissions(svc)
    try:
        apply_waiting_status_answers(svc)
    except Exception:  # noqa: BLE001 - an answer it cannot apply must not stop the queries
        log.exception("status answers left waiting could not be applied")
    with svc.engine.connect() as conn:
        due = conn.execute(
            sa.select(b2c_payments)
            .where(b2c_payments.c.status.in_(OPEN_FOR_RESOLUTION))
            .where(b2c_payments.c.next_check_at <= now)
            .order_by(b2c_payments.c.next_check_at)
            .limit(200)
        ).all()
    handled = 0
    schedule = resolve_schedule(svc.settings)
    for payout in due:
        step = claim_check(svc, payout, schedule)
        if step is None:
            continue
        handled += 1
        if step >= len(schedule):
            send_to_review(svc, payout, step)
        else:
            ask_status(svc, payout, step)
    return handled


def claim_check(svc: Service, payout, schedule: list[int]) -> int | None:
    """Claim this payout's next query step; None when another process (or run) has it."""
    step = payout.check_count
    wait = schedule[step] if step < len(schedule) else 0
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            b2c_payments.update()
            .where(b2c_payments.c.id == payout.id)
            .where(b2c_payments.c.check_count == step)
            .where(b2c_payments.c.status.in_(OPEN_FOR_RESOLUTION))
            .values(check_count=step + 1, next_check_at=utcnow() + timedelta(seconds=wait))
        ).rowcount
    return step if claimed else None


def ask_status(svc: Service, payout, step: int) -> None:
    """Record, then send, one Transaction Status query about the payout's current attempt."""
    with svc.engine.connect() as conn:
        attempt = current_attempt(conn, payout)
    query_id = new_id()
    with svc.engine.begin() as conn:
        conn.execute(
            status_queries.insert().values(
                id=query_id,
                payout_id=payout.id,
                attempt_id=attempt.id if attempt else None,
                step=step,
                status="sending",
                requested_at=utcnow(),
            )
        )
    try:
        answer = svc.client.transaction_status(
            result_url=svc.hook_url("status", "result"),
            queue_timeout_url=svc.hook_url("status", "timeout"),
            original_conversation_id=payout.originator_conversation_id,
            transaction_id=payout.transaction_id,
        )
    except DarajaError as error:
        code, message = daraja_error_fields(error)
        _update_query(svc, query_id, status="error", result_code=code, result_desc=message)
        log.warning("status query for payout %s failed: %s", payout.id, message)
        return
    _update_query(
        svc,
        query_id,
        status="sent",
        originator_conversation_id=answer.get("OriginatorConversationID"),
        conversation_id=answer.get("ConversationID"),
    )
    apply_waiting_status_answers(
        svc, answer.get("OriginatorConversationID"), answer.get("ConversationID")
    )


def _update_query(svc: Service, query_id: str, **values) -> None:
    with svc.engine.begin() as conn:
        conn.execute(
            status_queries.update().where(status_queries.c.id == query_id).values(**values)
        )


def send_to_review(svc: Service, payout, queries: int) -> None:
    with svc.engine.begin() as conn:
        if transition(conn, payout.id, "review", only_from=OPEN_FOR_RESOLUTION):
            add_flag(
                conn,
                "payout",
                payout.id,
                "review",
                f"payout {payout.reference_id} still {payout.status} after {queries} "
                "status queries: a person must decide whether it was paid",
            )


def expire_stuck_submissions(svc: Service) -> None:
    """A payout left `submitting` (the process died between writing it and recording Daraja's
    answer) may have been sent: it becomes `unknown`, to be resolved by asking."""
    cutoff = utcnow() - timedelta(seconds=svc.settings.seconds("SUBMITTING_STUCK_AFTER_SECONDS"))
    with svc.engine.begin() as conn:
        stuck = (
            conn.execute(
                sa.select(b2c_payments.c.id)
                .where(b2c_payments.c.status == "submitting")
                .where(b2c_payments.c.updated_at <= cutoff)
            )
            .scalars()
            .all()
        )
        for payout_id in stuck:
            transition(
                conn,
                payout_id,
                "unknown",
                only_from=("submitting",),
                error_description="outcome unknown: the service stopped while sending",
                next_check_at=utcnow(),
            )


# --- applying a status answer -----------------------------------------------------------------


def apply_status_callback(
    svc: Service, conn, parsed: ResultCallback, raw: str, journal_id: str, stored_kind: str
) -> str:
    """Record a Transaction Status answer against the query that asked it and apply what it
    says about the payout. An answer that beat the query's own bookkeeping waits as `orphan`
    until the query's ids are stored (see apply_waiting_status_answers). `stored_kind` is
    the kind it is stored as (callbacks.STORED_KINDS)."""
    query = _status_query_for(conn, parsed)
    payout = payout_by(conn, b2c_payments.c.id, query.payout_id) if query else None
    outcome = "orphan"
    if query and stored_kind == "status_timeout":
        outcome = "recorded"
    elif query:
        _record_answer(conn, query, parsed, raw)
        attempt = _attempt_of(conn, query)
        outcome = apply_status_answer(svc, conn, payout, attempt, parsed)
    store_result_callback(conn, parsed, raw, journal_id, stored_kind, payout, outcome)
    return outcome


def _status_query_for(conn, parsed: ResultCallback):
    """The query an answer is for: by the keys of PAYOUT_MATCH_ORDER that a query has (its own
    OriginatorConversationID and ConversationID), in that order."""
    for key, value in match_keys(parsed).items():
        if value and key in status_queries.c:
            column = status_queries.c[key]
            query = conn.execute(sa.select(status_queries).where(column == value)).first()
            if query:
                return query
    return None


def _attempt_of(conn, query):
    if not query.attempt_id:
        return None
    return conn.execute(
        sa.select(b2c_payout_attempts).where(b2c_payout_attempts.c.id == query.attempt_id)
    ).first()


def _record_answer(conn, query, parsed: ResultCallback, raw: str) -> None:
    conn.execute(
        status_queries.update()
        .where(status_queries.c.id == query.id)
        .values(
            status="answered",
            result_code=parsed.result_code,
            result_desc=parsed.result_desc,
            raw_response=raw,
            answered_at=utcnow(),
        )
    )


# The race it covers lasts milliseconds; the resolve job runs every RESOLVE_INTERVAL_SECONDS.
WAITING_ANSWERS_SWEPT_FOR = timedelta(hours=1)


def apply_waiting_status_answers(
    svc: Service, ocid: str | None = None, conversation_id: str | None = None
) -> int:
    """Apply status answers stored as `orphan` because they beat their query's bookkeeping.
    With ids: those naming them, right after a query stored them. Without: every orphan whose
    query has its ids by now (the resolve job's sweep), for an answer whose own transaction
    committed just after that look. Each answer is claimed first, so it is applied once.
    Returns how many were applied."""
    callbacks = b2c_payment_callbacks.c
    queries = status_queries.c
    if ocid or conversation_id:
        ids = [value for value in (ocid, conversation_id) if value]
        naming = sa.or_(
            callbacks.originator_conversation_id.in_(ids), callbacks.conversation_id.in_(ids)
        )
    else:  # by the time received, so that the sweep reads an index range, not every callback
        naming = callbacks.received_at >= utcnow() - WAITING_ANSWERS_SWEPT_FOR
        naming &= sa.exists().where(
            sa.or_(
                queries.originator_conversation_id == callbacks.originator_conversation_id,
                queries.conversation_id == callbacks.conversation_id,
            )
        )
    with svc.engine.begin() as conn:
        waiting = conn.execute(
            sa.select(b2c_payment_callbacks)
            .where(callbacks.kind == "status", callbacks.outcome == "orphan", naming)
            .limit(100)
        ).all()
        return sum(_apply_waiting(svc, conn, row) for row in waiting)


def _apply_waiting(svc: Service, conn: sa.Connection, row) -> bool:
    callbacks = b2c_payment_callbacks.c
    parsed = parse_result_callback(json_or_problem(row.raw_response)[0])
    query = _status_query_for(conn, parsed)
    if query is None:
        return False
    claimed = conn.execute(
        b2c_payment_callbacks.update()
        .where(callbacks.id == row.id, callbacks.outcome == "orphan")
        .values(outcome="recorded")
    ).rowcount
    if not claimed:
        return False
    _record_answer(conn, query, parsed, row.raw_response)
    payout = payout_by(conn, b2c_payments.c.id, query.payout_id)
    outcome = apply_status_answer(svc, conn, payout, _attempt_of(conn, query), parsed)
    conn.execute(
        b2c_payment_callbacks.update()
        .where(callbacks.id == row.id)
        .values(outcome=outcome, payout_id=payout.id, reference_id=payout.reference_id)
    )
    return True


def apply_status_answer(
    svc: Service, conn: sa.Connection, payout, attempt: PayoutAttempt | None, parsed: ResultCallback
) -> str:
    """What a Transaction Status result says about the payout, applied once. Only an answer
    that states the original transaction's status decides anything: `Completed` with its
    receipt (evidence of payment), a failed state, or "no such transaction". Any other answer
    (a code about the query itself, such as a bad initiator or identifier, or code 0 without a
    TransactionStatus) is "no answer yet": the payout is asked about again on its schedule."""
    code = parsed.result_code
    if code in not_found_codes(svc.settings):
        return _apply_not_found(svc, conn, payout, attempt, parsed)
    state = stated_status(parsed)
    original = _as_original(parsed, payout, attempt)
    if state == "completed" and original.receipt:
        return settle_payout(conn, payout, attempt, original)
    if state in FAILED_STATES:
        reason = text_or_none(parsed.parameters.get("TransactionReason"))
        failed = dataclasses.replace(
            original,
            result_code=state,
            result_desc=f"transaction {state}" + (f": {reason}" if reason else ""),
        )
        return settle_payout(conn, payout, attempt, failed)
    return "recorded"


def stated_status(parsed: ResultCallback) -> str | None:
    """The original transaction's TransactionStatus, lower-cased, from an answer whose own
    ResultCode is 0; None when the answer states none."""
    if parsed.result_code != "0":
        return None
    state = text_or_none(parsed.parameters.get("TransactionStatus"))
    return state.lower() if state else None


def _apply_not_found(svc, conn, payout, attempt, parsed: ResultCallback) -> str:
    """'No such transaction' proves the attempt never arrived only for an `unknown` payout whose
    attempt went out long enough ago (and is still its current one, with no attempt paid);
    then it has failed and may be retried."""
    grace = timedelta(seconds=svc.settings.integer("STATUS_NOT_FOUND_AFTER_SECONDS"))
    sent_at = attempt.sent_at if attempt else None
    if payout.status != "unknown" or sent_at is None or utcnow() - sent_at < grace:
        return "recorded"
    moved = transition(
        conn,
        payout.id,
        "failed",
        on_attempt(attempt.originator_conversation_id),
        NO_EVIDENCE,
        only_from=("unknown",),
        reason_code=parsed.result_code,
        error_description="no such transaction at M-Pesa: the request never reached it",
    )
    if moved:
        close_attempt(conn, attempt, "not_found", parsed.result_code, parsed.result_desc)
    return "applied" if moved else "recorded"


def _as_original(parsed: ResultCallback, payout, attempt) -> ResultCallback:
    """The status answer read as a result of the original attempt: its OCID, and its receipt,
    which only ReceiptNo states (the answer's own TransactionID is the query's)."""
    receipt = text_or_none(parsed.parameters.get("ReceiptNo"))
    ocid = attempt.originator_conversation_id if attempt else payout.originator_conversation_id
    return dataclasses.replace(parsed, originator_conversation_id=ocid, transaction_id=receipt)


# --- the retry job ----------------------------------------------------------------------------


def retry_failed_payouts(svc: Service) -> int:
    """New attempts for failed payouts whose code is retryable, then a flag on each that has
    no attempt left (flag_exhausted_payouts). Returns how many attempts were sent."""
    settings = svc.settings
    cutoff = utcnow() - timedelta(seconds=settings.integer("RETRY_DELAY_SECONDS"))
    with svc.engine.connect() as conn:
        due = conn.execute(
            sa.select(b2c_payments)
            .where(b2c_payments.c.status == "failed")
            .where(b2c_payments.c.reason_code.in_(sorted(retryable_codes(settings))))
            .where(b2c_payments.c.attempt_count >= 1)  # never the old system's rows
            .where(b2c_payments.c.attempt_count < settings.integer("PAYOUT_MAX_ATTEMPTS"))
            .where(b2c_payments.c.updated_at <= cutoff)
            .where(NO_EVIDENCE)
            .limit(100)
        ).all()
    sent = 0
    for payout in due:
        attempt = start_new_attempt(svc, payout)
        if attempt:
            send_attempt(svc, payout.id, attempt)
            sent += 1
    flag_exhausted_payouts(svc)
    return sent


EXHAUSTED_FLAG = (
    sa.exists()
    .where(payment_flags.c.subject_type == "payout")
    .where(payment_flags.c.subject_id == b2c_payments.c.id)
    .where(payment_flags.c.flag == "attempts_exhausted")
)


def flag_exhausted_payouts(svc: Service) -> int:
    """Flag `attempts_exhausted` (with an audit row and an alert) each failed payout whose code
    would be retried but whose last allowed attempt it was, once, and never one with evidence
    of payment. Returns how many were flagged."""
    settings = svc.settings
    with svc.engine.connect() as conn:
        exhausted = conn.execute(
            sa.select(b2c_payments)
            .where(b2c_payments.c.status == "failed")
            .where(b2c_payments.c.reason_code.in_(sorted(retryable_codes(settings))))
            .where(b2c_payments.c.attempt_count >= settings.integer("PAYOUT_MAX_ATTEMPTS"))
            .where(b2c_payments.c.attempt_count >= 1)  # never the old system's rows
            .where(NO_EVIDENCE, ~EXHAUSTED_FLAG)
            .limit(100)
        ).all()
    return sum(_flag_exhausted(svc, payout) for payout in exhausted)


def _flag_exhausted(svc: Service, payout) -> bool:
    """One payout's flag. The compare-and-set on its row (still failed on the same attempt,
    still without evidence) holds the row, so a second process flagging it at the same moment
    waits, then finds the flag and leaves it."""
    with svc.engine.begin() as conn:
        held = conn.execute(
            b2c_payments.update()
            .where(b2c_payments.c.id == payout.id, b2c_payments.c.status == "failed")
            .where(b2c_payments.c.attempt_count == payout.attempt_count, NO_EVIDENCE)
            .values(status="failed")
        ).rowcount
        flagged = conn.execute(
            sa.select(b2c_payments.c.id).where(b2c_payments.c.id == payout.id, EXHAUSTED_FLAG)
        ).first()
        if not held or flagged:
            return False
        note = (
            f"payout {payout.reference_id} failed on attempt {payout.attempt_count} of "
            f"{svc.settings.integer('PAYOUT_MAX_ATTEMPTS')} (PAYOUT_MAX_ATTEMPTS) with retryable "
            f"code {payout.reason_code}: no attempt is left; a person must decide whether to pay "
            "it another way"
        )
        add_flag(conn, "payout", payout.id, "attempts_exhausted", note)
        audit(conn, payout, SYSTEM_ACTOR, "attempts_exhausted", "failed", note=note)
    return True
