"""The operator console: a server-rendered status page (Bottle templates, no JavaScript).

An operator signs in once with an API key that has the `operator` role. The session is kept on
the server (`console_sessions`), and its cookie carries a random token signed with
CONSOLE_SECRET (HttpOnly, SameSite=Strict, Secure behind HTTPS): signing out, staying idle for
CONSOLE_IDLE_SECONDS or 8 hours end it, even for a copied cookie. Every form carries a CSRF
token derived from the cookie. Resolutions go through `mpesa_service.operator`, and approvals
through `mpesa_service.approval`, the same functions as the API and the CLI, so the audit trail
names the key that signed in (and the maker's key may not approve its own payout).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import bottle
import sqlalchemy as sa

from mpesa_service.api_keys import console_secret, key_for
from mpesa_service.approval import AWAITING, Decision, approve_payout, reject_payout
from mpesa_service.batches import (
    XLSX_TYPE,
    BatchDecision,
    Upload,
    approve_batch,
    batch_detail,
    list_batches,
    reject_batch,
    result_file,
    upload_batch,
)
from mpesa_service.context import ApiError, Service
from mpesa_service.events import EventNotFound, redeliver
from mpesa_service.flags import flags_of
from mpesa_service.new_payout import check_draft, form_body, new_form_key, send_draft
from mpesa_service.operator import requery_payout, resolve_payout
from mpesa_service.payouts import payout_detail
from mpesa_service.reversals import (
    PAYOUT_NOT_REVERSIBLE,
    ReversalRequest,
    find_collection,
    reversals_of,
    reverse_collection,
)
from mpesa_service.settings import ApiKey
from mpesa_service.stk import payment_row_view
from mpesa_service.storage import (
    account_balances,
    b2c_payment_callbacks,
    b2c_payments,
    b2c_payout_attempts,
    c2b_payments,
    collection_audit,
    console_sessions,
    event_deliveries,
    events,
    payment_flags,
    payments,
    status_queries,
    utcnow,
)
from recon.codes import meaning
from recon.rules import NAIROBI, InvalidValue, mpesa_phone, nairobi_day_start_utc, shillings_text

TEMPLATES = [str(Path(__file__).resolve().parent / "templates")]
COOKIE = "console_session"
SESSION_SECONDS = 8 * 3600


# --- sessions and CSRF ------------------------------------------------------------------------


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def start_session(svc: Service, secret: str, key: ApiKey) -> str:
    """Record a new session for `key` (and forget those expired a day ago); the cookie
    that names it."""
    token, now = secrets.token_urlsafe(32), utcnow()
    with svc.engine.begin() as conn:
        conn.execute(
            console_sessions.delete().where(console_sessions.c.expires_at < now - timedelta(days=1))
        )
        conn.execute(
            console_sessions.insert().values(
                id=_session_id(token),
                key_name=key.name,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=SESSION_SECONDS),
            )
        )
    return f"{token}.{sign(secret, token)}"


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_key(svc: Service, secret: str, cookie: str) -> ApiKey | None:
    """The operator key of the live session a validly signed cookie names (None for anything
    else: a forged, ended, expired or idle session, or a key no longer configured)."""
    token, _, signature = cookie.partition(".")
    if not token or not hmac.compare_digest(signature, sign(secret, token)):
        return None
    now, sessions = utcnow(), console_sessions.c
    idle = timedelta(seconds=svc.settings.integer("CONSOLE_IDLE_SECONDS"))
    live = (
        sessions.id == _session_id(token),
        sessions.ended_at.is_(None),
        sessions.expires_at > now,
        sessions.last_seen_at > now - idle,
    )
    with svc.engine.begin() as conn:
        name = conn.execute(sa.select(sessions.key_name).where(*live)).scalar()
        if name is not None:
            conn.execute(console_sessions.update().where(*live).values(last_seen_at=now))
    return next((k for k in svc.keys if k.name == name and "operator" in k.roles), None)


def end_session(svc: Service, cookie: str) -> None:
    token = cookie.partition(".")[0]
    with svc.engine.begin() as conn:
        conn.execute(
            console_sessions.update()
            .where(console_sessions.c.id == _session_id(token))
            .values(ended_at=utcnow())
        )


def csrf_token(secret: str, cookie: str) -> str:
    return sign(secret, "csrf:" + cookie)[:32]


# --- times as operators read them ---------------------------------------------------------


def as_utc(moment: datetime | str) -> datetime:
    """A stored time (naive UTC, or an ISO string as the API gives it) as an aware UTC time."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def local_time(moment: datetime | str | None) -> str:
    """HTML for a time on a page: Nairobi local time with its zone, UTC when hovered.
    The one way the console shows a time. Templates print it unescaped ({{!when(...)}}):
    it is made of a datetime's digits only, never of text from a request or a callback."""
    if moment is None or moment == "":
        return ""
    utc = as_utc(moment)
    local = utc.astimezone(NAIROBI)
    return (
        f'<time datetime="{utc:%Y-%m-%dT%H:%M:%SZ}" title="{utc:%Y-%m-%d %H:%M:%S} UTC">'
        f"{local:%Y-%m-%d %H:%M} {local:%Z}</time>"
    )


