"""Settings: one table of configuration variables (name, default, meaning, where required),
read from the environment and an optional `.env`, checked before anything starts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from mpesa_service import PROJECT_DIR
from recon.rules import B2C_LIMITS

ENVIRONMENTS = ("simulator", "sandbox", "production")
DARAJA_BASE_URLS = {
    "sandbox": "https://sandbox.safaricom.co.ke",
    "production": "https://api.safaricom.co.ke",
}
CREDENTIALS = ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY")
LIVE = ("sandbox", "production")


@dataclass(frozen=True)
class Setting:
    """One configuration variable: its name, its default, what it means, where it is required."""

    name: str
    default: str
    meaning: str
    required_in: tuple[str, ...] = ()


PROD = ("production",)

# fmt: off
SETTINGS = (
    Setting("MPESA_ENVIRONMENT", "simulator",
            "`simulator` (built-in stand-in Daraja), `sandbox` or `production`."),
    Setting("MPESA_BASE_URL", "",
            "Daraja base URL; empty means the environment's own (the in-process simulator, "
            "sandbox.safaricom.co.ke or api.safaricom.co.ke)."),
    Setting("MPESA_CONSUMER_KEY", "", "Daraja app consumer key.", LIVE),
    Setting("MPESA_CONSUMER_SECRET", "", "Daraja app consumer secret.", LIVE),
    Setting("MPESA_SHORTCODE", "", "Business short code (STK paybill, and B2C unless "
            "MPESA_B2C_SHORTCODE is set).", LIVE),
    Setting("MPESA_PASSKEY", "", "Lipa Na M-Pesa Online passkey (STK Push password).", LIVE),
    Setting("MPESA_B2C_SHORTCODE", "", "B2C short code (PartyA); empty means MPESA_SHORTCODE."),
    Setting("MPESA_INITIATOR_NAME", "", "API operator username for B2C and status queries.",
            PROD),
    Setting("MPESA_INITIATOR_PASSWORD", "", "API operator password, encrypted with "
            "MPESA_CERT_PATH into the SecurityCredential."),
    Setting("MPESA_CERT_PATH", "", "Safaricom's certificate (sandbox or production) for the "
            "SecurityCredential."),
    Setting("MPESA_SECURITY_CREDENTIAL", "", "A precomputed SecurityCredential (instead of "
            "password + certificate)."),
    Setting("MPESA_STK_TRANSACTION_TYPE", "CustomerPayBillOnline",
            "`CustomerPayBillOnline` (paybill) or `CustomerBuyGoodsOnline` (till)."),
    Setting("MPESA_STK_PARTY_B", "", "STK PartyB (the till number); empty means the short code."),
    Setting("MPESA_RESULT_URL", "",
            "B2C result URL given to Daraja (the old system's meaning); empty means "
            "PUBLIC_BASE_URL + `/hooks/b2c/result/<CALLBACK_TOKEN>`."),
    Setting("PUBLIC_BASE_URL", "",
            "Public HTTPS base URL Daraja calls back on; empty means http://HOST:PORT.", PROD),
    Setting("DATABASE_URL", "sqlite:///data/mpesa.db",
            "SQLAlchemy URL; production uses `mysql+pymysql://user:pass@host/db`.", PROD),
    Setting("HOST", "127.0.0.1", "Address the service listens on."),
    Setting("PORT", "8000", "Port the service listens on."),
    Setting("API_KEYS", "", "Comma-separated bearer keys: `secret` (roles initiate and read) or "
            "`name:role+role:secret` with roles `initiate`, `operator`, `read`; empty in the "
            "simulator means `simulator-api-key` with every role.", PROD),
    Setting("CONSOLE_SECRET", "", "Secret that signs the operator console's cookies and CSRF "
            "tokens; empty outside production means a random one kept in `data/console_secret`.",
            PROD),
    Setting("CONSOLE_IDLE_SECONDS", "1800", "A console session unused this long ends (a "
            "session ends anyway 8 hours after sign-in, and at once on signing out)."),
    Setting("CALLBACK_TOKEN", "", "Secret token in every callback URL; empty outside "
            "production means a random one kept in `data/callback_token`.", PROD),
    Setting("CALLBACK_ALLOWED_IPS", "", "Comma-separated addresses/CIDRs callbacks may come "
            "from; empty means Safaricom's published list in production and no check "
            "elsewhere; `*` allows any."),
    Setting("TRUSTED_PROXIES", "", "Comma-separated addresses/CIDRs of reverse proxies whose "
            "X-Forwarded-For is believed."),
    Setting("CALLBACK_MAX_BYTES", "65536", "Largest callback body accepted (413 above)."),
    Setting("CALLBACK_JOURNAL_PATH", "data/b2c_callbacks.log",
            "JSON-lines journal every callback is appended to before any database work."),
    Setting("JOURNAL_MIN_FREE_MB", "100", "Free space on the journal's filesystem below "
            "which /healthz answers 503 and an alert (`journal_space_low`) is raised; 0 means "
            "never."),
    Setting("REFUSED_JOURNAL_PER_MINUTE", "20", "Refused callback deliveries (wrong token, "
            "foreign sender, oversized) journaled per sender per minute, each as a bounded "
            "record (reason, sender, size, SHA-256, first 2 KB); the rest are only counted."),
    Setting("DARAJA_TIMEOUT_SECONDS", "30", "Timeout of every HTTP call to Daraja (seconds, "
            "decimals allowed)."),
    Setting("SUBMITTING_STUCK_AFTER_SECONDS", "90", "Age after which a payout still "
            "`submitting` (the process died while sending it) becomes `unknown`, to be resolved "
            "by asking; more than DARAJA_TIMEOUT_SECONDS (decimals allowed)."),
    Setting("STK_QUERY_AFTER_SECONDS", "120", "Age after which a pending STK payment is "
            "queried by the sweep job."),
    Setting("STK_EXPIRY_SECONDS", "600", "Age after which an STK payment with no answer is "
            "marked failed (`expired`)."),
    Setting("STK_EXPIRY_MINUTES", "", "The older name of STK_EXPIRY_SECONDS, in minutes: used "
            "(times 60) only when STK_EXPIRY_SECONDS is not set."),
    Setting("STK_RECORD_RETRY_SECONDS", "15", "How long an STK push Daraja accepted keeps "
            "trying to record its CheckoutRequestID while the database is out of reach, before "
            "it answers 202 \"sent but not recorded: do not retry\"."),
    Setting("SWEEP_INTERVAL_SECONDS", "30", "How often the STK sweep job runs."),
    Setting("PAYOUT_PHONE_QUERY", "", "SQL finding a payee's phone by `:user_id` when a payout "
            "request has no phone, e.g. `SELECT phone FROM users WHERE id = :user_id`."),
    Setting("PAYOUT_MAX_AMOUNT", str(B2C_LIMITS[1]), "Largest single payout in shillings "
            "(422 above)."),
    Setting("PAYOUT_USER_DAILY_LIMIT", "500000", "Most one user may be paid per Nairobi day; "
            "0 means no limit."),
    Setting("PAYOUT_DAILY_LIMIT", "0", "Most all payouts together may total per Nairobi day; "
            "0 means no limit."),
    Setting("APPROVAL_ABOVE", "0", "A payout of more than this many shillings waits as "
            "`awaiting_approval`, sent only once an operator key other than the one that "
            "created it approves it; 0 means no payout needs approval."),
    Setting("APPROVAL_EXPIRES_HOURS", "24", "A payout still awaiting approval this many hours "
            "after it was created ends `expired`, never sent; 0 means it never expires."),
    Setting("BULK_REQUIRES_APPROVAL", "1", "1: an uploaded bulk payout file waits until an "
            "operator key other than the uploader's approves the whole batch; 0: it is sent "
            "as soon as it is uploaded."),
    Setting("BULK_PAYOUTS_PER_SECOND", "2", "Most B2C requests a bulk batch sends per second "
            "(Daraja publishes no TPS; too fast shows as 500.003.02 Spike Arrest Violation)."),
    Setting("BULK_MAX_BYTES", "1000000", "Largest bulk payout file accepted (413 above); "
            "at most 1 MiB, the service's cap on any request body (and nginx's for the upload "
            "routes in deploy/)."),
    Setting("BULK_MAX_ROWS", "5000", "Most rows in one bulk payout file."),
    Setting("OPERATOR_EMAILS", "", "Comma-separated `key_name=address` pairs: where a bulk "
            "batch's result file is emailed when it finishes (to its maker and its checker); "
            "empty or a key not listed means no email."),
    Setting("RESOLVE_PENDING_AFTER_SECONDS", "120", "Age after which an accepted payout with "
            "no result is checked by a status query."),
    Setting("RESOLVE_UNKNOWN_AFTER_SECONDS", "60", "Delay before the first status query of a "
            "payout whose outcome is unknown."),
    Setting("RESOLVE_INTERVAL_SECONDS", "15", "How often the resolve job looks for payouts "
            "to query (and the reversal_resolve job for reversals)."),
    Setting("RESOLVE_SCHEDULE_SECONDS", "60,120,300,900,1800,3600,21600,21600,21600",
            "Waits between a payout's Transaction Status queries; when they run out the payout "
            "goes to `review`."),
    Setting("STATUS_NOT_FOUND_CODES", "404", "Transaction Status result codes meaning \"no such "
            "transaction\" (404 is the simulator's convention; the real code is unconfirmed)."),
    Setting("STATUS_NOT_FOUND_AFTER_SECONDS", "120", "How long after sending an attempt a "
            "\"no such transaction\" answer proves it never arrived (so it may be retried)."),
    Setting("RETRYABLE_RESULT_CODES", "", "Comma-separated codes whose failure gets a new "
            "attempt; empty means 17, 26, 500.003.02, 500.003.03, NotSent, not_paid (an "
            "operator's decision) and the not-found codes (never 1, insufficient balance)."),
    Setting("RETRY_DELAY_SECONDS", "60", "Wait after a failure before its new attempt."),
    Setting("RETRY_INTERVAL_SECONDS", "30", "How often the retry job runs."),
    Setting("PAYOUT_MAX_ATTEMPTS", "3", "Most attempts (first send included) for one payout."),
    Setting("ALERT_EMAIL_TO", "", "Comma-separated recipients of alert emails (review, "
            "mismatches, orphans, conflicts, low balance); empty means log only."),
    Setting("ALERT_INTERVAL_SECONDS", "60", "How often pending alerts are batched into one "
            "email."),
    Setting("BALANCE_CHECK_MINUTES", "0", "How often to query the B2C account balance; 0 means "
            "never."),
    Setting("BALANCE_ALERT_BELOW", "0", "Alert when the B2C utility account's available "
            "balance falls below this many shillings; 0 means never."),
    Setting("RECON_SCHEDULE", "0 7 * * *", "Cron schedule (Africa/Nairobi) of the emailed "
            "reconciliation of the previous day."),
    Setting("RECON_EMAIL_TO", "", "Comma-separated recipients of the scheduled reconciliation; "
            "empty means the job is off."),
    Setting("REPORTS_DIR", "data/reports", "Folder of the scheduled reconciliation's reports, "
            "one folder per Nairobi day, which the console lists and serves; relative to the "
            "project folder."),
    Setting("RECON_STALE_AFTER_MINUTES", "30", "Age after which an open payout is reported as "
            "stale by the scheduled reconciliation."),
    Setting("RECON_TARIFF", "recon/tariffs/b2c.csv", "The B2C tariff (CSV, see recon/tariff.py) "
            "the scheduled reconciliation checks payout charges against; relative to the "
            "project folder."),
    Setting("SMTP_HOST", "", "SMTP server for alerts and reports."),
    Setting("SMTP_PORT", "25", "SMTP port (587 is usual with STARTTLS, 465 with SSL)."),
    Setting("SMTP_STARTTLS", "0", "1 to upgrade the SMTP connection with STARTTLS."),
    Setting("SMTP_SSL", "0", "1 to connect to SMTP over TLS from the start."),
    Setting("SMTP_USER", "", "SMTP user name; empty means no login."),
    Setting("SMTP_PASSWORD", "", "SMTP password."),
    Setting("SMTP_FROM", "mpesa@localhost", "Sender address of alerts and reports."),
    Setting("EVENTS_URL", "", "Where outbound events are POSTed, signed (see Outbound events); "
            "empty means events are off: none is written."),
    Setting("EVENTS_SECRET", "", "Secret of the events' Mpesa-Signature (HMAC-SHA256); "
            "required when EVENTS_URL is set."),
    Setting("EVENTS_TIMEOUT_SECONDS", "10", "Timeout of one event delivery (seconds)."),
    Setting("EVENTS_RETRY_SCHEDULE_SECONDS", "5,30,120,600,1800,3600,7200,14400,21600",
            "Waits after each failed delivery of an event (the last repeats)."),
    Setting("EVENTS_GIVE_UP_HOURS", "72", "Age after which an undelivered event is given up "
            "(state `failed`; POST /events/<id>/redeliver tries again)."),
    Setting("EVENTS_INTERVAL_SECONDS", "5", "How often the events job delivers what is due."),
    Setting("EVENTS_ALERT_AFTER_MINUTES", "60", "With EVENTS_URL set, an alert "
            "(`events_backlog`) is raised when the oldest undelivered event is older than this; "
            "0 means never."),
    Setting("C2B_SHORTCODE", "", "Paybill or till number customers pay by C2B (Register URL, "
            "validation, Pull Transactions); empty means MPESA_SHORTCODE."),
    Setting("C2B_RESPONSE_TYPE", "Completed", "What M-Pesa does with a C2B payment when the "
            "validation URL does not answer in time: `Completed` or `Cancelled` (Register URL)."),
    Setting("C2B_ACCOUNT_PATTERN", "", "Regular expression the whole BillRefNumber (account "
            "number) of a C2B payment must match, or validation rejects it (C2B00012); empty "
            "means any."),
    Setting("C2B_MIN_AMOUNT", "1", "Smallest C2B payment validation accepts, in shillings "
            "(below: C2B00013)."),
    Setting("C2B_MAX_AMOUNT", "250000", "Largest C2B payment validation accepts, in shillings "
            "(above: C2B00013)."),
    Setting("C2B_PULL_INTERVAL_MINUTES", "0", "How often the c2b_pull job fetches the last "
            "C2B_PULL_HOURS of C2B transactions by Pull Transactions, storing those whose "
            "confirmation never came; 0 means never."),
    Setting("C2B_PULL_HOURS", "6", "How many hours back the c2b_pull job looks (at most 48, "
            "all Pull Transactions keeps)."),
    Setting("C2B_PULL_NOMINATED_NUMBER", "", "The phone Pull Transactions registration names "
            "(NominatedNumber); when set, `register-urls` registers the shortcode for it too."),
    Setting("C2B_BILL_REF_QUERY", "", "SQL finding the booking or user a C2B bill reference "
            "names, by `:bill_ref`; when set, reconciliation reports C2B payments it finds "
            "nothing for (c2b_unknown_bill_ref)."),
    Setting("LOG_LEVEL", "INFO", "Python logging level."),
)
# fmt: on
NUMERIC_SETTINGS = (
    "PORT",
    "CONSOLE_IDLE_SECONDS",
    "JOURNAL_MIN_FREE_MB",
    "REFUSED_JOURNAL_PER_MINUTE",
    "CALLBACK_MAX_BYTES",
    "STK_QUERY_AFTER_SECONDS",
    "STK_EXPIRY_SECONDS",
    "STK_RECORD_RETRY_SECONDS",
    "SWEEP_INTERVAL_SECONDS",
    "PAYOUT_MAX_AMOUNT",
    "PAYOUT_USER_DAILY_LIMIT",
    "PAYOUT_DAILY_LIMIT",
    "APPROVAL_ABOVE",
    "APPROVAL_EXPIRES_HOURS",
    "BULK_REQUIRES_APPROVAL",
    "BULK_PAYOUTS_PER_SECOND",
    "BULK_MAX_BYTES",
    "BULK_MAX_ROWS",
    "RESOLVE_PENDING_AFTER_SECONDS",
    "RESOLVE_UNKNOWN_AFTER_SECONDS",
    "RESOLVE_INTERVAL_SECONDS",
    "STATUS_NOT_FOUND_AFTER_SECONDS",
    "RETRY_DELAY_SECONDS",
    "RETRY_INTERVAL_SECONDS",
    "PAYOUT_MAX_ATTEMPTS",
    "ALERT_INTERVAL_SECONDS",
    "BALANCE_CHECK_MINUTES",
    "BALANCE_ALERT_BELOW",
    "RECON_STALE_AFTER_MINUTES",
    "SMTP_PORT",
    "EVENTS_GIVE_UP_HOURS",
    "EVENTS_INTERVAL_SECONDS",
    "EVENTS_ALERT_AFTER_MINUTES",
    "C2B_MIN_AMOUNT",
    "C2B_MAX_AMOUNT",
    "C2B_PULL_INTERVAL_MINUTES",
    "C2B_PULL_HOURS",
)


ROLES = ("initiate", "operator", "read")
PLAIN_KEY_ROLES = frozenset({"initiate", "read"})


@dataclass(frozen=True)
class ApiKey:
    """A bearer key with a name (what the audit trail records) and roles; the secret is never
    shown in a repr or a log line."""

    name: str
    roles: frozenset[str]
    secret: str = field(repr=False)


def parse_api_keys(entries: list[str]) -> list[ApiKey]:
    """API_KEYS entries: `secret` (roles initiate and read, named key-N) or
    `name:role+role:secret`. ValueError names the bad entry by position, never by secret."""
    keys = []
    for position, entry in enumerate(entries, 1):
        parts = entry.split(":", 2)
        if len(parts) == 1:
            keys.append(ApiKey(f"key-{position}", PLAIN_KEY_ROLES, parts[0]))
            continue
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ValueError(f"API_KEYS entry {position} must be `secret` or `name:roles:secret`")
        roles = frozenset(parts[1].split("+"))
        if not roles <= set(ROLES):
            raise ValueError(
                f"API_KEYS entry {position} ({parts[0]}): roles are {', '.join(ROLES)} joined by +"
            )
        keys.append(ApiKey(parts[0], roles, parts[2]))
    return keys


def operator_emails(text: str) -> dict[str, str]:
    """OPERATOR_EMAILS as {key name: address}; ValueError names an entry without both."""
    pairs = {}
    for position, entry in enumerate((e.strip() for e in text.split(",") if e.strip()), 1):
        name, _, address = entry.partition("=")
        if not name.strip() or "@" not in address:
            raise ValueError(f"OPERATOR_EMAILS entry {position} must be `key_name=address`")
        pairs[name.strip()] = address.strip()
    return pairs


class SettingsError(Exception):
    """Configuration that cannot be run with; the message names every bad variable."""


class Settings:
    """Resolved configuration: environment variables over `.env` over the table's defaults."""

    def __init__(self, values: dict[str, str]):
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def integer(self, name: str) -> int:
        return int(self._values[name])

    def seconds(self, name: str) -> float:
        return float(self._values[name])

    def path(self, name: str) -> Path:
        """A folder or file setting; a relative one is under the project folder."""
        return PROJECT_DIR / self._values[name]

    def listing(self, name: str) -> list[str]:
        return [item.strip() for item in self._values[name].split(",") if item.strip()]

    @property
    def environment(self) -> str:
        return self._values["MPESA_ENVIRONMENT"]


