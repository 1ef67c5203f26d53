"""Reversals of collections (refunds): one row per attempt, written ahead before Daraja is
called; every reversal result and status answer stored whole; the collections' audit trail;
and on a C2B payment, when the service reversed it and the reversal's receipt.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID = sa.String(36)
MONEY = sa.Numeric(15, 2)
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "reversals",
        sa.Column("id", ID, primary_key=True),
        sa.Column("payment_kind", sa.String(10), nullable=False),
        sa.Column("payment_id", ID, nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("original_receipt", sa.String(255), nullable=False),
        sa.Column("receiver_party", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("originator_conversation_id", sa.String(255)),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("receipt", sa.String(255)),
        sa.Column("result_code", sa.String(50)),
        sa.Column("result_desc", sa.Text),
        sa.Column("check_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_check_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint(
            "payment_kind", "payment_id", "attempt_no", name="uq_reversals_attempt"
        ),
    )
    op.create_index("ix_reversals_status", "reversals", ["status"])
    op.create_index("ix_reversals_original_receipt", "reversals", ["original_receipt"])
    op.create_index(
        "ix_reversals_originator_conversation_id", "reversals", ["originator_conversation_id"]
    )
    op.create_table(
        "reversal_callbacks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("reversal_id", ID),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("result_code", sa.String(50)),
        sa.Column("result_desc", sa.Text),
        sa.Column("originator_conversation_id", sa.String(255)),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("transaction_id", sa.String(255)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("journal_id", ID),
        sa.Column("raw_response", LONGTEXT),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_reversal_callbacks_reversal_id", "reversal_callbacks", ["reversal_id"])
    op.create_table(
        "collection_audit",
        sa.Column("id", ID, primary_key=True),
        sa.Column("payment_kind", sa.String(10), nullable=False),
        sa.Column("payment_id", ID, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("status_before", sa.String(50)),
        sa.Column("status_after", sa.String(50)),
        sa.Column("receipt", sa.String(255)),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "ix_collection_audit_payment", "collection_audit", ["payment_kind", "payment_id"]
    )
    op.add_column("c2b_payments", sa.Column("reversed_at", sa.DateTime))
    op.add_column("c2b_payments", sa.Column("reversal_receipt", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("c2b_payments") as batch:
        batch.drop_column("reversal_receipt")
        batch.drop_column("reversed_at")
    op.drop_table("collection_audit")
    op.drop_table("reversal_callbacks")
    op.drop_table("reversals")