def human_duration(span: timedelta) -> str:
    """How long, the way a person says it: "4 min", "3 h", "2 d" (rounded down)."""
    minutes = int(span.total_seconds() // 60)
    if minutes < 1:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def nairobi_day(moment: datetime) -> str:
    local = as_utc(moment).astimezone(NAIROBI)
    return f"{local.day} {local:%b %Y}"


# --- what the pages show --------------------------------------------------------------------


def mask_phone(phone: str | None) -> str:
    return f"{phone[:4]}****{phone[-4:]}" if phone and len(phone) >= 10 else (phone or "")


PHONE_IN_TEXT = re.compile(r"(?<![0-9])(?:254|0)[17][0-9]{8}(?![0-9])")


def mask_phones(text: str) -> str:
    """Every Kenyan mobile number in `text` (2547..., 2541..., 07..., 01...) masked, for raw
    bodies shown on a page; the database keeps them whole."""
    return PHONE_IN_TEXT.sub(lambda found: mask_phone(found.group(0)), text)


def totals(conn, table, time_column, since, *conditions) -> list[dict]:
    rows = conn.execute(
        sa.select(table.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(table.c.amount), 0))
        .where(time_column >= since, *conditions)
        .group_by(table.c.status)
        .order_by(table.c.status)
    ).all()
    return [{"status": status, "count": count, "kes": amount} for status, count, amount in rows]


def dashboard(svc: Service) -> dict:
    today = nairobi_day_start_utc()
    week = today - timedelta(days=6)
    with svc.engine.connect() as conn:
        return {
            "payouts_today": totals(conn, b2c_payments, b2c_payments.c.initiated_at, today),
            "payouts_week": totals(conn, b2c_payments, b2c_payments.c.initiated_at, week),
            "collections_today": totals(
                conn, payments, payments.c.created_at, today, payments.c.method == "mpesa"
            ),
            "collections_week": totals(
                conn, payments, payments.c.created_at, week, payments.c.method == "mpesa"
            ),
            "review": review_queue(conn),
            "awaiting_approval": conn.execute(
                sa.select(sa.func.count()).where(b2c_payments.c.status == AWAITING)
            ).scalar(),
            "failures": recent_failures(conn, week),
            "flags": open_flags(conn),
            "balance": latest_balance(conn),
            "recon": last_reconciliation(svc.settings.path("REPORTS_DIR")),
        }


def review_queue(conn) -> list[dict]:
    rows = conn.execute(
        sa.select(b2c_payments)
        .where(b2c_payments.c.status.in_(["review", "unknown"]))
        .order_by(b2c_payments.c.initiated_at)
        .limit(100)
    ).all()
    now = utcnow()
    return [
        {
            "reference_id": row.reference_id,
            "status": row.status,
            "amount": row.amount,
            "phone": mask_phone(row.phone_number),
            "initiated_at": row.initiated_at,
            "age": human_duration(now - (row.initiated_at or now)),
            "last_answer": last_status_answer(conn, row.id),
        }
        for row in rows
    ]


def approvals_queue(svc: Service) -> list[dict]:
    """Payouts awaiting approval, oldest first: who asked, how long ago, when they expire."""
    with svc.engine.connect() as conn:
        rows = conn.execute(
            sa.select(b2c_payments)
            .where(b2c_payments.c.status == AWAITING)
            .order_by(b2c_payments.c.initiated_at)
            .limit(100)
        ).all()
    now, hours = utcnow(), svc.settings.integer("APPROVAL_EXPIRES_HOURS")
    return [
        {
            "reference_id": row.reference_id,
            "amount": row.amount,
            "phone": mask_phone(row.phone_number),
            "user_id": row.user_id or "",
            "created_by": row.created_by or "",
            "reason": row.reason or "",
            "age": human_duration(now - (row.initiated_at or now)),
            "expires": expires_text(row.initiated_at or now, hours, now),
        }
        for row in rows
    ]


