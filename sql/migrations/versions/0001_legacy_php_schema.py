"""The old PHP system's three tables, exactly as its audit lists them.

On a fresh database this creates them. On a database the PHP system created (no Alembic history)
it adopts them: existing tables and rows are kept untouched, any audit column a table lacks is
added, and an audit index is created only where no index on that column exists yet.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def payments_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36)),
        sa.Column("booking_id", sa.String(36)),
        sa.Column("amount", sa.Numeric(15, 2)),
        sa.Column("status", sa.String(50), server_default="pending"),
        sa.Column("method", sa.String(50)),
        sa.Column("transaction_reference", sa.String(255)),
        sa.Column("created_at", sa.TIMESTAMP),
        sa.Column("updated_at", sa.TIMESTAMP),
    ]


def b2c_payments_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36)),
        sa.Column("user_type", sa.String(20)),
        sa.Column("phone_number", sa.String(20)),
        sa.Column("amount", sa.Numeric(15, 2)),
        sa.Column("reference_id", sa.String(255)),
        sa.Column("transaction_id", sa.String(255)),
        sa.Column("status", sa.String(50)),
        sa.Column("error_description", sa.Text),
        sa.Column("reason_code", sa.String(100)),
        sa.Column("initiated_at", sa.TIMESTAMP),
        sa.Column("completed_at", sa.TIMESTAMP),
        sa.Column("updated_at", sa.TIMESTAMP),
    ]


def b2c_payment_callbacks_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("transaction_id", sa.String(255)),
        sa.Column("originator_conversation_id", sa.String(255)),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("result_code", sa.Integer),
        sa.Column("result_description", sa.Text),
        sa.Column("transaction_amount", sa.Numeric(15, 2)),
        sa.Column("receiver_phone", sa.String(20)),
        sa.Column("reference_id", sa.String(255)),
        sa.Column("raw_response", LONGTEXT),
        sa.Column("received_at", sa.TIMESTAMP),
    ]


TABLES = {
    "payments": (payments_columns, {}),
    "b2c_payments": (
        b2c_payments_columns,
        {
            "ix_b2c_payments_user_id": "user_id",
            "ix_b2c_payments_reference_id": "reference_id",
            "ix_b2c_payments_transaction_id": "transaction_id",
            "ix_b2c_payments_status": "status",
            "ix_b2c_payments_initiated_at": "initiated_at",
        },
    ),
    "b2c_payment_callbacks": (
        b2c_payment_callbacks_columns,
        {
            "ix_b2c_payment_callbacks_reference_id": "reference_id",
            "ix_b2c_payment_callbacks_result_code": "result_code",
            "ix_b2c_payment_callbacks_received_at": "received_at",
        },
    ),
}
UNIQUE_CALLBACK_TRANSACTION = "uq_b2c_payment_callbacks_transaction_id"


def upgrade() -> None:
    inspector = None if context.is_offline_mode() else sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names()) if inspector else set()
    for table, (columns, indexes) in TABLES.items():
        if table in existing:
            adopt(inspector, table, columns(), indexes)
        else:
            create(table, columns(), indexes)


def create(table: str, columns: list[sa.Column], indexes: dict[str, str]) -> None:
    constraints = []
    if table == "b2c_payment_callbacks":
        constraints.append(sa.UniqueConstraint("transaction_id", name=UNIQUE_CALLBACK_TRANSACTION))
    op.create_table(table, *columns, *constraints)
    for name, column in indexes.items():
        op.create_index(name, table, [column])


def adopt(inspector, table: str, columns: list[sa.Column], indexes: dict[str, str]) -> None:
    present = {column["name"] for column in inspector.get_columns(table)}
    for column in columns:
        if column.name not in present:
            column.primary_key = False
            op.add_column(table, column)
    indexed = {tuple(index["column_names"]) for index in inspector.get_indexes(table)}
    indexed |= {tuple(unique["column_names"]) for unique in inspector.get_unique_constraints(table)}
    for name, column in indexes.items():
        if (column,) not in indexed:
            op.create_index(name, table, [column])


def downgrade() -> None:
    raise RuntimeError("refusing to drop the old system's tables and their rows")
