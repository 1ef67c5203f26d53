"""The name of the API key that created each payout, so that an approval can be refused to the
key that asked for it (maker-checker). The old system's rows and payouts made before this have
none.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("b2c_payments", sa.Column("created_by", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("b2c_payments") as batch:
        batch.drop_column("created_by")