def expires_text(created: datetime, hours: int, now: datetime) -> str:
    if not hours:
        return "never"
    left = created + timedelta(hours=hours) - now
    return f"in {human_duration(left)}" if left > timedelta(0) else "now (the job ends it)"


def last_status_answer(conn, payout_id: str) -> str:
    row = conn.execute(
        sa.select(status_queries.c.result_code, status_queries.c.result_desc)
        .where(status_queries.c.payout_id == payout_id)
        .where(status_queries.c.result_code.is_not(None))
        .order_by(status_queries.c.requested_at.desc())
        .limit(1)
    ).first()
    return f"{row.result_code}: {row.result_desc}" if row else "no answer yet"


def recent_failures(conn, since) -> list[dict]:
    rows = conn.execute(
        sa.select(b2c_payments.c.reason_code, sa.func.count())
        .where(b2c_payments.c.status == "failed", b2c_payments.c.initiated_at >= since)
        .group_by(b2c_payments.c.reason_code)
        .order_by(sa.func.count().desc())
    ).all()
    return [
        {"code": code, "count": count, "meaning": meaning(code, "b2c") if code else ""}
        for code, count in rows
    ]


def open_flags(conn) -> list:
    """Unresolved flags, newest first, with the payout's reference where they are about one."""
    on_payout = sa.and_(
        payment_flags.c.subject_type == "payout", b2c_payments.c.id == payment_flags.c.subject_id
    )
    return conn.execute(
        sa.select(payment_flags, b2c_payments.c.reference_id)
        .select_from(payment_flags.outerjoin(b2c_payments, on_payout))
        .where(payment_flags.c.resolved_at.is_(None))
        .order_by(payment_flags.c.created_at.desc())
        .limit(50)
    ).all()


