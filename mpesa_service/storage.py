"""Storage: the schema (SQLAlchemy Core), engines tuned per dialect, and Alembic migrations.

The first three tables are the old PHP system's, column for column; every column added since is
nullable or defaulted so rows written by the old system stay valid. Times are naive UTC."""

from __future__ import annotations

import functools
import io
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from mpesa_service import PROJECT_DIR, log

# The first three tables are the old PHP system's, column for column (see the audit); every
# column added since is nullable or defaulted so rows written by the old system stay valid.
# Times are naive UTC. Index names carry their table because SQLite's are database-wide.

metadata = sa.MetaData()
ID = sa.String(36)
MONEY = sa.Numeric(15, 2)
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def utcnow() -> datetime:
    """The current time as naive UTC, the way every time is stored."""
    return datetime.now(UTC).replace(tzinfo=None)


payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID),
    sa.Column("booking_id", ID),
    sa.Column("amount", MONEY),
    sa.Column("status", sa.String(50), server_default="pending"),
    sa.Column("method", sa.String(50)),
    sa.Column("transaction_reference", sa.String(255)),
    sa.Column("created_at", sa.TIMESTAMP),
    sa.Column("updated_at", sa.TIMESTAMP),
    # Added: STK Push bookkeeping.
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
    sa.Index("uq_payments_checkout_request_id", "checkout_request_id", unique=True),
    sa.Index("ix_payments_mpesa_receipt", "mpesa_receipt"),
    sa.Index("ix_payments_status", "status"),
    sa.Index("ix_payments_completed_at", "completed_at"),
)

b2c_payments = sa.Table(
    "b2c_payments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID),
    sa.Column("user_type", sa.String(20)),
    sa.Column("phone_number", sa.String(20)),
    sa.Column("amount", MONEY),
    sa.Column("reference_id", sa.String(255)),
    sa.Column("transaction_id", sa.String(255)),
    sa.Column("status", sa.String(50)),
    sa.Column("error_description", sa.Text),
    sa.Column("reason_code", sa.String(100)),
    sa.Column("initiated_at", sa.TIMESTAMP),
    sa.Column("completed_at", sa.TIMESTAMP),
    sa.Column("updated_at", sa.TIMESTAMP),
    # Added: B2C v3 correlation, request details, result details, scheduler bookkeeping.
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
    # The name of the API key that created the payout (an approval by it is refused).
    sa.Column("created_by", sa.String(100)),
    sa.Index("ix_b2c_payments_user_id", "user_id"),
    sa.Index("uq_b2c_payments_reference_id", "reference_id", unique=True),
    sa.Index("ix_b2c_payments_transaction_id", "transaction_id"),
    sa.Index("ix_b2c_payments_status", "status"),
    sa.Index("ix_b2c_payments_initiated_at", "initiated_at"),
    sa.Index("ix_b2c_payments_completed_at", "completed_at"),
    sa.Index("ix_b2c_payments_originator_conversation_id", "originator_conversation_id"),
    sa.Index("ix_b2c_payments_conversation_id", "conversation_id"),
)

b2c_payment_callbacks = sa.Table(
    "b2c_payment_callbacks",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("transaction_id", sa.String(255)),
    sa.Column("originator_conversation_id", sa.String(255)),
    sa.Column("conversation_id", sa.String(255)),
    sa.Column("result_code", sa.Integer),
    sa.Column("result_description", sa.Text),
    sa.Column("transaction_amount", MONEY),
    sa.Column("receiver_phone", sa.String(20)),
    sa.Column("reference_id", sa.String(255)),
    sa.Column("raw_response", LONGTEXT),
    sa.Column("received_at", sa.TIMESTAMP),
    # Added. `result_code` stays INT for old SQL; codes such as SFC_IC0003 are kept whole here.
    sa.Column("result_code_text", sa.String(50)),
    sa.Column("result_type", sa.String(10)),
    sa.Column("kind", sa.String(20)),
    sa.Column("payout_id", ID),
    sa.Column("receiver_name", sa.String(255)),
    sa.Column("outcome", sa.String(20)),
    sa.Column("journal_id", ID),
    sa.UniqueConstraint("transaction_id", name="uq_b2c_payment_callbacks_transaction_id"),
    sa.Index("ix_b2c_payment_callbacks_reference_id", "reference_id"),
    sa.Index("ix_b2c_payment_callbacks_result_code", "result_code"),
    sa.Index("ix_b2c_payment_callbacks_received_at", "received_at"),
    sa.Index("ix_b2c_payment_callbacks_payout_id", "payout_id"),
    sa.Index("ix_b2c_payment_callbacks_originator_conversation_id", "originator_conversation_id"),
)

