"""Alert bookkeeping on flags (when a person was told) and the B2C account balances the balance
job records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payment_flags", sa.Column("notified_at", sa.DateTime))
    op.create_index("ix_payment_flags_notified_at", "payment_flags", ["notified_at"])
    op.create_table(
        "account_balances",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account", sa.String(100), nullable=False),
        sa.Column("currency", sa.String(10)),
        sa.Column("available", sa.Numeric(15, 2)),
        sa.Column("checked_at", sa.DateTime, nullable=False),
        sa.Column("journal_id", sa.String(36)),
    )
    op.create_index("ix_account_balances_checked_at", "account_balances", ["checked_at"])


def downgrade() -> None:
    op.drop_table("account_balances")
    op.drop_index("ix_payment_flags_notified_at", table_name="payment_flags")
    with op.batch_alter_table("payment_flags") as batch:
        batch.drop_column("notified_at")
