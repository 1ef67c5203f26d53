"""Bulk payouts: batches uploaded from a file, their rows (each sent as an ordinary payout
keyed by its reference) and the batches' audit trail.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.String(36)
MONEY = sa.Numeric(15, 2)


def upgrade() -> None:
    op.create_table(
        "payout_batches",
        sa.Column("id", ID, primary_key=True),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("file_name", sa.String(255)),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("total_amount", MONEY, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("decided_by", sa.String(100)),
        sa.Column("decided_at", sa.DateTime),
        sa.Column("decision_note", sa.Text),
        sa.Column("claimed_until", sa.DateTime),
        sa.Column("claim_owner", sa.String(64)),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("emailed_at", sa.DateTime),
    )
    op.create_index("ix_payout_batches_status", "payout_batches", ["status"])
    op.create_table(
        "payout_batch_rows",
        sa.Column("id", ID, primary_key=True),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("reference_id", sa.String(255), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("phone_number", sa.String(20), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("description", sa.String(100), nullable=False),
        sa.Column("payout_id", ID),
        sa.Column("refused", sa.Text),
        sa.UniqueConstraint("batch_id", "line_no", name="uq_payout_batch_rows_line"),
    )
    op.create_index("ix_payout_batch_rows_reference_id", "payout_batch_rows", ["reference_id"])
    op.create_table(
        "payout_batch_audit",
        sa.Column("id", ID, primary_key=True),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_payout_batch_audit_batch_id", "payout_batch_audit", ["batch_id"])


def downgrade() -> None:
    op.drop_table("payout_batch_audit")
    op.drop_table("payout_batch_rows")
    op.drop_table("payout_batches")