def latest_balance(conn):
    return conn.execute(
        sa.select(account_balances)
        .where(account_balances.c.account == "Utility Account")
        .order_by(account_balances.c.checked_at.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True)
class ReconciliationRun:
    """A report the scheduled reconciliation wrote: its folder under data/reports/, the
    Nairobi day(s) it covers (None when the report did not record them), when it ran (naive
    UTC) and its summary rows."""

    folder: str
    period: str | None
    ran_at: datetime
    rows: list[dict]


def last_reconciliation(reports_dir: Path) -> ReconciliationRun | None:
    """The report written last under `reports_dir` (a folder with a summary.csv): whichever
    day it covers, it is the newest run."""
    summaries = [p / "summary.csv" for p in reports_dir.glob("*") if (p / "summary.csv").is_file()]
    if not summaries:
        return None
    newest = max(summaries, key=lambda summary: (summary.stat().st_mtime_ns, summary.parent.name))
    return read_run(newest.parent)


def read_run(folder: Path) -> ReconciliationRun:
    """A report folder as the console shows it. Its period and run time come from the report's
    own report.json; a folder without one is dated by when its summary was written."""
    with (folder / "summary.csv").open() as summary:
        rows = list(csv.DictReader(summary))
    recorded = folder / "report.json"
    if not recorded.is_file():
        written = datetime.fromtimestamp((folder / "summary.csv").stat().st_mtime, UTC)
        return ReconciliationRun(folder.name, None, written.replace(tzinfo=None), rows)
    period = json.loads(recorded.read_text())["period"]
    ran_at = datetime.fromisoformat(period["as_of"])
    return ReconciliationRun(folder.name, days_covered(period), ran_at, rows)


def days_covered(period: dict) -> str:
    """The Nairobi days [since, until) covers: "3 Dec 2026", or "1 Dec 2026 to 3 Dec 2026"."""
    since, until = period["since"], period["until"]
    first = nairobi_day(datetime.fromisoformat(since)) if since else "the first record"
    if not until:
        return f"{first} to now"
    last = nairobi_day(datetime.fromisoformat(until) - timedelta(seconds=1))
    return first if first == last else f"{first} to {last}"


@dataclass(frozen=True)
class SearchResults:
    """The payouts and the collections a search found."""

    payouts: list
    collections: list


def search(svc: Service, text: str) -> SearchResults:
    """Payouts and collections that `text` names: any of their ids, a receipt, a user id or
    a phone typed in any of the usual forms (07…, 2547…, +2547…)."""
    needle = text.strip()
    if not needle:
        return SearchResults([], [])
    phone = typed_phone(needle)
    with svc.engine.connect() as conn:
        return SearchResults(
            payouts=find_payouts(conn, needle, phone),
            collections=find_collections(conn, needle, phone),
        )


def typed_phone(text: str) -> str | None:
    """The phone `text` is, as stored (2547…), or None when it is not a Kenyan mobile."""
    try:
        return mpesa_phone(text.replace(" ", ""))
    except InvalidValue:
        return None


def same_phone(column, phone: str | None):
    """`column` holds `phone` as stored now (2547…) or as the old system stored some
    (07…, +2547…); nothing matches when no phone was typed (never IS NULL)."""
    if phone is None:
        return sa.false()
    return column.in_([phone, "0" + phone[3:], "+" + phone])


def find_payouts(conn, needle: str, phone: str | None) -> list:
    columns, attempts = b2c_payments.c, b2c_payout_attempts.c
    receipt = needle.upper()
    by_attempt = sa.select(attempts.payout_id).where(
        sa.or_(
            attempts.originator_conversation_id == needle,
            attempts.conversation_id == needle,
            attempts.receipt == receipt,
        )
    )
    return conn.execute(
        sa.select(b2c_payments)
        .where(
            sa.or_(
                columns.reference_id == needle,
                columns.id == needle,
                columns.originator_conversation_id == needle,
                columns.conversation_id == needle,
                columns.transaction_id == receipt,
                columns.user_id == needle,
                same_phone(columns.phone_number, phone),
                columns.id.in_(by_attempt),
            )
        )
        .order_by(columns.initiated_at.desc())
        .limit(50)
    ).all()


def find_collections(conn, needle: str, phone: str | None) -> list:
    columns = payments.c
    return conn.execute(
        sa.select(payments)
        .where(
            sa.or_(
                columns.id == needle,
                columns.checkout_request_id == needle,
                columns.merchant_request_id == needle,
                columns.mpesa_receipt == needle.upper(),
                columns.transaction_reference == needle,
                columns.user_id == needle,
                same_phone(columns.phone_number, phone),
            )
        )
        .order_by(columns.created_at.desc())
        .limit(50)
    ).all()


def payout_page(svc: Service, reference_id: str) -> dict:
    detail = payout_detail(svc, reference_id)
    with svc.engine.connect() as conn:
        payout_id = conn.execute(
            sa.select(b2c_payments.c.id).where(b2c_payments.c.reference_id == reference_id)
        ).scalar()
        callbacks = conn.execute(
            sa.select(b2c_payment_callbacks)
            .where(b2c_payment_callbacks.c.payout_id == payout_id)
            .order_by(b2c_payment_callbacks.c.received_at)
        ).all()
        queries = conn.execute(
            sa.select(status_queries)
            .where(status_queries.c.payout_id == payout_id)
            .order_by(status_queries.c.requested_at)
        ).all()
    detail["phone_masked"] = mask_phone(detail["phone_number"])
    detail["callbacks"] = [(row, mask_phones(pretty_json(row.raw_response))) for row in callbacks]
    detail["queries"] = queries
    detail["paid_shown"] = amount_paid_text(detail)
    return detail


def collection_page(svc: Service, payment_id: str) -> dict | None:
    """A collection (STK or C2B) with its reversals and audit trail, for its console page;
    None if there is no such collection."""
    with svc.engine.connect() as conn:
        shown = _stk_shown(conn, payment_id) or _c2b_shown(conn, payment_id)
        if shown is None:
            return None
        collection = find_collection(conn, shown["kind"], payment_id)
        history = conn.execute(
            sa.select(collection_audit)
            .where(collection_audit.c.payment_id == payment_id)
            .order_by(collection_audit.c.created_at)
        ).all()
    attempts = reversals_of(svc, payment_id)
    latest = attempts[-1]["status"] if attempts else None
    return {
        **shown,
        "reversals": attempts,
        "history": history,
        "reversible": collection.paid and latest in (None, "failed"),
        "retry": latest == "failed",
    }


def _stk_shown(conn: sa.Connection, payment_id: str) -> dict | None:
    payment = conn.execute(sa.select(payments).where(payments.c.id == payment_id)).first()
    if payment is None:
        return None
    return {
        **payment_row_view(conn, payment),
        "kind": "stk",
        "phone_masked": mask_phone(payment.phone_number),
        "created_at": payment.created_at,
        "completed_at": payment.completed_at,
    }


def _c2b_shown(conn: sa.Connection, payment_id: str) -> dict | None:
    """A C2B payment in the keys the collection page shows (its MSISDN as Daraja sent it)."""
    row = conn.execute(sa.select(c2b_payments).where(c2b_payments.c.id == payment_id)).first()
    if row is None:
        return None
    return {
        "kind": "c2b",
        "payment_id": row.id,
        "status": "reversed" if row.reversed_at else row.outcome,
        "amount": row.amount,
        "paid_amount": row.amount,
        "phone_masked": row.msisdn or "",
        "checkout_request_id": None,
        "mpesa_receipt": row.trans_id,
        "result_code": None,
        "result_desc": f"C2B {row.kind or ''} payment, bill reference {row.bill_ref_number}",
        "created_at": row.received_at,
        "completed_at": row.trans_time,
        "reversal_receipt": row.reversal_receipt,
        "flags": flags_of(conn, "c2b_payment", row.id),
    }


def amount_paid_text(detail: dict) -> str:
    """What the page says was paid: the amount M-Pesa stated; for a payout completed without
    one (an operator's resolution as paid records none), the amount requested, said to be it."""
    if detail["paid_amount"] is not None:
        return shillings_text(detail["paid_amount"])
    if detail["status"] == "completed":
        return f"{shillings_text(detail['amount'])} (the amount requested: M-Pesa stated no amount)"
    return ""


def pretty_json(raw: str | None) -> str:
    try:
        return json.dumps(json.loads(raw or ""), indent=2, sort_keys=True)
    except ValueError:
        return raw or ""


@dataclass(frozen=True)
class EventRow:
    """One outbound event as the deliveries page shows it, with its last delivery attempt
    (None before the first). `reference_id` is the payout it tells of, if it is about one."""

    id: str
    type: str
    subject: str
    reference_id: str | None
    created_at: datetime
    state: str
    attempts: int
    failing: bool
    last_attempt: object | None


def recent_events(svc: Service, limit: int = 100) -> list[EventRow]:
    """The last `limit` events, those failing (given up, or pending after a failed attempt)
    first, newest first within each."""
    with svc.engine.connect() as conn:
        rows = conn.execute(sa.select(events).order_by(events.c.seq.desc()).limit(limit)).all()
        attempts = conn.execute(
            sa.select(event_deliveries)
            .where(event_deliveries.c.event_id.in_([row.id for row in rows]))
            .order_by(event_deliveries.c.attempted_at)
        ).all()
    last = {attempt.event_id: attempt for attempt in attempts}
    shown = [event_row_shown(row, last.get(row.id)) for row in rows]
    return sorted(shown, key=lambda event: not event.failing)  # stable: newest first kept


def event_row_shown(row, last_attempt) -> EventRow:
    failing = row.state == "failed" or (row.state == "pending" and row.attempts > 0)
    return EventRow(
        id=row.id,
        type=row.type,
        subject=row.subject,
        reference_id=row.subject if row.type.startswith("payout.") else None,
        created_at=row.created_at,
        state=row.state,
        attempts=row.attempts,
        failing=failing,
        last_attempt=last_attempt,
    )


def recent_c2b_payments(svc: Service, limit: int = 200) -> list:
    """The last `limit` C2B payments received, newest first, with their open flags' names."""
    with svc.engine.connect() as conn:
        rows = conn.execute(
            sa.select(c2b_payments).order_by(c2b_payments.c.received_at.desc()).limit(limit)
        ).all()
        flagged = conn.execute(
            sa.select(payment_flags.c.subject_id, payment_flags.c.flag).where(
                payment_flags.c.subject_type == "c2b_payment",
                payment_flags.c.subject_id.in_([row.id for row in rows]),
                payment_flags.c.resolved_at.is_(None),
            )
        ).all()
    flags: dict[str, list[str]] = {}
    for subject_id, flag in flagged:
        flags.setdefault(subject_id, []).append(flag)
    return [(row, flags.get(row.id, [])) for row in rows]


# --- routes -------------------------------------------------------------------------------------


def add_console(app: bottle.Bottle, svc: Service) -> None:
    console = Console(svc)
    add_sign_in_routes(app, console)
    add_page_routes(app, console)
    add_action_routes(app, console)
    add_batch_routes(app, console)


class Console:
    """What every console route needs: the signed-in operator, the CSRF check, and pages
    rendered with the helpers the templates use."""

    def __init__(self, svc: Service):
        self.svc = svc
        self.secret = console_secret(svc.settings)
        self.secure = svc.public_base_url.startswith("https://")

    def render(self, name: str, **values) -> str:
        # A page's own names, loop variables included, reach layout.tpl through rebase(): the
        # layout reads only names no page uses for anything else (search_text, not q).
        return bottle.template(
            name,
            template_lookup=TEMPLATES,
            url=url_segment,
            when=local_time,
            money=shillings_text,
            mask=mask_phone,
            **values,
        )

    def page(self, name: str, key: ApiKey, cookie: str, **values) -> str:
        """A signed-in page: the operator's name, the form token, and the message or error the
        redirect that led here carries (unless `values` name their own)."""
        return self.render(
            name, operator=key.name, csrf=self.csrf(cookie), **{**messages(), **values}
        )

    def signed_in(self) -> tuple[ApiKey, str]:
        """The operator's key and session cookie, or a redirect to the sign-in page."""
        cookie = bottle.request.get_cookie(COOKIE) or ""
        key = session_key(self.svc, self.secret, cookie)
        if key is None:
            bottle.redirect("/console/login", 303)
        return key, cookie

    def render_payout_form(
        self, key: ApiKey, cookie: str, typed: dict, form_key: str, error: str = ""
    ) -> str:
        return self.page(
            "new_payout", key, cookie, typed=typed, form_key=form_key, message="", error=error
        )

    def render_batches(self, key: ApiKey, cookie: str, report: dict | None, error: str = ""):
        return self.page(
            "batches",
            key,
            cookie,
            batches=list_batches(self.svc),
            report=report,
            message="",
            error=error,
        )

    def csrf(self, cookie: str) -> str:
        return csrf_token(self.secret, cookie)

    def checked_form(self, cookie: str) -> bottle.FormsDict:
        form = bottle.request.forms
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf(cookie)):
            bottle.abort(403, "the form's CSRF token is missing or wrong: reload the page")
        return form


