"""Indexes on the completion times of payouts and collections: reconciliation selects what was
completed in its period as well as what was started in it, so that a payment that crosses
midnight is checked on the day its money moved.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_b2c_payments_completed_at", "b2c_payments", ["completed_at"])
    op.create_index("ix_payments_completed_at", "payments", ["completed_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_completed_at", table_name="payments")
    op.drop_index("ix_b2c_payments_completed_at", table_name="b2c_payments")
