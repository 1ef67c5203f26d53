CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE payments (
    id VARCHAR(36) NOT NULL, 
    user_id VARCHAR(36), 
    booking_id VARCHAR(36), 
    amount NUMERIC(15, 2), 
    status VARCHAR(50) DEFAULT 'pending', 
    method VARCHAR(50), 
    transaction_reference VARCHAR(255), 
    created_at TIMESTAMP NULL, 
    updated_at TIMESTAMP NULL, 
    PRIMARY KEY (id)
);

CREATE TABLE b2c_payments (
    id VARCHAR(36) NOT NULL, 
    user_id VARCHAR(36), 
    user_type VARCHAR(20), 
    phone_number VARCHAR(20), 
    amount NUMERIC(15, 2), 
    reference_id VARCHAR(255), 
    transaction_id VARCHAR(255), 
    status VARCHAR(50), 
    error_description TEXT, 
    reason_code VARCHAR(100), 
    initiated_at TIMESTAMP NULL, 
    completed_at TIMESTAMP NULL, 
    updated_at TIMESTAMP NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_b2c_payments_user_id ON b2c_payments (user_id);

CREATE INDEX ix_b2c_payments_reference_id ON b2c_payments (reference_id);

CREATE INDEX ix_b2c_payments_transaction_id ON b2c_payments (transaction_id);

CREATE INDEX ix_b2c_payments_status ON b2c_payments (status);

CREATE INDEX ix_b2c_payments_initiated_at ON b2c_payments (initiated_at);

CREATE TABLE b2c_payment_callbacks (
    id VARCHAR(36) NOT NULL, 
    transaction_id VARCHAR(255), 
    originator_conversation_id VARCHAR(255), 
    conversation_id VARCHAR(255), 
    result_code INTEGER, 
    result_description TEXT, 
    transaction_amount NUMERIC(15, 2), 
    receiver_phone VARCHAR(20), 
    reference_id VARCHAR(255), 
    raw_response LONGTEXT, 
    received_at TIMESTAMP NULL, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_b2c_payment_callbacks_transaction_id UNIQUE (transaction_id)
);

CREATE INDEX ix_b2c_payment_callbacks_reference_id ON b2c_payment_callbacks (reference_id);

CREATE INDEX ix_b2c_payment_callbacks_result_code ON b2c_payment_callbacks (result_code);

CREATE INDEX ix_b2c_payment_callbacks_received_at ON b2c_payment_callbacks (received_at);

INSERT INTO alembic_version (version_num) VALUES ('0001');

-- Running upgrade 0001 -> 0002

ALTER TABLE payments ADD COLUMN checkout_request_id VARCHAR(255);

ALTER TABLE payments ADD COLUMN merchant_request_id VARCHAR(255);

ALTER TABLE payments ADD COLUMN phone_number VARCHAR(20);

ALTER TABLE payments ADD COLUMN mpesa_receipt VARCHAR(255);

ALTER TABLE payments ADD COLUMN result_code VARCHAR(50);

ALTER TABLE payments ADD COLUMN result_desc TEXT;

ALTER TABLE payments ADD COLUMN account_reference VARCHAR(20);

ALTER TABLE payments ADD COLUMN description VARCHAR(50);

ALTER TABLE payments ADD COLUMN paid_amount NUMERIC(15, 2);

ALTER TABLE payments ADD COLUMN error_code VARCHAR(50);

ALTER TABLE payments ADD COLUMN error_message TEXT;

ALTER TABLE payments ADD COLUMN completed_at DATETIME;

ALTER TABLE payments ADD COLUMN query_count INTEGER NOT NULL DEFAULT '0';

ALTER TABLE payments ADD COLUMN next_query_at DATETIME;

ALTER TABLE b2c_payments ADD COLUMN originator_conversation_id VARCHAR(255);

ALTER TABLE b2c_payments ADD COLUMN conversation_id VARCHAR(255);

ALTER TABLE b2c_payments ADD COLUMN command_id VARCHAR(50);

ALTER TABLE b2c_payments ADD COLUMN reason VARCHAR(100);

ALTER TABLE b2c_payments ADD COLUMN description VARCHAR(255);

ALTER TABLE b2c_payments ADD COLUMN result_desc TEXT;

ALTER TABLE b2c_payments ADD COLUMN paid_amount NUMERIC(15, 2);

ALTER TABLE b2c_payments ADD COLUMN receiver_name VARCHAR(255);

ALTER TABLE b2c_payments ADD COLUMN attempt_count INTEGER NOT NULL DEFAULT '0';

ALTER TABLE b2c_payments ADD COLUMN check_count INTEGER NOT NULL DEFAULT '0';

ALTER TABLE b2c_payments ADD COLUMN next_check_at DATETIME;

ALTER TABLE b2c_payments ADD COLUMN claim_owner VARCHAR(64);

ALTER TABLE b2c_payments ADD COLUMN claim_expires_at DATETIME;

ALTER TABLE b2c_payment_callbacks ADD COLUMN result_code_text VARCHAR(50);

ALTER TABLE b2c_payment_callbacks ADD COLUMN result_type VARCHAR(10);

ALTER TABLE b2c_payment_callbacks ADD COLUMN kind VARCHAR(20);

ALTER TABLE b2c_payment_callbacks ADD COLUMN payout_id VARCHAR(36);

ALTER TABLE b2c_payment_callbacks ADD COLUMN receiver_name VARCHAR(255);

ALTER TABLE b2c_payment_callbacks ADD COLUMN outcome VARCHAR(20);

ALTER TABLE b2c_payment_callbacks ADD COLUMN journal_id VARCHAR(36);

CREATE UNIQUE INDEX uq_payments_checkout_request_id ON payments (checkout_request_id);

CREATE INDEX ix_payments_mpesa_receipt ON payments (mpesa_receipt);

CREATE INDEX ix_payments_status ON payments (status);

CREATE INDEX ix_b2c_payments_originator_conversation_id ON b2c_payments (originator_conversation_id);

CREATE INDEX ix_b2c_payments_conversation_id ON b2c_payments (conversation_id);

CREATE INDEX ix_b2c_payment_callbacks_payout_id ON b2c_payment_callbacks (payout_id);

CREATE INDEX ix_b2c_payment_callbacks_originator_conversation_id ON b2c_payment_callbacks (originator_conversation_id);

CREATE TABLE b2c_payout_attempts (
    id VARCHAR(36) NOT NULL, 
    payout_id VARCHAR(36) NOT NULL, 
    attempt_no INTEGER NOT NULL, 
    originator_conversation_id VARCHAR(255) NOT NULL, 
    conversation_id VARCHAR(255), 
    status VARCHAR(20) NOT NULL, 
    response_code VARCHAR(50), 
    error_code VARCHAR(50), 
    error_message TEXT, 
    created_at DATETIME NOT NULL, 
    sent_at DATETIME, 
    answered_at DATETIME, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_b2c_payout_attempts_ocid UNIQUE (originator_conversation_id), 
    CONSTRAINT uq_b2c_payout_attempts_number UNIQUE (payout_id, attempt_no)
);

CREATE INDEX ix_b2c_payout_attempts_conversation_id ON b2c_payout_attempts (conversation_id);

CREATE TABLE idempotency_keys (
    idempotency_key VARCHAR(255) NOT NULL, 
    scope VARCHAR(30) NOT NULL, 
    request_hash VARCHAR(64) NOT NULL, 
    subject_id VARCHAR(36), 
    response_status INTEGER, 
    response_body TEXT, 
    created_at DATETIME NOT NULL, 
    PRIMARY KEY (idempotency_key)
);

CREATE TABLE status_queries (
    id VARCHAR(36) NOT NULL, 
    payout_id VARCHAR(36) NOT NULL, 
    attempt_id VARCHAR(36), 
    step INTEGER NOT NULL, 
    originator_conversation_id VARCHAR(255), 
    conversation_id VARCHAR(255), 
    status VARCHAR(20) NOT NULL, 
    result_code VARCHAR(50), 
    result_desc TEXT, 
    raw_response LONGTEXT, 
    requested_at DATETIME NOT NULL, 
    answered_at DATETIME, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_status_queries_attempt_step UNIQUE (attempt_id, step)
);

CREATE INDEX ix_status_queries_payout_id ON status_queries (payout_id);

CREATE INDEX ix_status_queries_originator_conversation_id ON status_queries (originator_conversation_id);

CREATE TABLE stk_callbacks (
    id VARCHAR(36) NOT NULL, 
    checkout_request_id VARCHAR(255), 
    merchant_request_id VARCHAR(255), 
    payment_id VARCHAR(36), 
    result_code VARCHAR(50), 
    result_desc TEXT, 
    amount NUMERIC(15, 2), 
    mpesa_receipt VARCHAR(255), 
    phone_number VARCHAR(20), 
    transaction_date DATETIME, 
    outcome VARCHAR(20), 
    journal_id VARCHAR(36), 
    raw_response LONGTEXT, 
    received_at DATETIME NOT NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_stk_callbacks_checkout_request_id ON stk_callbacks (checkout_request_id);

CREATE INDEX ix_stk_callbacks_payment_id ON stk_callbacks (payment_id);

CREATE TABLE callback_journal (
    id VARCHAR(36) NOT NULL, 
    kind VARCHAR(30) NOT NULL, 
    state VARCHAR(20) NOT NULL, 
    detail TEXT, 
    received_at DATETIME NOT NULL, 
    applied_at DATETIME, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_callback_journal_state ON callback_journal (state);

CREATE TABLE payment_flags (
    id VARCHAR(36) NOT NULL, 
    subject_type VARCHAR(20) NOT NULL, 
    subject_id VARCHAR(36) NOT NULL, 
    flag VARCHAR(50) NOT NULL, 
    detail TEXT, 
    created_at DATETIME NOT NULL, 
    resolved_at DATETIME, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_payment_flags_subject ON payment_flags (subject_type, subject_id);

CREATE INDEX ix_payment_flags_flag ON payment_flags (flag);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

ALTER TABLE payment_flags ADD COLUMN notified_at DATETIME;

CREATE INDEX ix_payment_flags_notified_at ON payment_flags (notified_at);

CREATE TABLE account_balances (
    id VARCHAR(36) NOT NULL, 
    account VARCHAR(100) NOT NULL, 
    currency VARCHAR(10), 
    available NUMERIC(15, 2), 
    checked_at DATETIME NOT NULL, 
    journal_id VARCHAR(36), 
    PRIMARY KEY (id)
);

CREATE INDEX ix_account_balances_checked_at ON account_balances (checked_at);

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

-- Running upgrade 0003 -> 0004

CREATE TABLE payout_audit (
    id VARCHAR(36) NOT NULL, 
    payout_id VARCHAR(36) NOT NULL, 
    actor VARCHAR(100) NOT NULL, 
    action VARCHAR(30) NOT NULL, 
    status_before VARCHAR(50), 
    status_after VARCHAR(50), 
    receipt VARCHAR(255), 
    note TEXT, 
    created_at DATETIME NOT NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_payout_audit_payout_id ON payout_audit (payout_id);

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

-- Running upgrade 0004 -> 0005

DROP INDEX ix_b2c_payments_reference_id ON b2c_payments;

CREATE UNIQUE INDEX uq_b2c_payments_reference_id ON b2c_payments (reference_id);

ALTER TABLE b2c_payout_attempts ADD COLUMN receipt VARCHAR(255);

CREATE TABLE payout_limit_locks (
    name VARCHAR(100) NOT NULL, 
    PRIMARY KEY (name)
);

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

-- Running upgrade 0005 -> 0006

CREATE TABLE console_sessions (
    id VARCHAR(64) NOT NULL, 
    key_name VARCHAR(100) NOT NULL, 
    created_at DATETIME NOT NULL, 
    last_seen_at DATETIME NOT NULL, 
    expires_at DATETIME NOT NULL, 
    ended_at DATETIME, 
    PRIMARY KEY (id)
);

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

-- Running upgrade 0006 -> 0007

CREATE INDEX ix_b2c_payments_completed_at ON b2c_payments (completed_at);

CREATE INDEX ix_payments_completed_at ON payments (completed_at);

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

-- Running upgrade 0007 -> 0008

CREATE TABLE daraja_tokens (
    app VARCHAR(64) NOT NULL, 
    token VARCHAR(2048) NOT NULL, 
    expires_at DATETIME NOT NULL, 
    updated_at DATETIME NOT NULL, 
    PRIMARY KEY (app)
);

UPDATE alembic_version SET version_num='0008' WHERE alembic_version.version_num = '0007';

-- Running upgrade 0008 -> 0009

CREATE TABLE events (
    seq BIGINT NOT NULL AUTO_INCREMENT, 
    id VARCHAR(36) NOT NULL, 
    type VARCHAR(50) NOT NULL, 
    subject VARCHAR(255) NOT NULL, 
    created_at DATETIME NOT NULL, 
    body LONGTEXT NOT NULL, 
    state VARCHAR(30) NOT NULL DEFAULT 'pending', 
    attempts INTEGER NOT NULL DEFAULT '0', 
    next_attempt_at DATETIME, 
    claim_owner VARCHAR(64), 
    claim_expires_at DATETIME, 
    delivered_at DATETIME, 
    PRIMARY KEY (seq), 
    CONSTRAINT uq_events_id UNIQUE (id)
);

CREATE INDEX ix_events_state_next_attempt_at ON events (state, next_attempt_at);

CREATE INDEX ix_events_subject ON events (subject, seq);

CREATE INDEX ix_events_created_at ON events (created_at);

CREATE TABLE event_deliveries (
    id VARCHAR(36) NOT NULL, 
    event_id VARCHAR(36) NOT NULL, 
    attempted_at DATETIME NOT NULL, 
    status_code INTEGER, 
    error TEXT, 
    latency_ms INTEGER NOT NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_event_deliveries_event_id ON event_deliveries (event_id);

UPDATE alembic_version SET version_num='0009' WHERE alembic_version.version_num = '0008';

-- Running upgrade 0009 -> 0010

ALTER TABLE b2c_payments ADD COLUMN created_by VARCHAR(100);

UPDATE alembic_version SET version_num='0010' WHERE alembic_version.version_num = '0009';

-- Running upgrade 0010 -> 0011

CREATE TABLE payout_batches (
    id VARCHAR(36) NOT NULL, 
    status VARCHAR(30) NOT NULL, 
    file_name VARCHAR(255), 
    row_count INTEGER NOT NULL, 
    total_amount NUMERIC(15, 2) NOT NULL, 
    created_by VARCHAR(100) NOT NULL, 
    created_at DATETIME NOT NULL, 
    decided_by VARCHAR(100), 
    decided_at DATETIME, 
    decision_note TEXT, 
    claimed_until DATETIME, 
    claim_owner VARCHAR(64), 
    finished_at DATETIME, 
    emailed_at DATETIME, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_payout_batches_status ON payout_batches (status);

CREATE TABLE payout_batch_rows (
    id VARCHAR(36) NOT NULL, 
    batch_id VARCHAR(36) NOT NULL, 
    line_no INTEGER NOT NULL, 
    reference_id VARCHAR(255) NOT NULL, 
    user_id VARCHAR(36) NOT NULL, 
    phone_number VARCHAR(20) NOT NULL, 
    amount NUMERIC(15, 2) NOT NULL, 
    reason VARCHAR(100) NOT NULL, 
    description VARCHAR(100) NOT NULL, 
    payout_id VARCHAR(36), 
    refused TEXT, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_payout_batch_rows_line UNIQUE (batch_id, line_no)
);

CREATE INDEX ix_payout_batch_rows_reference_id ON payout_batch_rows (reference_id);

CREATE TABLE payout_batch_audit (
    id VARCHAR(36) NOT NULL, 
    batch_id VARCHAR(36) NOT NULL, 
    actor VARCHAR(100) NOT NULL, 
    action VARCHAR(30) NOT NULL, 
    note TEXT, 
    created_at DATETIME NOT NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_payout_batch_audit_batch_id ON payout_batch_audit (batch_id);

UPDATE alembic_version SET version_num='0011' WHERE alembic_version.version_num = '0010';

-- Running upgrade 0011 -> 0012

CREATE TABLE c2b_payments (
    id VARCHAR(36) NOT NULL, 
    trans_id VARCHAR(255), 
    transaction_type VARCHAR(50), 
    kind VARCHAR(10), 
    amount NUMERIC(15, 2), 
    msisdn VARCHAR(255), 
    bill_ref_number VARCHAR(255), 
    invoice_number VARCHAR(255), 
    business_short_code VARCHAR(20), 
    first_name VARCHAR(100), 
    middle_name VARCHAR(100), 
    last_name VARCHAR(100), 
    trans_time DATETIME, 
    source VARCHAR(20) NOT NULL, 
    outcome VARCHAR(20) NOT NULL, 
    raw_response LONGTEXT, 
    journal_id VARCHAR(36), 
    received_at DATETIME NOT NULL, 
    confirmed_at DATETIME, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_c2b_payments_trans_id UNIQUE (trans_id)
);

CREATE INDEX ix_c2b_payments_bill_ref_number ON c2b_payments (bill_ref_number);

CREATE INDEX ix_c2b_payments_trans_time ON c2b_payments (trans_time);

CREATE INDEX ix_c2b_payments_received_at ON c2b_payments (received_at);

UPDATE alembic_version SET version_num='0012' WHERE alembic_version.version_num = '0011';

-- Running upgrade 0012 -> 0013

CREATE TABLE reversals (
    id VARCHAR(36) NOT NULL, 
    payment_kind VARCHAR(10) NOT NULL, 
    payment_id VARCHAR(36) NOT NULL, 
    attempt_no INTEGER NOT NULL, 
    status VARCHAR(20) NOT NULL, 
    amount NUMERIC(15, 2) NOT NULL, 
    original_receipt VARCHAR(255) NOT NULL, 
    receiver_party VARCHAR(20) NOT NULL, 
    reason VARCHAR(255) NOT NULL, 
    requested_by VARCHAR(100) NOT NULL, 
    originator_conversation_id VARCHAR(255), 
    conversation_id VARCHAR(255), 
    receipt VARCHAR(255), 
    result_code VARCHAR(50), 
    result_desc TEXT, 
    check_count INTEGER NOT NULL DEFAULT '0', 
    next_check_at DATETIME, 
    created_at DATETIME NOT NULL, 
    sent_at DATETIME, 
    completed_at DATETIME, 
    updated_at DATETIME NOT NULL, 
    PRIMARY KEY (id), 
    CONSTRAINT uq_reversals_attempt UNIQUE (payment_kind, payment_id, attempt_no)
);

CREATE INDEX ix_reversals_status ON reversals (status);

CREATE INDEX ix_reversals_original_receipt ON reversals (original_receipt);

CREATE INDEX ix_reversals_originator_conversation_id ON reversals (originator_conversation_id);

CREATE TABLE reversal_callbacks (
    id VARCHAR(36) NOT NULL, 
    reversal_id VARCHAR(36), 
    kind VARCHAR(20) NOT NULL, 
    result_code VARCHAR(50), 
    result_desc TEXT, 
    originator_conversation_id VARCHAR(255), 
    conversation_id VARCHAR(255), 
    transaction_id VARCHAR(255), 
    outcome VARCHAR(20) NOT NULL, 
    journal_id VARCHAR(36), 
    raw_response LONGTEXT, 
    received_at DATETIME NOT NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_reversal_callbacks_reversal_id ON reversal_callbacks (reversal_id);

CREATE TABLE collection_audit (
    id VARCHAR(36) NOT NULL, 
    payment_kind VARCHAR(10) NOT NULL, 
    payment_id VARCHAR(36) NOT NULL, 
    actor VARCHAR(100) NOT NULL, 
    action VARCHAR(30) NOT NULL, 
    status_before VARCHAR(50), 
    status_after VARCHAR(50), 
    receipt VARCHAR(255), 
    note TEXT, 
    created_at DATETIME NOT NULL, 
    PRIMARY KEY (id)
);

CREATE INDEX ix_collection_audit_payment ON collection_audit (payment_kind, payment_id);

ALTER TABLE c2b_payments ADD COLUMN reversed_at DATETIME;

ALTER TABLE c2b_payments ADD COLUMN reversal_receipt VARCHAR(255);

UPDATE alembic_version SET version_num='0013' WHERE alembic_version.version_num = '0012';

