"""The append-only audit trail of what operators did to payouts (resolutions, acknowledgements,
re-queries): who (the API key's name), when, why, and the status before and after.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payout_audit",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("payout_id", sa.String(36), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("status_before", sa.String(50)),
        sa.Column("status_after", sa.String(50)),
        sa.Column("receipt", sa.String(255)),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_payout_audit_payout_id", "payout_audit", ["payout_id"])


def downgrade() -> None:
    op.drop_table("payout_audit")
