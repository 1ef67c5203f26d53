"""The Daraja OAuth token shared by every process of a deployment: Daraja may revoke an app's
token when it issues another, so processes that each fetched their own would revoke each
other's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daraja_tokens",
        sa.Column("app", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(2048), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("daraja_tokens")