def add_sign_in_routes(app: bottle.Bottle, console: Console) -> None:
    svc = console.svc

    @app.get("/console/login")
    def login_page():
        return console.render("login", error=bottle.request.query.get("error", ""))

    @app.post("/console/login")
    def login():
        key = key_for(bottle.request.forms.get("key", ""), svc.keys)
        if key is None or "operator" not in key.roles:
            bottle.redirect("/console/login?error=" + quote("not an operator key"), 303)
        bottle.response.set_cookie(
            COOKIE,
            start_session(svc, console.secret, key),
            httponly=True,
            samesite="strict",
            secure=console.secure,
            path="/console",
            max_age=SESSION_SECONDS,
        )
        bottle.redirect("/console", 303)

    @app.post("/console/logout")
    def logout():
        _, cookie = console.signed_in()
        console.checked_form(cookie)
        end_session(svc, cookie)
        bottle.response.delete_cookie(COOKIE, path="/console")
        bottle.redirect("/console/login", 303)


def add_page_routes(app: bottle.Bottle, console: Console) -> None:
    svc = console.svc

    @app.get("/console")
    def home():
        key, cookie = console.signed_in()
        query = bottle.request.query.get("q", "")
        return console.page(
            "dashboard",
            key,
            cookie,
            search_text=query,
            found=search(svc, query) if query.strip() else None,
            **dashboard(svc),
        )

    @app.get("/console/payouts/<reference_id>")
    def payout(reference_id):
        key, cookie = console.signed_in()
        try:
            page = payout_page(svc, reference_id)
        except ApiError as error:
            bottle.abort(404, error.message)
        return console.page("payout", key, cookie, p=page, not_reversible=PAYOUT_NOT_REVERSIBLE)

    @app.get("/console/payments/<payment_id>")
    def collection(payment_id):
        key, cookie = console.signed_in()
        page = collection_page(svc, payment_id)
        if page is None:
            bottle.abort(404, f"no collection with id {payment_id}")
        return console.page("payment", key, cookie, c=page)

    @app.get("/console/approvals")
    def approvals_page():
        key, cookie = console.signed_in()
        return console.page(
            "approvals",
            key,
            cookie,
            waiting=approvals_queue(svc),
            batches=[b for b in list_batches(svc) if b["status"] == AWAITING],
        )

    @app.get("/console/new-payout")
    def new_payout_page():
        key, cookie = console.signed_in()
        return console.render_payout_form(key, cookie, {}, new_form_key())

    @app.get("/console/events")
    def events_page():
        key, cookie = console.signed_in()
        return console.page("events", key, cookie, events=recent_events(svc))

    @app.get("/console/c2b")
    def c2b_page():
        key, cookie = console.signed_in()
        return console.page("c2b", key, cookie, payments=recent_c2b_payments(svc))

    @app.get("/console/reports/<run>/<name>")
    def report_file(run, name):
        console.signed_in()
        folder = report_file_folder(svc.settings.path("REPORTS_DIR"), run, name)
        if folder is None:
            bottle.abort(404, "no such report file")
        return bottle.static_file(name, root=str(folder))


