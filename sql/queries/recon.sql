-- Named queries of the reconciliation toolkit (recon/load.py), one block per query.
-- Every query takes :since and :until (naive UTC, either may be NULL for "unbounded") and runs
-- unchanged on SQLite and MySQL/MariaDB, so analysts can paste them into a client.

-- name: payouts
-- B2C payouts initiated or completed in [:since, :until), plus older payouts that a result
-- received in the period points at (so such a result is not taken for an orphan). One row per
-- payout; legacy rows have only the old PHP columns (reference_id, transaction_id, status,
-- reason_code). Each key is looked up in the period's callbacks as a set (IN), read once,
-- rather than joined per key: an OR of keys in one join cannot use an index.
SELECT p.id, p.user_id, p.phone_number, p.amount, p.status, p.reference_id, p.transaction_id,
       p.reason_code, p.originator_conversation_id, p.conversation_id, p.paid_amount,
       p.initiated_at, p.completed_at
FROM b2c_payments p
WHERE ((:since IS NULL OR p.initiated_at >= :since) AND (:until IS NULL OR p.initiated_at < :until))
   OR ((:since IS NULL OR p.completed_at >= :since) AND (:until IS NULL OR p.completed_at < :until))
   OR p.id IN (SELECT a.payout_id
               FROM b2c_payout_attempts a
               JOIN b2c_payment_callbacks c
                 ON c.originator_conversation_id = a.originator_conversation_id
               WHERE (:since IS NULL OR c.received_at >= :since)
                 AND (:until IS NULL OR c.received_at < :until))
   OR p.originator_conversation_id IN (SELECT c.originator_conversation_id
                                       FROM b2c_payment_callbacks c
                                       WHERE (:since IS NULL OR c.received_at >= :since)
                                         AND (:until IS NULL OR c.received_at < :until))
   OR p.conversation_id IN (SELECT c.conversation_id FROM b2c_payment_callbacks c
                            WHERE (:since IS NULL OR c.received_at >= :since)
                              AND (:until IS NULL OR c.received_at < :until))
   OR p.transaction_id IN (SELECT c.transaction_id FROM b2c_payment_callbacks c
                           WHERE (:since IS NULL OR c.received_at >= :since)
                             AND (:until IS NULL OR c.received_at < :until))
   OR p.reference_id IN (SELECT c.reference_id FROM b2c_payment_callbacks c
                         WHERE (:since IS NULL OR c.received_at >= :since)
                           AND (:until IS NULL OR c.received_at < :until))
   OR p.id IN (SELECT c.payout_id FROM b2c_payment_callbacks c
               WHERE (:since IS NULL OR c.received_at >= :since)
                 AND (:until IS NULL OR c.received_at < :until));

-- name: payout_attempts
-- Every attempt (OriginatorConversationID, ConversationID, and the receipt the service recorded
-- as its evidence of payment, from a result or a status answer) of the payouts initiated or
-- completed in [:since, :until), and every attempt a callback received in the period answers
-- (whatever its payout), keyed by payout_id: a result may answer any attempt, not only the
-- latest.
SELECT a.payout_id, a.attempt_no, a.originator_conversation_id, a.conversation_id, a.status,
       a.receipt
FROM b2c_payout_attempts a
LEFT JOIN b2c_payments p ON p.id = a.payout_id
WHERE ((:since IS NULL OR p.initiated_at >= :since) AND (:until IS NULL OR p.initiated_at < :until))
   OR ((:since IS NULL OR p.completed_at >= :since) AND (:until IS NULL OR p.completed_at < :until))
   OR a.originator_conversation_id IN (SELECT c.originator_conversation_id
                                       FROM b2c_payment_callbacks c
                                       WHERE (:since IS NULL OR c.received_at >= :since)
                                         AND (:until IS NULL OR c.received_at < :until))
   OR a.conversation_id IN (SELECT c.conversation_id FROM b2c_payment_callbacks c
                            WHERE (:since IS NULL OR c.received_at >= :since)
                              AND (:until IS NULL OR c.received_at < :until));

-- name: b2c_results
-- B2C result, timeout and status-query callbacks received in [:since, :until), one row per
-- callback. result_code is the INT column of the old system; result_code_text keeps codes such
-- as SFC_IC0003 whole (new rows). kind is NULL on legacy rows (they are all results).
SELECT id, transaction_id, originator_conversation_id, conversation_id, result_code,
       result_code_text, result_description, transaction_amount, receiver_phone, reference_id,
       received_at, kind, payout_id
FROM b2c_payment_callbacks
WHERE (:since IS NULL OR received_at >= :since) AND (:until IS NULL OR received_at < :until);

-- name: stk_payments
-- M-Pesa STK collections (payments.method = 'mpesa') created or completed in [:since, :until)
-- (a payment started at 23:59 and paid at 00:00 belongs to both days): the amount
-- requested, the amount paid (the row's paid_amount, else its successful STK callback's amount),
-- the receipt (mpesa_receipt, else the callback's, else the legacy transaction_reference) and
-- the CheckoutRequestID (what names a collection to a person and to stk-query), and the
-- receipt of the reversal that refunded it, if the service reversed it.
SELECT p.id, p.user_id, p.phone_number, p.amount, p.status, p.result_code, p.created_at,
       p.completed_at, p.checkout_request_id,
       COALESCE(p.paid_amount,
                (SELECT MAX(c.amount) FROM stk_callbacks c
                 WHERE c.payment_id = p.id AND c.result_code = '0')) AS paid_amount,
       COALESCE(p.mpesa_receipt,
                (SELECT MAX(c.mpesa_receipt) FROM stk_callbacks c
                 WHERE c.payment_id = p.id AND c.result_code = '0'),
                p.transaction_reference) AS receipt,
       (SELECT MAX(r.receipt) FROM reversals r
        WHERE r.payment_id = p.id AND r.status = 'completed') AS reversal_receipt
FROM payments p
WHERE p.method = 'mpesa'
  AND (((:since IS NULL OR p.created_at >= :since) AND (:until IS NULL OR p.created_at < :until))
       OR ((:since IS NULL OR p.completed_at >= :since)
           AND (:until IS NULL OR p.completed_at < :until)));

-- name: c2b_payments
-- C2B paybill and till payments (customers paid the shortcode themselves) paid or received in
-- [:since, :until), one row per receipt (trans_id; NULL on a malformed confirmation, kept raw):
-- the amount, the MSISDN as Daraja sent it (masked or hashed), the bill reference, where the
-- row came from (confirmation or pull: Pull Transactions found what no confirmation brought),
-- when it was paid (trans_time), received and confirmed (naive UTC), and the receipt of the
-- reversal that refunded it, if the service reversed it.
SELECT id, trans_id, amount, msisdn, bill_ref_number, source, outcome, trans_time, received_at,
       confirmed_at, reversal_receipt
FROM c2b_payments
WHERE ((:since IS NULL OR trans_time >= :since) AND (:until IS NULL OR trans_time < :until))
   OR ((:since IS NULL OR received_at >= :since) AND (:until IS NULL OR received_at < :until));
