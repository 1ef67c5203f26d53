"""M-Pesa payments service: the entrypoint. The body lives in the `mpesa_service` package, split
along this file's former banner sections once it passed 1,500 lines.

Commands
    python service.py                 serve (waitress, threaded, one process) on HOST:PORT; in the
                                      simulator environment also starts the Daraja simulator
                                      and serves its control routes under /simulator/
    python service.py migrate         upgrade the database to the newest schema (adopts the old
                                      PHP system's tables in place, losing no row)
    python service.py schema          print the MySQL DDL of the newest schema
    python service.py replay          apply journaled callbacks the database does not have yet
    python service.py reverse PAYMENT_ID --reason WHY [--retry] [--actor NAME]
                                      reverse (refund) a paid collection, as the API does; its
                                      result comes to the running service's callback URLs
    python service.py bulk FILE [--skip-bad-rows] [--actor NAME]
                                      check and upload a bulk payout file (CSV/XLSX) as
                                      POST /payouts/batches does: prints each bad row, the
                                      totals and limits, and the batch id; --actor is the maker
    python service.py bulk-status BATCH_ID
                                      a batch's status, progress and counts by status
    python service.py check [--smoke] the go-live check: a table of what is ready (settings,
                                      database, OAuth, clock, certificate, credential, callback
                                      URLs, journal, callback filters), exit 1 on a failure;
                                      --smoke also sends an STK push, a payout and two queries
                                      through the running service and waits for their callbacks
    python service.py register-urls   C2B Register URL with PUBLIC_BASE_URL's hook URLs (REFERENCE
                                      9.5's keywords checked first); Pull Transactions
                                      registration too when C2B_PULL_NOMINATED_NUMBER is set
    python service.py pull-c2b [--hours H]  store C2B payments Pull Transactions knows and no
                                      confirmation brought (flagged confirmation_missed)

Routes (JSON; initiation and reads need `Authorization: Bearer <API key>`)
    GET  /healthz                         version, environment, database reachability (503 down)
    GET  /metrics                         Prometheus text, with a read key: payouts by status, ages
    GET  /openapi.json                    the OpenAPI 3 description of this API
    POST /payments/mpesa/stk-initiate     start an STK Push collection (old front end's URL)
    POST /payments/mpesa/stk-query        a collection's status; asks Daraja while it is open
    POST /payouts                         create a B2C payout (header Idempotency-Key required)
    GET  /payouts/<reference_id>          a payout with its attempts and flags
    GET  /payouts?status=&since=          list payouts
    POST /payments/<payment_id>/reverse   reverse (refund) a paid STK or C2B collection once
                                          (operator; a reason; "retry": true after a failed one)
    POST /payouts/<reference_id>/approve  approve a payout awaiting approval (operator, not its
                                          creator's key): it is sent
    POST /payouts/<reference_id>/reject   reject it (operator, not its creator's key; a reason)
    POST /payouts/batches                 upload a bulk payout file (CSV/XLSX; operator): checked,
                                          nothing sent; 422 with the report for bad rows unless
                                          ?skip_bad_rows=1; kept awaiting another key's approval
    GET  /payouts/batches/<batch_id>      a batch: counts by status, progress, rows and outcomes
    POST /payouts/batches/<id>/approve    approve the whole batch (operator, not its uploader)
    POST /payouts/batches/<id>/reject     reject it, nothing sent (operator, not its uploader)
    GET  /payouts/batches/<id>/result.csv the result file (also result.xlsx)
    GET  /events?since=&type=             outbound events, oldest first, with delivery state
    POST /events/<id>/redeliver           make an event due for delivery now (operator)
    GET  /c2b/payments?since=&bill_ref=   C2B paybill and till payments, newest first
    POST /api.php                         old front end: action b2c_payment_initiate
    POST /hooks/stk/<token>               STK Push callback
    POST /hooks/stk/<token>/<payment_id>  the same, naming its payment (the CallBackURL sent)
    POST /hooks/b2c/result/<token>        B2C result callback
    POST /hooks/b2c/timeout/<token>       B2C queue-timeout callback (outcome unknown)
    POST /hooks/status/result/<token>     Transaction Status result callback
    POST /hooks/status/timeout/<token>    Transaction Status queue-timeout callback
    POST /hooks/balance/result/<token>    Account Balance result (and /hooks/balance/timeout/...)
    POST /hooks/reversal/result/<token>/<reversal_id>  Reversal result (and .../timeout/...,
                                          .../status/... and .../status-timeout/... for its
                                          Transaction Status answers; each also without the id)
    POST /hooks/c2b/validation/<token>    C2B validation: journaled, answered accept or reject
    POST /hooks/c2b/confirmation/<token>  C2B confirmation: the payment recorded once per TransID
    POST /clientpaymentcallback.php       the old B2C result URL (?token= when CALLBACK_TOKEN set)
    *    /simulator/...                   simulator environment only: the in-process simulator's
                                          control routes (requests, ledger, scenarios, ...)

Jobs (APScheduler 3, started by `python service.py` only; max_instances=1, coalesce=True)
    resolve          every RESOLVE_INTERVAL_SECONDS: Transaction Status queries for `unknown`
                     payouts and `pending` ones older than RESOLVE_PENDING_AFTER_SECONDS, on the
                     RESOLVE_SCHEDULE_SECONDS backoff; `review` when it runs out; stuck
                     `submitting` payouts become `unknown`
    reversal_resolve every RESOLVE_INTERVAL_SECONDS: the same for reversals (never sent again)
    retry            every RETRY_INTERVAL_SECONDS: a new attempt for `failed` payouts with a
                     retryable code, after RETRY_DELAY_SECONDS, up to PAYOUT_MAX_ATTEMPTS
    stk_sweep        every SWEEP_INTERVAL_SECONDS: STK Query for open collections, with backoff;
                     fail those past STK_EXPIRY_SECONDS
    journal_replay   every 60 s: apply journaled callbacks the database missed
    approval_expiry  every 60 s: payouts awaiting approval for APPROVAL_EXPIRES_HOURS end
                     `expired`, never sent
    batches          every 2 s: send approved bulk batches' rows at BULK_PAYOUTS_PER_SECOND (a
                     lease per batch; each row a payout keyed by its reference), finish settled
                     batches and email their result file to OPERATOR_EMAILS' maker and checker
    alerts           every ALERT_INTERVAL_SECONDS: one email to ALERT_EMAIL_TO for new flags;
                     first raises (or closes) events_backlog and journal_space_low
    events           every EVENTS_INTERVAL_SECONDS (when EVENTS_URL is set): POST due events,
                     signed, oldest first per subject; retried on EVENTS_RETRY_SCHEDULE_SECONDS
    balance          every BALANCE_CHECK_MINUTES (when set): Account Balance query
    c2b_pull         every C2B_PULL_INTERVAL_MINUTES (when set): Pull Transactions for the last
                     C2B_PULL_HOURS; payments no confirmation brought are stored, flagged
    reconciliation   RECON_SCHEDULE (cron, Nairobi; when RECON_EMAIL_TO is set): the previous
                     day's reconciliation report, emailed
"""

