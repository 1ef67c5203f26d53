"""Maker-checker: a payout above APPROVAL_ABOVE waits `awaiting_approval` until an operator key
other than the one that created it approves it (then it is sent like any payout) or rejects
it (`rejected`, never sent); the expiry job ends those left waiting APPROVAL_EXPIRES_HOURS as
`expired`, never sent.

Approving claims the payout with a compare-and-set (`awaiting_approval` -> `submitting`, with
its first attempt written in the same transaction), so of two approvals at once one sends and
the other is told the payout moved on. The limits are checked again at approval: a payout that
would now pass one is refused and keeps waiting (the room may come back, say the next day; a
person may reject it meanwhile). Every decision, every refused one and every expiry is a row
of the payout's audit trail: who (the key's name), when, why. The API and the console call
these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from mpesa_service.context import ApiError, Service
from mpesa_service.payouts import (
    SYSTEM_ACTOR,
    audit,
    check_payout_limits,
    insert_attempt,
    new_attempt,
    payout_by,
    payout_summary,
    request_of,
    send_attempt,
    transition,
)
from mpesa_service.storage import b2c_payments, retry_deadlocked, utcnow

AWAITING = "awaiting_approval"
VERBS = {"approved": "approve", "rejected": "reject"}


@dataclass(frozen=True)
class Decision:
    """An operator's decision on a payout awaiting approval: by which key, and why."""

    reference_id: str
    key_name: str
    reason: str


class Refused(ApiError):
    """A decision that is not applied but belongs in the audit trail (the maker deciding on
    its own payout, a limit the payout would now pass)."""


def approve_payout(svc: Service, decision: Decision) -> dict:
    """Approve a waiting payout and send its first attempt through the ordinary send path;
    the payout as POST /payouts answers it. 403 for its creator's key, 409 for a payout not
    awaiting approval (or approved by another at this moment), 422 for a limit."""
    attempt = new_attempt()

    def claim(conn: sa.Connection, payout) -> str:
        try:
            check_payout_limits(conn, svc.settings, request_of(payout), excluding=payout.id)
        except ApiError as error:
            raise Refused(error.status, f"not approved: {error.message}", **error.extra) from None
        moved = transition(
            conn,
            payout.id,
            "submitting",
            only_from=(AWAITING,),
            originator_conversation_id=attempt["originator_conversation_id"],
            attempt_count=1,
        )
        if not moved:
            raise _moved_on(conn, payout)
        insert_attempt(conn, payout.id, 1, attempt)
        return "submitting"

    payout = _decide(svc, decision, "approved", claim)
    send_attempt(svc, payout.id, attempt)
    return payout_summary(svc, payout.id)


def reject_payout(svc: Service, decision: Decision) -> dict:
    """End a waiting payout `rejected`, never sent; the reason is required."""
    if not decision.reason.strip():
        raise ApiError(
            400, "reason: say why it is rejected (it goes into the audit trail)", field="reason"
        )

    def end(conn: sa.Connection, payout) -> str:
        moved = transition(
            conn,
            payout.id,
            "rejected",
            only_from=(AWAITING,),
            error_description=f"rejected by {decision.key_name}: {decision.reason}"[:1000],
        )
        if not moved:
            raise _moved_on(conn, payout)
        return "rejected"

    payout = _decide(svc, decision, "rejected", end)
    return payout_summary(svc, payout.id)


def _decide(svc: Service, decision: Decision, action: str, apply):
    """Check and apply a decision in one transaction, audited; a refusal is audited in a
    transaction of its own (the decision's rolled back) and then raised."""

    def run():
        with svc.engine.begin() as conn:
            payout = _waiting_payout(conn, decision.reference_id)
            _refuse_the_maker(payout, decision, action)
            after = apply(conn, payout)
            audit(conn, payout, decision.key_name, action, after, note=decision.reason)
            return payout

    try:
        return retry_deadlocked(run)
    except Refused as refused:
        _audit_refusal(svc, decision, action, refused.message)
        raise


def _waiting_payout(conn: sa.Connection, reference_id: str):
    payout = payout_by(conn, b2c_payments.c.reference_id, reference_id)
    if payout is None:
        raise ApiError(404, f"no payout with reference_id {reference_id!r}")
    if payout.status != AWAITING:
        raise ApiError(
            409,
            f"payout {reference_id} is {payout.status}, not awaiting approval",
            current_status=payout.status,
        )
    return payout


def _refuse_the_maker(payout, decision: Decision, action: str) -> None:
    if payout.created_by is not None and payout.created_by == decision.key_name:
        raise Refused(
            403,
            f"API key {decision.key_name} created payout {payout.reference_id}: another "
            f"operator's key must {VERBS[action]} it",
        )


def _moved_on(conn: sa.Connection, payout) -> ApiError:
    """Another decision (or the expiry job) moved the payout first."""
    now = payout_by(conn, b2c_payments.c.id, payout.id)
    return ApiError(
        409,
        f"payout {payout.reference_id} is {now.status}, not awaiting approval "
        "(decided by another at the same moment)",
        current_status=now.status,
    )


def _audit_refusal(svc: Service, decision: Decision, action: str, why: str) -> None:
    with svc.engine.begin() as conn:
        payout = payout_by(conn, b2c_payments.c.reference_id, decision.reference_id)
        note = f"{why}; reason given: {decision.reason}" if decision.reason else why
        refused = f"{VERBS[action]}_refused"
        audit(conn, payout, decision.key_name, refused, payout.status, note=note)


# --- the expiry job -------------------------------------------------------------------------


def expire_approvals(svc: Service, now: datetime | None = None) -> int:
    """End payouts awaiting approval for APPROVAL_EXPIRES_HOURS (0: never) as `expired`, each
    claimed by its compare-and-set (an approval at the same moment wins or loses whole).
    Returns how many it ended."""
    hours = svc.settings.integer("APPROVAL_EXPIRES_HOURS")
    if not hours:
        return 0
    cutoff = (now or utcnow()) - timedelta(hours=hours)
    old_enough = b2c_payments.c.initiated_at <= cutoff
    with svc.engine.connect() as conn:
        due = conn.execute(
            sa.select(b2c_payments.c.id)
            .where(b2c_payments.c.status == AWAITING, old_enough)
            .order_by(b2c_payments.c.initiated_at)
            .limit(200)
        ).scalars()
        due = list(due)
    return sum(_expire(svc, payout_id, old_enough, hours) for payout_id in due)


def _expire(svc: Service, payout_id: str, old_enough, hours: int) -> bool:
    note = f"not approved within APPROVAL_EXPIRES_HOURS ({hours} h): never sent"
    with svc.engine.begin() as conn:
        payout = payout_by(conn, b2c_payments.c.id, payout_id)
        moved = transition(
            conn, payout_id, "expired", old_enough, only_from=(AWAITING,), error_description=note
        )
        if moved:
            audit(conn, payout, SYSTEM_ACTOR, "expired", "expired", note=note)
    return moved
