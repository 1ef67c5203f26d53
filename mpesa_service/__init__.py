"""M-Pesa payments service: STK Push collections, B2C payouts, callbacks and jobs.

`service.py` at the top of the project is the entrypoint; this package is its body, split along
the single file's banner sections once it passed 1,500 lines (see DESIGN.md). Modules in
dependency order: settings, storage, daraja (client), parsing (callback shapes), context (the
shared Service object, journal, callback authenticity), idempotency (callers' keys), stk
(collections), payouts (the B2C state machine), resolution (status queries, retries, review),
callbacks (receiving and replaying callbacks), operator (audited resolutions), jobs, console
(the status page), routes, entrypoint.
"""

import logging
from pathlib import Path

__version__ = "0.1.0"

PROJECT_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("mpesa")