import sys

from mpesa_service import __version__
from mpesa_service.entrypoint import build_service, main
from mpesa_service.routes import make_app
from mpesa_service.settings import SETTINGS, Settings, SettingsError, load_settings
from mpesa_service.storage import (
    account_balances,
    b2c_payment_callbacks,
    b2c_payments,
    b2c_payout_attempts,
    c2b_payments,
    callback_journal,
    console_sessions,
    head_revision,
    idempotency_keys,
    make_engine,
    metadata,
    migrate,
    payment_flags,
    payments,
    payout_audit,
    payout_limit_locks,
    render_mysql_schema,
    schema_revision,
    status_queries,
    stk_callbacks,
)

# Scripts, notebooks and tests may `import service` for the schema and the wiring.
__all__ = [
    "account_balances",
    "SETTINGS",
    "Settings",
    "SettingsError",
    "__version__",
    "b2c_payment_callbacks",
    "b2c_payments",
    "b2c_payout_attempts",
    "build_service",
    "c2b_payments",
    "callback_journal",
    "console_sessions",
    "head_revision",
    "idempotency_keys",
    "load_settings",
    "main",
    "make_app",
    "make_engine",
    "metadata",
    "migrate",
    "payment_flags",
    "payments",
    "payout_audit",
    "payout_limit_locks",
    "render_mysql_schema",
    "schema_revision",
    "stk_callbacks",
    "status_queries",
]

if __name__ == "__main__":
    sys.exit(main())
