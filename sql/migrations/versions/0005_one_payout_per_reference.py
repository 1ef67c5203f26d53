"""One payout per reference_id (a unique index), the receipt each attempt was paid with (the
evidence that money moved), and the lock rows that serialise the daily-limit checks.

If payouts already share a reference_id, the upgrade names them and stops before changing
anything: which of them the reference should keep is a person's decision.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UNIQUE_REFERENCE = "uq_b2c_payments_reference_id"


def upgrade() -> None:
    if not context.is_offline_mode():
        refuse_shared_references(op.get_bind())
    for name in reference_indexes():
        op.drop_index(name, table_name="b2c_payments")
    op.create_index(UNIQUE_REFERENCE, "b2c_payments", ["reference_id"], unique=True)
    op.add_column("b2c_payout_attempts", sa.Column("receipt", sa.String(255)))
    op.create_table(
        "payout_limit_locks",
        sa.Column("name", sa.String(100), primary_key=True),
    )


def refuse_shared_references(connection: sa.Connection) -> None:
    shared = connection.execute(
        sa.text(
            "SELECT reference_id, COUNT(*) AS payouts FROM b2c_payments "
            "WHERE reference_id IS NOT NULL GROUP BY reference_id HAVING COUNT(*) > 1 "
            "ORDER BY reference_id"
        )
    ).all()
    if not shared:
        return
    named = "; ".join(f"{row.reference_id!r} ({row.payouts} payouts)" for row in shared[:20])
    more = f" and {len(shared) - 20} more" if len(shared) > 20 else ""
    raise RuntimeError(
        f"b2c_payments.reference_id must be unique, but {len(shared)} references are shared: "
        f"{named}{more}. Nothing was changed. Give each of those payouts its own reference_id "
        "(SELECT id, reference_id, status FROM b2c_payments WHERE reference_id = '...'), then "
        "run migrate again."
    )


def reference_indexes() -> list[str]:
    """The existing non-unique indexes on b2c_payments.reference_id alone: ours, or the old PHP
    system's `idx_reference_id` on an adopted database."""
    if context.is_offline_mode():
        return ["ix_b2c_payments_reference_id"]
    inspector = sa.inspect(op.get_bind())
    return [
        index["name"]
        for index in inspector.get_indexes("b2c_payments")
        if index["column_names"] == ["reference_id"] and not index.get("unique")
    ]


def downgrade() -> None:
    op.drop_table("payout_limit_locks")
    with op.batch_alter_table("b2c_payout_attempts") as batch:
        batch.drop_column("receipt")
    op.drop_index(UNIQUE_REFERENCE, table_name="b2c_payments")
    op.create_index("ix_b2c_payments_reference_id", "b2c_payments", ["reference_id"])
