"""C2B payments (paybill and till) that customers start themselves: one row per M-Pesa receipt,
from its confirmation or from Pull Transactions, with the raw body it came in.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
MONEY = sa.Numeric(15, 2)


def upgrade() -> None:
    op.create_table(
        "c2b_payments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("trans_id", sa.String(255)),
        sa.Column("transaction_type", sa.String(50)),
        sa.Column("kind", sa.String(10)),
        sa.Column("amount", MONEY),
        sa.Column("msisdn", sa.String(255)),
        sa.Column("bill_ref_number", sa.String(255)),
        sa.Column("invoice_number", sa.String(255)),
        sa.Column("business_short_code", sa.String(20)),
        sa.Column("first_name", sa.String(100)),
        sa.Column("middle_name", sa.String(100)),
        sa.Column("last_name", sa.String(100)),
        sa.Column("trans_time", sa.DateTime),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("raw_response", LONGTEXT),
        sa.Column("journal_id", sa.String(36)),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("confirmed_at", sa.DateTime),
        sa.UniqueConstraint("trans_id", name="uq_c2b_payments_trans_id"),
    )
    op.create_index("ix_c2b_payments_bill_ref_number", "c2b_payments", ["bill_ref_number"])
    op.create_index("ix_c2b_payments_trans_time", "c2b_payments", ["trans_time"])
    op.create_index("ix_c2b_payments_received_at", "c2b_payments", ["received_at"])


def downgrade() -> None:
    op.drop_table("c2b_payments")
