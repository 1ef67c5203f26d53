"""What an operator may do to a payout automation could not settle, and the audit trail of it.

A payout in `review` or `unknown` is resolved as paid (with the M-Pesa receipt, which must not
belong to another payout) or not paid (it becomes `failed` with the code `not_paid`, which the
retry job treats as retryable: a new attempt, because a person decided so), never once an
attempt carries evidence that it was paid (evidence beats belief; see payouts). A status
conflict is acknowledged with a note. Every action is a row in `payout_audit`: who (the API
key's name), when, why, the status before and after. The API, the CLI and the console all call
these."""

from __future__ import annotations

import re

import sqlalchemy as sa

from mpesa_service.context import ApiError, Service
from mpesa_service.payouts import (
    NO_EVIDENCE,
    audit,
    close_attempt,
    current_attempt,
    paid_attempts,
    payout_by,
    transition,
)
from mpesa_service.resolution import ask_status
from mpesa_service.storage import b2c_payments, payment_flags, utcnow

RESOLVABLE = ("review", "unknown")
RECEIPT = re.compile(r"^[A-Z0-9]{10}$")
NOT_PAID_CODE = "not_paid"


def resolve_payout(
    svc: Service,
    reference_id: str,
    *,
    outcome: str,
    actor: str,
    receipt: str | None = None,
    note: str = "",
) -> dict:
    """Apply an operator's decision; ApiError (409/400/404) says why one cannot be applied."""
    if not outcome.strip():
        raise ApiError(400, "outcome: choose paid or not paid; none was chosen", field="outcome")
    if outcome not in ("paid", "not_paid", "acknowledge"):
        raise ApiError(
            400, f"outcome: paid, not_paid or acknowledge, not {outcome!r}", field="outcome"
        )
    if not note.strip():
        raise ApiError(400, "note: say why (it goes into the audit trail)", field="note")
    with svc.engine.begin() as conn:
        payout = _payout_for_update(conn, reference_id)
        if outcome == "acknowledge":
            after = _acknowledge(conn, payout)
        elif outcome == "paid":
            after = _resolve_paid(conn, payout, (receipt or "").strip().upper())
        else:
            after = _resolve_not_paid(conn, payout)
        if outcome != "acknowledge":
            _close_review_flags(conn, payout.id)
        audit(conn, payout, actor, outcome, after, receipt=receipt, note=note)
    return {"reference_id": reference_id, "status": after, "outcome": outcome}


def _payout_for_update(conn: sa.Connection, reference_id: str):
    payout = payout_by(conn, b2c_payments.c.reference_id, reference_id)
    if payout is None:
        raise ApiError(404, f"no payout with reference_id {reference_id!r}")
    return payout


def _require_resolvable(payout) -> None:
    if payout.status not in RESOLVABLE:
        raise ApiError(
            409,
            f"payout {payout.reference_id} is {payout.status}: only review or "
            "unknown payouts can be resolved",
        )


def _resolve_paid(conn: sa.Connection, payout, receipt: str) -> str:
    _require_resolvable(payout)
    if not RECEIPT.match(receipt):
        raise ApiError(
            400,
            f"receipt: an M-Pesa receipt is 10 letters and digits, not {receipt!r}",
            field="receipt",
        )
    owner = payout_by(conn, b2c_payments.c.transaction_id, receipt)
    if owner is not None and owner.id != payout.id:
        raise ApiError(
            409,
            f"receipt {receipt} already belongs to payout {owner.reference_id}",
            field="receipt",
        )
    moved = transition(
        conn,
        payout.id,
        "completed",
        only_from=RESOLVABLE,
        transaction_id=receipt,
        completed_at=utcnow(),
        reason_code="0",
        result_desc="resolved as paid by an operator",
    )
    if not moved:
        raise ApiError(409, f"payout {payout.reference_id} changed while resolving; look again")
    return "completed"


def _resolve_not_paid(conn: sa.Connection, payout) -> str:
    _require_resolvable(payout)
    _refuse_against_evidence(conn, payout)
    moved = transition(
        conn,
        payout.id,
        "failed",
        NO_EVIDENCE,
        only_from=RESOLVABLE,
        reason_code=NOT_PAID_CODE,
        error_description="resolved as not paid by an operator",
    )
    if not moved:
        raise ApiError(409, f"payout {payout.reference_id} changed while resolving; look again")
    close_attempt(conn, current_attempt(conn, payout), "failed", NOT_PAID_CODE, None)
    return "failed"


def _refuse_against_evidence(conn: sa.Connection, payout) -> None:
    paid = paid_attempts(conn, payout.id)
    if paid:
        receipts = ", ".join(f"attempt {a.attempt_no}: {a.receipt}" for a in paid)
        raise ApiError(
            409,
            f"payout {payout.reference_id} cannot be resolved as not paid: Daraja reported it "
            f"paid ({receipts})",
        )


def _close_review_flags(conn: sa.Connection, payout_id: str) -> None:
    conn.execute(
        payment_flags.update()
        .where(payment_flags.c.subject_type == "payout", payment_flags.c.subject_id == payout_id)
        .where(payment_flags.c.flag == "review", payment_flags.c.resolved_at.is_(None))
        .values(resolved_at=utcnow())
    )


def _acknowledge(conn: sa.Connection, payout) -> str:
    acknowledged = conn.execute(
        payment_flags.update()
        .where(payment_flags.c.subject_type == "payout")
        .where(payment_flags.c.subject_id == payout.id)
        .where(payment_flags.c.flag == "status_conflict")
        .where(payment_flags.c.resolved_at.is_(None))
        .values(resolved_at=utcnow())
    ).rowcount
    if not acknowledged:
        raise ApiError(409, f"payout {payout.reference_id} has no open conflict to acknowledge")
    return payout.status


def requery_payout(svc: Service, reference_id: str, *, actor: str) -> dict:
    """Ask Daraja about the payout now (a Transaction Status query outside the schedule)."""
    with svc.engine.begin() as conn:
        payout = _payout_for_update(conn, reference_id)
        if payout.status not in ("pending", "unknown", "review"):
            raise ApiError(409, f"payout {reference_id} is {payout.status}: nothing to ask")
        step = payout.check_count
        claimed = conn.execute(
            b2c_payments.update()
            .where(b2c_payments.c.id == payout.id, b2c_payments.c.check_count == step)
            .values(check_count=step + 1)
        ).rowcount
        if not claimed:
            raise ApiError(409, f"payout {reference_id} is being queried already; try again")
        audit(conn, payout, actor, "requery", payout.status, note="status query sent now")
    ask_status(svc, payout, step)
    return {"reference_id": reference_id, "status": "queried", "step": step}