def add_action_routes(app: bottle.Bottle, console: Console) -> None:
    svc = console.svc

    @app.post("/console/payouts/<reference_id>/resolve")
    def resolve(reference_id):
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        act(
            reference_id,
            lambda: resolve_payout(
                svc,
                reference_id,
                outcome=form.get("outcome", ""),
                actor=key.name,
                receipt=form.get("receipt") or None,
                note=form.getunicode("note") or "",
            ),
        )

    @app.post("/console/payouts/<reference_id>/requery")
    def requery(reference_id):
        key, cookie = console.signed_in()
        console.checked_form(cookie)
        act(reference_id, lambda: requery_payout(svc, reference_id, actor=key.name))

    @app.post("/console/payments/<payment_id>/reverse")
    def reverse(payment_id):
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        body = {"reason": form.getunicode("reason") or "", "retry": form.get("retry") == "yes"}
        target = f"/console/payments/{url_segment(payment_id)}"
        try:
            request = ReversalRequest.from_body(payment_id, body, f"{key.name} (console)")
            status, reversal = reverse_collection(svc, request)
        except ApiError as error:
            bottle.redirect(f"{target}?error={quote(error.message)}", 303)
        said = "reversal sent, now" if status == 201 else "a reversal was asked for already:"
        said = f"{said} {reversal['status']}"
        bottle.redirect(f"{target}?message={quote(said)}", 303)

    @app.post("/console/payouts/<reference_id>/approve")
    def approve(reference_id):
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        decision = Decision(reference_id, key.name, (form.getunicode("reason") or "").strip())
        decide_and_return(lambda: approve_payout(svc, decision), "approved")

    @app.post("/console/payouts/<reference_id>/reject")
    def reject(reference_id):
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        decision = Decision(reference_id, key.name, (form.getunicode("reason") or "").strip())
        decide_and_return(lambda: reject_payout(svc, decision), "rejected")

    @app.post("/console/new-payout/check")
    def check_new_payout():
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        body, form_key = form_body(form), form.get("key") or new_form_key()
        try:
            draft = check_draft(svc, body, form_key)
        except ApiError as error:
            return console.render_payout_form(key, cookie, body, form_key, error.message)
        return console.page("new_payout_confirm", key, cookie, draft=draft)

    @app.post("/console/new-payout/send")
    def send_new_payout():
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        body, form_key = form_body(form), form.get("key", "")
        try:
            status, payout = send_draft(svc, body, form_key, key.name)
        except ApiError as error:
            return console.render_payout_form(key, cookie, body, form_key, error.message)
        said = "payout sent, now" if status == 201 else "this form was sent before: its payout is"
        said = f"{said} {payout['status']}"
        if payout["status"] == AWAITING:
            said += ": nothing is sent until another operator approves it"
        target = f"/console/payouts/{url_segment(payout['reference_id'])}"
        bottle.redirect(f"{target}?message={quote(said)}", 303)

    @app.post("/console/events/<event_id>/redeliver")
    def redeliver_event(event_id):
        _, cookie = console.signed_in()
        console.checked_form(cookie)
        redeliver_and_return(svc, event_id)


