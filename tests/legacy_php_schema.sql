-- The old PHP system's tables as its audit gives them (scripts/migrate_b2c_payments_table.php),
-- used to prove `python service.py migrate` adopts such a database without losing a row.
CREATE TABLE payments (
  id VARCHAR(36) PRIMARY KEY,
  user_id VARCHAR(36),
  booking_id VARCHAR(36),
  amount DECIMAL(15, 2),
  status VARCHAR(50) DEFAULT 'pending',
  method VARCHAR(50),
  transaction_reference VARCHAR(255),
  created_at TIMESTAMP NULL,
  updated_at TIMESTAMP NULL
);
CREATE TABLE b2c_payments (
  id VARCHAR(36) PRIMARY KEY,
  user_id VARCHAR(36),
  user_type VARCHAR(20),
  phone_number VARCHAR(20),
  amount DECIMAL(15, 2),
  reference_id VARCHAR(255),
  transaction_id VARCHAR(255),
  status VARCHAR(50),
  error_description TEXT,
  reason_code VARCHAR(100),
  initiated_at TIMESTAMP NULL,
  completed_at TIMESTAMP NULL,
  updated_at TIMESTAMP NULL,
  INDEX idx_user_id (user_id),
  INDEX idx_reference_id (reference_id),
  INDEX idx_transaction_id (transaction_id),
  INDEX idx_status (status),
  INDEX idx_initiated_at (initiated_at)
);
CREATE TABLE b2c_payment_callbacks (
  id VARCHAR(36) PRIMARY KEY,
  transaction_id VARCHAR(255),
  originator_conversation_id VARCHAR(255),
  conversation_id VARCHAR(255),
  result_code INT,
  result_description TEXT,
  transaction_amount DECIMAL(15, 2),
  receiver_phone VARCHAR(20),
  reference_id VARCHAR(255),
  raw_response LONGTEXT,
  received_at TIMESTAMP NULL,
  UNIQUE KEY idx_transaction_id (transaction_id),
  INDEX idx_reference_id (reference_id),
  INDEX idx_result_code (result_code),
  INDEX idx_received_at (received_at)
);
INSERT INTO payments VALUES
  ('p-1', 'u-1', 'b-1', 1500.00, 'completed', 'mpesa', 'TK51AB2CDE', '2025-11-05 11:00:00', '2025-11-05 11:01:00'),
  ('p-2', 'u-2', NULL, 250.00, 'pending', 'card', NULL, '2025-11-05 12:00:00', NULL);
INSERT INTO b2c_payments VALUES
  ('b-1', 'u-1', 'trainer', '254712345678', 1000.00, 'payout_ref_1', 'TK58QW1RTY', 'completed', NULL, '0', '2025-11-05 11:30:00', '2025-11-05 11:31:07', '2025-11-05 11:31:07'),
  ('b-2', 'u-3', 'client', '254722000111', 500.00, 'payout_ref_2', NULL, 'failed', 'The initiator information is invalid.', '2001', '2025-11-05 11:40:00', NULL, '2025-11-05 11:41:00');
INSERT INTO b2c_payment_callbacks VALUES
  ('c-1', 'TK58QW1RTY', 'orig-1', 'AG_20251105_1', 0, 'The service request is processed successfully.', 1000.00, '254712345678', 'payout_ref_1', '{"Result": {"ResultCode": 0}}', '2025-11-05 11:31:08');
