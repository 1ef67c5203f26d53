-- Named queries of the payout and collection health views (recon/health.py, the notebooks
-- 02-payouts-health and 03-collections). Each takes :since and :until (naive UTC, either may be
-- NULL for "unbounded") and runs unchanged on SQLite and MySQL/MariaDB.

-- name: stk_callbacks
-- STK Push callbacks of the M-Pesa collections created in [:since, :until), one row per
-- delivery: the payment it answered, its result code, amount and receipt, and when it arrived
-- (naive UTC). Orphan callbacks (no payment) are not included.
SELECT c.id, c.payment_id, c.result_code, c.amount, c.mpesa_receipt, c.received_at
FROM stk_callbacks c
JOIN payments p ON p.id = c.payment_id
WHERE p.method = 'mpesa'
  AND (:since IS NULL OR p.created_at >= :since) AND (:until IS NULL OR p.created_at < :until);