def load_settings(environ: dict[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Read every setting, check it, and raise SettingsError naming whatever is wrong."""
    environ = dict(os.environ if environ is None else environ)
    file_values = _read_env_file(env_file if env_file is not None else PROJECT_DIR / ".env")
    given = {
        setting.name: environ.get(setting.name, file_values.get(setting.name, ""))
        for setting in SETTINGS
    }
    values = {setting.name: given[setting.name] or setting.default for setting in SETTINGS}
    problems = _apply_older_names(values, given)
    problems += _setting_problems(values, given)
    if problems:
        raise SettingsError("invalid configuration: " + "; ".join(problems))
    return Settings(values)


def _apply_older_names(values: dict[str, str], given: dict[str, str]) -> list[str]:
    """A setting given under its older name, when its current name is not given."""
    minutes = given["STK_EXPIRY_MINUTES"]
    if not minutes or given["STK_EXPIRY_SECONDS"]:
        return []
    if not WHOLE.fullmatch(minutes):
        return [f"STK_EXPIRY_MINUTES must be a whole number, not {minutes!r}"]
    values["STK_EXPIRY_SECONDS"] = str(int(minutes) * 60)
    return []


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def _api_key_problems(text: str) -> list[str]:
    try:
        parse_api_keys([entry.strip() for entry in text.split(",") if entry.strip()])
    except ValueError as error:
        return [str(error)]
    return []


def _setting_problems(values: dict[str, str], given: dict[str, str]) -> list[str]:
    """What is wrong; a required setting must be given explicitly, its default does not count."""
    environment = values["MPESA_ENVIRONMENT"]
    if environment not in ENVIRONMENTS:
        return [f"MPESA_ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}"]
    problems = []
    missing = [s.name for s in SETTINGS if environment in s.required_in and not given[s.name]]
    if missing:
        problems.append(f"missing for {environment}: {', '.join(missing)}")
    credential = given["MPESA_SECURITY_CREDENTIAL"] or (
        given["MPESA_INITIATOR_PASSWORD"] and given["MPESA_CERT_PATH"]
    )
    if environment == "production" and not credential:
        problems.append(
            "production needs MPESA_SECURITY_CREDENTIAL, or MPESA_INITIATOR_PASSWORD "
            "with MPESA_CERT_PATH"
        )
    for name in ("RESOLVE_SCHEDULE_SECONDS", "EVENTS_RETRY_SCHEDULE_SECONDS"):
        schedule = values[name].replace(" ", "").split(",")
        if not all(WHOLE.fullmatch(step) for step in schedule):
            problems.append(f"{name} must be comma-separated whole seconds, not {values[name]!r}")
    if values["EVENTS_URL"] and not values["EVENTS_SECRET"]:
        problems.append("EVENTS_SECRET is required when EVENTS_URL is set")
    problems += _api_key_problems(values["API_KEYS"])
    try:
        operator_emails(values["OPERATOR_EMAILS"])
    except ValueError as error:
        problems.append(str(error))
    for name in NUMERIC_SETTINGS:
        if not WHOLE.fullmatch(values[name]):
            problems.append(f"{name} must be a whole number, not {values[name]!r}")
    return problems + _timeout_problems(values) + _c2b_problems(values)


def _c2b_problems(values: dict[str, str]) -> list[str]:
    problems = []
    if values["C2B_RESPONSE_TYPE"] not in C2B_RESPONSE_TYPES:
        problems.append(
            f"C2B_RESPONSE_TYPE must be Completed or Cancelled, not {values['C2B_RESPONSE_TYPE']!r}"
        )
    try:
        re.compile(values["C2B_ACCOUNT_PATTERN"])
    except re.error as error:
        problems.append(f"C2B_ACCOUNT_PATTERN is not a regular expression ({error})")
    hours = values["C2B_PULL_HOURS"]
    if WHOLE.fullmatch(hours) and not 1 <= int(hours) <= 48:
        problems.append(f"C2B_PULL_HOURS must be between 1 and 48, not {hours}")
    return problems


C2B_RESPONSE_TYPES = ("Completed", "Cancelled")
WHOLE = re.compile(r"[0-9]+")  # not str.isdigit, which takes "²"
DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _timeout_problems(values: dict[str, str]) -> list[str]:
    for name in (
        "DARAJA_TIMEOUT_SECONDS",
        "SUBMITTING_STUCK_AFTER_SECONDS",
        "EVENTS_TIMEOUT_SECONDS",
    ):
        if not DECIMAL.fullmatch(values[name]) or float(values[name]) <= 0:
            return [f"{name} must be a positive number of seconds, not {values[name]!r}"]
    timeout, stuck = values["DARAJA_TIMEOUT_SECONDS"], values["SUBMITTING_STUCK_AFTER_SECONDS"]
    if float(stuck) <= float(timeout):
        return [
            f"SUBMITTING_STUCK_AFTER_SECONDS ({stuck}) must be more than "
            f"DARAJA_TIMEOUT_SECONDS ({timeout}): a payout still being sent is not stuck"
        ]
    return []
