"""Flags: what a person should look at (a mismatch, a conflict, a payout for review), recorded
in payment_flags, logged as an ALERT and emailed by the alerts job."""

from __future__ import annotations

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.ids import new_id
from mpesa_service.storage import b2c_payments, c2b_payments, payment_flags, payments, utcnow


def add_flag(conn: sa.Connection, subject_type: str, subject_id: str, flag: str, detail: str):
    """Record something a person should look at, and say so in the log."""
    conn.execute(
        payment_flags.insert().values(
            id=new_id(),
            subject_type=subject_type,
            subject_id=subject_id,
            flag=flag,
            detail=detail,
            created_at=utcnow(),
        )
    )
    log.warning("ALERT %s on %s: %s", flag, subject_name(conn, subject_type, subject_id), detail)


# A flag's subject as a person knows it: its name, found by its id.
SUBJECT_NAMES = {
    "payout": sa.select(b2c_payments.c.reference_id).where(
        b2c_payments.c.id == sa.bindparam("subject_id")
    ),
    "payment": sa.select(payments.c.checkout_request_id).where(
        payments.c.id == sa.bindparam("subject_id")
    ),
    "c2b_payment": sa.select(c2b_payments.c.trans_id).where(
        c2b_payments.c.id == sa.bindparam("subject_id")
    ),
}


def subject_name(conn: sa.Connection, subject_type: str, subject_id: str) -> str:
    """A payout by its reference_id, a collection by its CheckoutRequestID and a C2B payment by
    its receipt, with the internal id after it ("payout ref-123 (id 8f2...)"); anything else,
    or a row without that name, by its id."""
    query = SUBJECT_NAMES.get(subject_type)
    name = query is not None and conn.execute(query, {"subject_id": subject_id}).scalar()
    return f"{subject_type} {name} (id {subject_id})" if name else f"{subject_type} {subject_id}"


def flags_of(conn: sa.Connection, subject_type: str, subject_id: str) -> list[str]:
    rows = conn.execute(
        sa.select(payment_flags.c.flag)
        .where(payment_flags.c.subject_type == subject_type)
        .where(payment_flags.c.subject_id == subject_id)
        .order_by(payment_flags.c.created_at)
    )
    return list(dict.fromkeys(rows.scalars()))
