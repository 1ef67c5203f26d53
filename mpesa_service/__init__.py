"""M-Pesa payments service: STK Push collections, B2C payouts, callbacks and jobs.

`service.py` at the top of the project is the entrypoint; this package is its body, one module
per thing it holds (see DESIGN.md "Layout"). Layers, each importing only from its own or lower
ones, with no cycles (a callback walks down them from the route that receives it):

- entrypoint: wiring (build the Service) and the commands; golive (the go-live check)
- routes: the HTTP API and hooks; console (the status page); jobs (the scheduler's jobs)
- intake: callbacks (authenticate, journal, hand to the writer: groupcommit, batch_results)
- apply: operator (audited resolutions), new_payout (the console's payout form), batches (bulk
  payouts from a file, approved once),
  payment_claims, reversals (refunds of STK and C2B collections, written ahead like payouts),
  resolution (status queries, retries, review, status answers), then payouts (the B2C state
  machine), stk (collections) and c2b (paybill and till payments)
- shared: events (the outbox of outbound events and their delivery), idempotency (callers'
  keys), flags, parsing (what comes in), context (Service, ApiError), journal, callback_auth,
  api_keys, ids
- storage (tables and engines), settings, daraja (the client), token_store; and recon.rules /
  recon.codes, the rules the service shares with reconciliation
"""

import logging
from pathlib import Path

__version__ = "0.1.0"

PROJECT_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("mpesa")