b2c_payout_attempts = sa.Table(
    "b2c_payout_attempts",
    metadata,
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
    # The receipt of a success result (or of a status answer saying Completed) for this attempt:
    # the evidence that money moved.
    sa.Column("receipt", sa.String(255)),
    sa.UniqueConstraint("originator_conversation_id", name="uq_b2c_payout_attempts_ocid"),
    sa.UniqueConstraint("payout_id", "attempt_no", name="uq_b2c_payout_attempts_number"),
    sa.Index("ix_b2c_payout_attempts_conversation_id", "conversation_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    sa.Column("scope", sa.String(30), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("subject_id", ID),
    sa.Column("response_status", sa.Integer),
    sa.Column("response_body", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

status_queries = sa.Table(
    "status_queries",
    metadata,
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
    sa.Index("ix_status_queries_payout_id", "payout_id"),
    sa.Index("ix_status_queries_originator_conversation_id", "originator_conversation_id"),
)

stk_callbacks = sa.Table(
    "stk_callbacks",
    metadata,
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
    sa.Index("ix_stk_callbacks_checkout_request_id", "checkout_request_id"),
    sa.Index("ix_stk_callbacks_payment_id", "payment_id"),
)

callback_journal = sa.Table(
    "callback_journal",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("applied_at", sa.DateTime),
    sa.Index("ix_callback_journal_state", "state"),
)

payment_flags = sa.Table(
    "payment_flags",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subject_type", sa.String(20), nullable=False),
    sa.Column("subject_id", ID, nullable=False),
    sa.Column("flag", sa.String(50), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("resolved_at", sa.DateTime),
    sa.Column("notified_at", sa.DateTime),
    sa.Index("ix_payment_flags_subject", "subject_type", "subject_id"),
    sa.Index("ix_payment_flags_flag", "flag"),
    sa.Index("ix_payment_flags_notified_at", "notified_at"),
)

payout_audit = sa.Table(
    "payout_audit",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("payout_id", ID, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("status_before", sa.String(50)),
    sa.Column("status_after", sa.String(50)),
    sa.Column("receipt", sa.String(255)),
    sa.Column("note", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_payout_audit_payout_id", "payout_id"),
)

# One row per name ("user:<user_id>", "all payouts"), locked for the rest of a transaction to
# serialise the daily-limit checks of concurrent payouts (see payouts.check_payout_limits).
payout_limit_locks = sa.Table(
    "payout_limit_locks",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
)

# The Daraja OAuth token every process of a deployment shares (token_store): `app` is a digest
# of the base URL and consumer key.
daraja_tokens = sa.Table(
    "daraja_tokens",
    metadata,
    sa.Column("app", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(2048), nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# Operator console sessions: `id` is the SHA-256 of the token the cookie carries (a copy of the
# table is no use for signing in); a session ends at `ended_at` (signed out) or `expires_at`.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_name", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_seen_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("ended_at", sa.DateTime),
)

# C2B payments (paybill and till) customers started themselves: one row per M-Pesa receipt
# (TransID), from its confirmation or, when that never came, from Pull Transactions (`source`
# "pull"). MSISDN is kept as sent: Daraja masks or hashes it. A malformed confirmation is kept
# raw with no TransID.
c2b_payments = sa.Table(
    "c2b_payments",
    metadata,
    sa.Column("id", ID, primary_key=True),
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
    sa.Column("journal_id", ID),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("confirmed_at", sa.DateTime),
    # Set once the service has reversed (refunded) it: when, and the reversal's receipt.
    sa.Column("reversed_at", sa.DateTime),
    sa.Column("reversal_receipt", sa.String(255)),
    sa.UniqueConstraint("trans_id", name="uq_c2b_payments_trans_id"),
    sa.Index("ix_c2b_payments_bill_ref_number", "bill_ref_number"),
    sa.Index("ix_c2b_payments_trans_time", "trans_time"),
    sa.Index("ix_c2b_payments_received_at", "received_at"),
)

account_balances = sa.Table(
    "account_balances",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account", sa.String(100), nullable=False),
    sa.Column("currency", sa.String(10)),
    sa.Column("available", MONEY),
    sa.Column("checked_at", sa.DateTime, nullable=False),
    sa.Column("journal_id", ID),
    sa.Index("ix_account_balances_checked_at", "checked_at"),
)


# Reversals of collections (refunds): one row per attempt to reverse a collection, written
# ahead (`submitting`) before Daraja is called, like a payout attempt; a collection has at most
# one open or completed reversal (see reversals.py). `payment_kind` says which table
# `payment_id` names. `originator_conversation_id` and `conversation_id` are Daraja's, from its
# answer; `receipt` is the reversal's own M-Pesa receipt, `original_receipt` the one reversed.
reversals = sa.Table(
    "reversals",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("payment_kind", sa.String(10), nullable=False),
    sa.Column("payment_id", ID, nullable=False),
    sa.Column("attempt_no", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("amount", MONEY, nullable=False),
    sa.Column("original_receipt", sa.String(255), nullable=False),
    # The shortcode (paybill or till) that received the collection: the Reversal's ReceiverParty.
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
    sa.UniqueConstraint("payment_kind", "payment_id", "attempt_no", name="uq_reversals_attempt"),
    sa.Index("ix_reversals_status", "status"),
    sa.Index("ix_reversals_original_receipt", "original_receipt"),
    sa.Index("ix_reversals_originator_conversation_id", "originator_conversation_id"),
)

# Every reversal result, queue timeout and status answer, stored whole, with what applying it did.
reversal_callbacks = sa.Table(
    "reversal_callbacks",
    metadata,
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
    sa.Index("ix_reversal_callbacks_reversal_id", "reversal_id"),
)

# The append-only audit trail of collections (who asked for a reversal, what became of it).
collection_audit = sa.Table(
    "collection_audit",
    metadata,
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
    sa.Index("ix_collection_audit_payment", "payment_kind", "payment_id"),
)

# The outbox of outbound events (see events.py): each written in the transaction of the change
# it tells of, then delivered, at least once, by the events job. `seq` orders them (by subject
# too: an event waits for its subject's older ones); `id` is the event's own id, the one its
# receiver de-duplicates by.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", ID, nullable=False),
    sa.Column("type", sa.String(50), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("body", LONGTEXT, nullable=False),
    sa.Column("state", sa.String(30), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("claim_owner", sa.String(64)),
    sa.Column("claim_expires_at", sa.DateTime),
    sa.Column("delivered_at", sa.DateTime),
    sa.UniqueConstraint("id", name="uq_events_id"),
    sa.Index("ix_events_state_next_attempt_at", "state", "next_attempt_at"),
    sa.Index("ix_events_subject", "subject", "seq"),
    sa.Index("ix_events_created_at", "created_at"),
)

# One row per delivery attempt of an event: the receiver's HTTP status, or the error.
event_deliveries = sa.Table(
    "event_deliveries",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("event_id", ID, nullable=False),
    sa.Column("attempted_at", sa.DateTime, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Index("ix_event_deliveries_event_id", "event_id"),
)


# Bulk payouts: a file's rows, uploaded once, approved once as a whole, each row then sent as
# an ordinary payout whose idempotency key and reference_id are the row's reference (see
# batches.py). `claim_owner` holds the sending job's lease on a batch until `claimed_until`
# (compare-and-set, renewed row by row).
payout_batches = sa.Table(
    "payout_batches",
    metadata,
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
    sa.Index("ix_payout_batches_status", "status"),
)

payout_batch_rows = sa.Table(
    "payout_batch_rows",
    metadata,
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
    sa.Index("ix_payout_batch_rows_reference_id", "reference_id"),
)

# The batch's own audit trail: upload, approval, rejection, refused decisions, the end.
payout_batch_audit = sa.Table(
    "payout_batch_audit",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("batch_id", ID, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_payout_batch_audit_batch_id", "batch_id"),
)


# One pooled connection per waitress thread (32) plus the jobs: with SQLAlchemy's default of 5,
# busy requests would open and close overflow connections on every call.
POOL = {"pool_size": 36, "max_overflow": 10}


def make_engine(url: str) -> sa.Engine:
    """An engine tuned for the dialect: SQLite with WAL and write-locking transactions, MySQL in
    UTC with READ COMMITTED."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return sa.create_engine(
        parsed,
        **POOL,
        pool_pre_ping=True,
        pool_recycle=3600,
        **MYSQL_SESSION,
    )


MYSQL_SESSION = {
    "isolation_level": "READ COMMITTED",
    "connect_args": {"init_command": "SET time_zone = '+00:00'"},
}


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **POOL, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below start transactions
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA busy_timeout=30000")

    # BEGIN IMMEDIATE takes the write lock up front, so two threads never both read a row and
    # then race to upgrade to a write (which SQLite answers with "database is locked").
    @sa.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def lock_named_row(conn: sa.Connection, name: str) -> None:
    """Hold the `payout_limit_locks` row `name` (made if missing) until the transaction ends, so
    that transactions locking the same name run one after the other. On MySQL an INSERT ... ON
    DUPLICATE KEY UPDATE locks the row exclusively at once (a plain read under READ COMMITTED
    would not serialise anything); SQLite's write transactions are serialised already by BEGIN
    IMMEDIATE (see make_engine)."""
    if conn.dialect.name != "mysql":
        return
    statement = mysql.insert(payout_limit_locks).values(name=name)
    conn.execute(statement.on_duplicate_key_update(name=statement.inserted.name))


def database_is_reachable(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError as error:
        log.warning("database unreachable: %s", type(error).__name__)
        return False


# MySQL/MariaDB errors that say the database is out of reach or busy for now, not that the
# request or the code is wrong: too many connections, server shutting down, lock wait timeout,
# deadlock, cannot connect (2002, 2003), server gone away, connection lost.
UNAVAILABLE_MYSQL_CODES = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013}


def is_database_unavailable(error: BaseException | None) -> bool:
    if not isinstance(error, sa.exc.OperationalError):
        return False
    orig = error.orig
    code = orig.args[0] if orig is not None and orig.args else None
    return (
        error.connection_invalidated
        or code in UNAVAILABLE_MYSQL_CODES
        or "database is locked" in str(orig)  # SQLite, past its busy timeout
    )


MYSQL_DEADLOCK = 1213


def retry_deadlocked(work, attempts: int = 3):
    """`work()` (one transaction), run again when MySQL chose it as a deadlock's victim: its
    transaction was rolled back whole, so running it again is safe. Concurrent inserts of one
    idempotency key deadlock so when the transaction holding it rolls back (it answered 409 or
    422) while two others wait to insert the same key."""
    for attempt in range(attempts):
        try:
            return work()
        except sa.exc.OperationalError as error:
            code = error.orig.args[0] if error.orig is not None and error.orig.args else None
            if code != MYSQL_DEADLOCK or attempt + 1 == attempts:
                raise
            log.info("deadlock victim, trying again: %s", error.orig)
    raise AssertionError("unreachable")


def retry_while_unavailable(work, seconds: float, what: str):
    """`work()`, run again while it fails because the database is out of reach (see
    is_database_unavailable), waiting 0.25 s, then twice as long each time up to 4 s, for at
    most `seconds` in all; then its last error is raised. `what` names the work in the log."""
    deadline = time.monotonic() + seconds
    wait = 0.25
    while True:
        try:
            return work()
        except sa.exc.OperationalError as error:
            if not is_database_unavailable(error) or time.monotonic() + wait > deadline:
                raise
            log.warning("database unavailable while %s; trying again in %.2g s", what, wait)
            time.sleep(wait)
            wait = min(wait * 2, 4.0)


@functools.cache
def inserting(table: sa.Table, columns: tuple[str, ...]) -> sa.Insert:
    """INSERT of rows with exactly these `columns`, one statement per table and columns (so
    that execute_precompiled compiles it once)."""
    return table.insert().values(
        {name: sa.bindparam(name, type_=table.c[name].type) for name in columns}
    )


def execute_precompiled(conn: sa.Connection, statement: sa.Executable, params: dict | list):
    """`conn.execute(statement, params)` without SQLAlchemy's per-call work (cache key,
    parameter processing) where the dialect allows: compiled once, then run as driver SQL.
    For statements with hundreds of parameters, such as a callback batch's, where that work
    costs more than the database. Elsewhere it is plain `execute`."""
    form = driver_form(statement, conn.dialect)
    if form is None:
        return conn.execute(statement, params)
    sql, own_values = form
    if isinstance(params, list):
        return conn.exec_driver_sql(sql, [{**own_values, **row} for row in params])
    return conn.exec_driver_sql(sql, {**own_values, **params})


@functools.cache
def driver_form(statement: sa.Executable, dialect: sa.Dialect) -> tuple[str, dict] | None:
    """(SQL, the values the statement carries itself) for named parameters needing no
    conversion (MySQL's); None if one needs converting (SQLite's times) or is an expanding IN,
    if the parameters are positional, or if SQLAlchemy would work out a column default."""
    compiled = statement.compile(dialect=dialect)
    if compiled.positiontup is not None or compiled.insert_prefetch or compiled.update_prefetch:
        return None
    own_values = {}
    for bind, name in compiled.bind_names.items():
        if bind.expanding or bind.type.dialect_impl(dialect).bind_processor(dialect):
            return None
        if not bind.required:
            own_values[name] = bind.value
    return compiled.string, own_values


def alembic_config(connection: sa.Connection | None = None, url: str | None = None):
    """Alembic's configuration for `sql/migrations`, bound to a connection or a URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "sql" / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url)
    config.attributes["connection"] = connection
    return config


def migrate(engine: sa.Engine) -> None:
    """Upgrade the database to head. An old PHP database (its tables, no Alembic history) is
    adopted: the first migration keeps its tables and rows, the later ones add to them."""
    from alembic import command

    with engine.begin() as connection:
        existing = set(sa.inspect(connection).get_table_names())
        if "alembic_version" not in existing and existing & {"payments", "b2c_payments"}:
            log.info("adopting existing tables: %s", ", ".join(sorted(existing)))
        command.upgrade(alembic_config(connection), "head")


def schema_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def render_mysql_schema() -> str:
    """The MySQL DDL of head, rendered from the migrations in Alembic's offline mode."""
    from alembic import command

    config = alembic_config(url="mysql+pymysql://")
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    return config.output_buffer.getvalue()