def add_batch_routes(app: bottle.Bottle, console: Console) -> None:
    """Bulk payouts: the upload form and the list, a batch's page with its progress, the
    approve and reject buttons (as the session's key) and its result file."""
    svc = console.svc

    @app.get("/console/batches")
    def batches_page():
        key, cookie = console.signed_in()
        return console.render_batches(key, cookie, report=None)

    @app.post("/console/batches/upload")
    def upload():
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        chosen = bottle.request.files.get("file")
        if chosen is None:
            return console.render_batches(key, cookie, None, "choose a CSV or XLSX file")
        limit = svc.settings.integer("BULK_MAX_BYTES")
        content = chosen.file.read(limit + 1)
        skip = form.get("skip_bad_rows") == "1"
        try:
            batch = upload_batch(svc, Upload(content, chosen.raw_filename or "", key.name, skip))
        except ApiError as error:
            report = error.extra.get("report")
            return console.render_batches(key, cookie, report, error.message)
        said = f"batch uploaded: {batch['row_count']} rows, now {batch['status']}"
        bottle.redirect(
            f"/console/batches/{url_segment(batch['batch_id'])}?message={quote(said)}", 303
        )

    @app.get("/console/batches/<batch_id>")
    def batch_page(batch_id):
        key, cookie = console.signed_in()
        try:
            batch = batch_detail(svc, batch_id)
        except ApiError as error:
            bottle.abort(404, error.message)
        return console.page("batch", key, cookie, b=batch)

    @app.post("/console/batches/<batch_id>/<verb:re:approve|reject>")
    def decide_batch(batch_id, verb):
        key, cookie = console.signed_in()
        form = console.checked_form(cookie)
        decision = BatchDecision(batch_id, key.name, (form.getunicode("reason") or "").strip())
        action = approve_batch if verb == "approve" else reject_batch
        target = f"/console/batches/{url_segment(batch_id)}"
        try:
            batch = action(svc, decision)
        except ApiError as error:
            bottle.redirect(f"{target}?error={quote(error.message)}", 303)
        said = f"batch {verb}d: now {batch['status']}"
        bottle.redirect(f"{target}?message={quote(said)}", 303)

    @app.get("/console/batches/<batch_id>/result.<kind:re:csv|xlsx>")
    def batch_result(batch_id, kind):
        console.signed_in()
        try:
            content = result_file(svc, batch_id, kind)
        except ApiError as error:
            bottle.abort(404, error.message)
        bottle.response.content_type = "text/csv; charset=utf-8" if kind == "csv" else XLSX_TYPE
        disposition = f'attachment; filename="{batch_id}-result.{kind}"'
        bottle.response.set_header("Content-Disposition", disposition)
        return content


