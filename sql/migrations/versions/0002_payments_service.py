"""What the payments service adds: STK and B2C v3 columns on the old tables (all nullable or
defaulted), and the tables for attempts, idempotency keys, status queries, STK callbacks, the
callback journal's bookkeeping and flags.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(36)
MONEY = sa.Numeric(15, 2)
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

ADDED_COLUMNS = {
    "payments": [
        sa.Column("checkout_request_id", sa.String(255)),
        sa.Column("merchant_request_id", sa.String(255)),
        sa.Column("phone_number", sa.String(20)),
        sa.Column("mpesa_receipt", sa.String(255)),
        sa.Column("result_code", sa.String(50)),
        sa.Column("result_desc", sa.Text),
        sa.Column("account_reference", sa.String(20)),
        sa.Column("description", sa.String(50)),
        sa.Column("paid_amount", MONEY),
        sa.Column("error_code", sa.String(50)),
        sa.Column("error_message", sa.Text),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("query_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_query_at", sa.DateTime),
    ],
    "b2c_payments": [
        sa.Column("originator_conversation_id", sa.String(255)),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("command_id", sa.String(50)),
        sa.Column("reason", sa.String(100)),
        sa.Column("description", sa.String(255)),
        sa.Column("result_desc", sa.Text),
        sa.Column("paid_amount", MONEY),
        sa.Column("receiver_name", sa.String(255)),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("check_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_check_at", sa.DateTime),
        sa.Column("claim_owner", sa.String(64)),
        sa.Column("claim_expires_at", sa.DateTime),
    ],
    "b2c_payment_callbacks": [
        sa.Column("result_code_text", sa.String(50)),
        sa.Column("result_type", sa.String(10)),
        sa.Column("kind", sa.String(20)),
        sa.Column("payout_id", ID),
        sa.Column("receiver_name", sa.String(255)),
        sa.Column("outcome", sa.String(20)),
        sa.Column("journal_id", ID),
    ],
}

# (name, table, columns, unique)
ADDED_INDEXES = [
    ("uq_payments_checkout_request_id", "payments", ["checkout_request_id"], True),
    ("ix_payments_mpesa_receipt", "payments", ["mpesa_receipt"], False),
    ("ix_payments_status", "payments", ["status"], False),
    (
        "ix_b2c_payments_originator_conversation_id",
        "b2c_payments",
        ["originator_conversation_id"],
        False,
    ),
    ("ix_b2c_payments_conversation_id", "b2c_payments", ["conversation_id"], False),
    ("ix_b2c_payment_callbacks_payout_id", "b2c_payment_callbacks", ["payout_id"], False),
    (
        "ix_b2c_payment_callbacks_originator_conversation_id",
        "b2c_payment_callbacks",
        ["originator_conversation_id"],
        False,
    ),
]


def upgrade() -> None:
    for table, columns in ADDED_COLUMNS.items():
        for column in columns:
            op.add_column(table, column)
    for name, table, columns, unique in ADDED_INDEXES:
        op.create_index(name, table, columns, unique=unique)
    create_new_tables()


def create_new_tables() -> None:
    op.create_table(
        "b2c_payout_attempts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("payout_id", ID, nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("originator_conversation_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("response_code", sa.String(50)),
        sa.Column("error_code", sa.String(50)),
        sa.Column("error_message", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.Column("answered_at", sa.DateTime),
        sa.UniqueConstraint("originator_conversation_id", name="uq_b2c_payout_attempts_ocid"),
        sa.UniqueConstraint("payout_id", "attempt_no", name="uq_b2c_payout_attempts_number"),
    )
    op.create_index(
        "ix_b2c_payout_attempts_conversation_id", "b2c_payout_attempts", ["conversation_id"]
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("scope", sa.String(30), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("subject_id", ID),
        sa.Column("response_status", sa.Integer),
        sa.Column("response_body", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "status_queries",
        sa.Column("id", ID, primary_key=True),
        sa.Column("payout_id", ID, nullable=False),
        sa.Column("attempt_id", ID),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("originator_conversation_id", sa.String(255)),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result_code", sa.String(50)),
        sa.Column("result_desc", sa.Text),
        sa.Column("raw_response", LONGTEXT),
        sa.Column("requested_at", sa.DateTime, nullable=False),
        sa.Column("answered_at", sa.DateTime),
        sa.UniqueConstraint("attempt_id", "step", name="uq_status_queries_attempt_step"),
    )
    op.create_index("ix_status_queries_payout_id", "status_queries", ["payout_id"])
    op.create_index(
        "ix_status_queries_originator_conversation_id",
        "status_queries",
        ["originator_conversation_id"],
    )
    op.create_table(
        "stk_callbacks",
        sa.Column("id", ID, primary_key=True),
        sa.Column("checkout_request_id", sa.String(255)),
        sa.Column("merchant_request_id", sa.String(255)),
        sa.Column("payment_id", ID),
        sa.Column("result_code", sa.String(50)),
        sa.Column("result_desc", sa.Text),
        sa.Column("amount", MONEY),
        sa.Column("mpesa_receipt", sa.String(255)),
        sa.Column("phone_number", sa.String(20)),
        sa.Column("transaction_date", sa.DateTime),
        sa.Column("outcome", sa.String(20)),
        sa.Column("journal_id", ID),
        sa.Column("raw_response", LONGTEXT),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "ix_stk_callbacks_checkout_request_id", "stk_callbacks", ["checkout_request_id"]
    )
    op.create_index("ix_stk_callbacks_payment_id", "stk_callbacks", ["payment_id"])
    op.create_table(
        "callback_journal",
        sa.Column("id", ID, primary_key=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("applied_at", sa.DateTime),
    )
    op.create_index("ix_callback_journal_state", "callback_journal", ["state"])
    op.create_table(
        "payment_flags",
        sa.Column("id", ID, primary_key=True),
        sa.Column("subject_type", sa.String(20), nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("flag", sa.String(50), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("resolved_at", sa.DateTime),
    )
    op.create_index("ix_payment_flags_subject", "payment_flags", ["subject_type", "subject_id"])
    op.create_index("ix_payment_flags_flag", "payment_flags", ["flag"])


def downgrade() -> None:
    for table in (
        "payment_flags",
        "callback_journal",
        "stk_callbacks",
        "status_queries",
        "idempotency_keys",
        "b2c_payout_attempts",
    ):
        op.drop_table(table)
    for name, table, _columns, _unique in ADDED_INDEXES:
        op.drop_index(name, table_name=table)
    with_batch = op.batch_alter_table
    for table, columns in ADDED_COLUMNS.items():
        with with_batch(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