def report_file_folder(reports_dir: Path, run: str, name: str) -> Path | None:
    """The folder of report run `run` if `name` is a file in it. Both are looked up in the
    listings of `reports_dir` and of the run, never joined onto a path: nothing from the URL
    can reach outside the reports the runs wrote."""
    if not reports_dir.is_dir():
        return None
    runs = {entry.name: entry for entry in reports_dir.iterdir() if entry.is_dir()}
    folder = runs.get(run)
    if folder is None or name not in {f.name for f in folder.iterdir() if f.is_file()}:
        return None
    return folder


def url_segment(value: object) -> str:
    """A value as one URL path segment: every character that could end it (/ ? #) or change
    its meaning (%, quotes, spaces) percent-encoded. Templates put every value that goes into
    a link or a form action through this (the HTML escaping of {{...}} comes on top)."""
    return quote(str(value), safe="")


def act(reference_id: str, action) -> None:
    """Run an operator action and go back to the payout's page saying how it went."""
    target = f"/console/payouts/{url_segment(reference_id)}"
    try:
        result = action()
    except ApiError as error:
        bottle.redirect(f"{target}?error={quote(error.message)}", 303)
    bottle.redirect(f"{target}?message={quote(describe(result))}", 303)


def decide_and_return(action, done: str) -> None:
    """Apply an approval or a rejection and go back to the approvals queue saying how it went
    (a refusal, such as approving one's own payout, says why)."""
    try:
        payout = action()
    except ApiError as error:
        bottle.redirect(f"/console/approvals?error={quote(error.message)}", 303)
    said = f"payout {payout['reference_id']} {done}: now {payout['status']}"
    bottle.redirect(f"/console/approvals?message={quote(said)}", 303)


def redeliver_and_return(svc: Service, event_id: str) -> None:
    """Make the event due now and go back to the deliveries page saying so."""
    try:
        event = redeliver(svc.engine, event_id)
    except EventNotFound:
        bottle.redirect(f"/console/events?error={quote(f'no event {event_id}')}", 303)
    done = f"event {event['id']} ({event['type']}, {event['subject']}) is due for delivery now"
    bottle.redirect(f"/console/events?message={quote(done)}", 303)


def describe(result: dict) -> str:
    if "outcome" in result:
        return f"resolved as {result['outcome']}: now {result['status']}"
    return f"status query sent (step {result['step']})"


def messages() -> dict:
    return {
        "message": bottle.request.query.get("message", ""),
        "error": bottle.request.query.get("error", ""),
    }
