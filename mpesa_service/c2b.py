"""C2B payments customers start themselves (paybill and till): the validation answer, the
confirmation applied once per receipt, Pull Transactions for confirmations that never came, the
read API, and C2B Register URL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.context import ApiError, Service
from mpesa_service.daraja import DarajaAccount
from mpesa_service.events import emit, writes_events
from mpesa_service.flags import add_flag
from mpesa_service.ids import new_id
from mpesa_service.parsing import (
    C2BPayment,
    bounded,
    json_amount,
    json_or_problem,
    parse_amount,
    parse_c2b_payload,
    text_or_none,
)
from mpesa_service.settings import Settings
from mpesa_service.storage import c2b_payments, utcnow
from recon.rules import (
    NAIROBI,
    PULL_TRANSACTIONS_HOURS,
    amount_gap,
    iso_time_to_utc,
    shillings_text,
)

# --- validation: accept or reject, from the body and the settings alone ---------------------

ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}
# REFERENCE 14's rejection codes, those the rules below give.
INVALID_ACCOUNT, INVALID_AMOUNT, INVALID_SHORTCODE, OTHER_ERROR = (
    "C2B00012",
    "C2B00013",
    "C2B00015",
    "C2B00016",
)


def c2b_shortcode(settings: Settings, default: str) -> str:
    """The paybill or till C2B payments come to: C2B_SHORTCODE, else `default` (the
    Daraja account's shortcode)."""
    return settings["C2B_SHORTCODE"] or default


def our_shortcodes(settings: Settings, account: DarajaAccount) -> frozenset[str]:
    """The shortcodes a C2B payment may be made to: the C2B paybill or till (c2b_shortcode),
    the STK paybill, and the STK till (MPESA_STK_PARTY_B) when there is one."""
    codes = (c2b_shortcode(settings, account.shortcode), account.shortcode, account.stk_party_b)
    return frozenset(code for code in codes if code)


def validation_answer(settings: Settings, shortcodes: frozenset[str], raw: str) -> dict:
    """Accept or reject a C2B validation by the settings' rules (one of `shortcodes`,
    BillRefNumber pattern, amount range). No database or network work: M-Pesa waits only
    about 8 s."""
    payload, problem = json_or_problem(raw)
    parsed = parse_c2b_payload(payload)
    refusal = (OTHER_ERROR, problem) if problem else None
    refusal = refusal or validation_refusal(settings, shortcodes, parsed, payload)
    if refusal is None:
        return dict(ACCEPTED)
    code, why = refusal
    log.info("C2B validation of %s rejected: %s %s", parsed.trans_id, code, why)
    return {"ResultCode": code, "ResultDesc": f"Rejected: {why}"}


def validation_refusal(
    settings: Settings, shortcodes: frozenset[str], parsed: C2BPayment, payload: object
) -> tuple[str, str] | None:
    """(code, why) when the payment must be rejected, else None."""
    if not isinstance(payload, dict):
        return OTHER_ERROR, "body is not a JSON object"
    if shortcodes and parsed.business_short_code not in shortcodes:
        return INVALID_SHORTCODE, f"BusinessShortCode {parsed.business_short_code!r} is not ours"
    pattern = settings["C2B_ACCOUNT_PATTERN"]
    reference = parsed.bill_ref_number or ""
    if pattern and not re.fullmatch(pattern, reference):
        return INVALID_ACCOUNT, f"BillRefNumber {reference!r} is not an account number"
    low, high = settings.integer("C2B_MIN_AMOUNT"), settings.integer("C2B_MAX_AMOUNT")
    amount = parsed.amount
    if amount is None or not low <= amount <= high:
        shown = payload.get("TransAmount")
        return INVALID_AMOUNT, f"TransAmount {shown!r} is not between {low:,} and {high:,}"
    return None


# --- confirmation: one row per receipt ---------------------------------------------------------


def apply_c2b_confirmation(conn: sa.Connection, raw: str, journal_id: str) -> str:
    """Record a confirmation: a new receipt is stored (and `c2b.received` emitted); one that
    Pull Transactions stored first is filled in; a repeat changes nothing. A malformed one is
    stored raw, without a receipt, and flagged. Returns the outcome."""
    payload, problem = json_or_problem(raw)
    parsed = parse_c2b_payload(payload)
    if problem:
        parsed.problems.insert(0, problem)
    if parsed.problems:
        return _store_malformed(conn, parsed, raw, journal_id)
    existing = _by_receipt(conn, parsed.trans_id)
    if existing is None:
        row = _insert(conn, _confirmed_values(parsed, raw, journal_id), source="confirmation")
        _emit_received(conn, row)
        return "recorded"
    if existing.confirmed_at is not None:
        return "duplicate"
    return _fill_pulled(conn, existing, parsed, raw, journal_id)


def _confirmed_values(parsed: C2BPayment, raw: str, journal_id: str) -> dict:
    return {
        "trans_id": parsed.trans_id,
        "transaction_type": parsed.transaction_type,
        "kind": parsed.kind,
        "amount": parsed.amount,
        "msisdn": parsed.msisdn,
        "bill_ref_number": parsed.bill_ref_number,
        "invoice_number": parsed.invoice_number,
        "business_short_code": parsed.business_short_code,
        "first_name": parsed.first_name,
        "middle_name": parsed.middle_name,
        "last_name": parsed.last_name,
        "trans_time": parsed.trans_time,
        "raw_response": raw,
        "journal_id": journal_id,
        "confirmed_at": utcnow(),
    }


def _insert(conn: sa.Connection, values: dict, source: str, outcome: str = "recorded"):
    payment_id = new_id()
    conn.execute(
        c2b_payments.insert().values(
            id=payment_id, source=source, outcome=outcome, received_at=utcnow(), **values
        )
    )
    return conn.execute(sa.select(c2b_payments).where(c2b_payments.c.id == payment_id)).one()


def _store_malformed(conn: sa.Connection, parsed: C2BPayment, raw: str, journal_id: str) -> str:
    """Keep the body whole, with no receipt (so that Pull Transactions can still store the
    payment it tells of), and flag it for a person."""
    row = _insert(
        conn,
        {"raw_response": raw, "journal_id": journal_id, "confirmed_at": utcnow()},
        source="confirmation",
        outcome="malformed",
    )
    add_flag(
        conn,
        "c2b_payment",
        row.id,
        "malformed_callback",
        f"C2B confirmation for TransID {parsed.trans_id}: " + "; ".join(parsed.problems),
    )
    return "malformed"


def _fill_pulled(conn: sa.Connection, existing, parsed: C2BPayment, raw: str, journal_id: str):
    """A confirmation that came after Pull Transactions stored its payment: the row takes the
    confirmation's details, once (compare-and-set on confirmed_at)."""
    values = _confirmed_values(parsed, raw, journal_id)
    values.pop("trans_id")
    values["amount"] = existing.amount  # the amount Pull Transactions saw stays the record
    filled = conn.execute(
        c2b_payments.update()
        .where(c2b_payments.c.id == existing.id, c2b_payments.c.confirmed_at.is_(None))
        .values(**values)
    ).rowcount
    if not filled:
        return "duplicate"
    if existing.amount != parsed.amount:
        add_flag(
            conn,
            "c2b_payment",
            existing.id,
            "amount_mismatch",
            f"C2B {parsed.trans_id}: Pull Transactions {shillings_text(existing.amount)} != "
            f"confirmation {shillings_text(parsed.amount)} "
            f"({amount_gap(existing.amount, parsed.amount)})",
        )
    return "filled"


def _by_receipt(conn: sa.Connection, trans_id: str | None):
    if not trans_id:
        return None
    return conn.execute(sa.select(c2b_payments).where(c2b_payments.c.trans_id == trans_id)).first()


def _emit_received(conn: sa.Connection, row) -> None:
    if writes_events(conn):
        emit(conn, "c2b.received", row.trans_id, c2b_payment_view(row))


# --- Pull Transactions: what confirmations missed ----------------------------------------------


@dataclass(frozen=True)
class PulledTransaction:
    """One item of a Pull Transactions answer (REFERENCE 12.3), read tolerantly."""

    trans_id: str | None
    trans_time: datetime | None
    msisdn: str | None
    transaction_type: str | None
    bill_ref_number: str | None
    amount: Decimal | None
    raw: str

    @classmethod
    def from_item(cls, item: dict) -> PulledTransaction:
        return cls(
            trans_id=bounded(text_or_none(item.get("transactionId")), 255),
            trans_time=_pulled_time(item.get("trxDate")),
            msisdn=bounded(text_or_none(item.get("msisdn")), 255),
            transaction_type=bounded(text_or_none(item.get("transactiontype")), 50),
            bill_ref_number=bounded(text_or_none(item.get("billreference")), 255),
            amount=parse_amount(item.get("amount")),
            raw=json.dumps(item, separators=(",", ":"), default=str),
        )


def _pulled_time(value: object) -> datetime | None:
    try:
        return iso_time_to_utc(str(value))
    except ValueError:
        return None


PULL_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def pull_c2b(svc: Service, hours: int | None = None) -> int:
    """Fetch the last `hours` (default C2B_PULL_HOURS) of C2B transactions and store those no
    confirmation brought, flagged. Returns how many were stored."""
    hours = hours or svc.settings.integer("C2B_PULL_HOURS")
    if not 1 <= hours <= PULL_TRANSACTIONS_HOURS:
        raise ValueError(
            f"hours: Pull Transactions keeps 1 to {PULL_TRANSACTIONS_HOURS} hours, not {hours}"
        )
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)
    stored = 0
    for item in _pulled_items(svc, start, end):
        pulled = PulledTransaction.from_item(item)
        if pulled.trans_id is None or pulled.amount is None:
            log.warning("Pull Transactions item without a receipt or amount: %.200s", pulled.raw)
            continue
        with svc.engine.begin() as conn:
            stored += store_pulled(conn, pulled)
    return stored


def _pulled_items(svc: Service, start: datetime, end: datetime):
    """Every item between `start` and `end`, page by page (OffSetValue)."""
    shortcode = c2b_shortcode(svc.settings, svc.client.account.shortcode)
    offset = 0
    while True:
        answer = svc.client.pull_transactions(
            shortcode=shortcode,
            start=start.astimezone(NAIROBI).strftime(PULL_DATE_FORMAT),
            end=end.astimezone(NAIROBI).strftime(PULL_DATE_FORMAT),
            offset=offset,
        )
        page = pulled_page(answer)
        yield from page
        if not page:
            return
        offset += len(page)


def pulled_page(answer: dict) -> list[dict]:
    """The items of one answer: `Response` is a list of items, or a list holding that list."""
    items = answer.get("Response") or []
    if items and isinstance(items[0], list):
        items = [item for inner in items for item in inner]
    return [item for item in items if isinstance(item, dict)]


def store_pulled(conn: sa.Connection, pulled: PulledTransaction) -> int:
    """Store a pulled transaction unless its receipt is stored already (1 if stored)."""
    if _by_receipt(conn, pulled.trans_id) is not None:
        return 0
    values = {
        "trans_id": pulled.trans_id,
        "transaction_type": pulled.transaction_type,
        "kind": C2BPayment(transaction_type=pulled.transaction_type).kind,
        "amount": pulled.amount,
        "msisdn": pulled.msisdn,
        "bill_ref_number": pulled.bill_ref_number,
        "trans_time": pulled.trans_time,
        "raw_response": pulled.raw,
    }
    row = _insert(conn, values, source="pull")
    add_flag(
        conn,
        "c2b_payment",
        row.id,
        "confirmation_missed",
        f"C2B payment {pulled.trans_id} of {pulled.amount} (bill reference "
        f"{pulled.bill_ref_number}) found by Pull Transactions: its confirmation never came",
    )
    _emit_received(conn, row)
    return 1


# --- reading -----------------------------------------------------------------------------------


def list_c2b_payments(svc: Service, since: str | None, bill_ref: str | None, limit=500) -> dict:
    """C2B payments newest first, received since `since` (ISO; Nairobi unless it carries an
    offset) and with bill reference `bill_ref`, each as c2b_payment_view."""
    query = sa.select(c2b_payments).order_by(c2b_payments.c.received_at.desc()).limit(limit)
    if since:
        try:
            query = query.where(c2b_payments.c.received_at >= iso_time_to_utc(since))
        except ValueError:
            raise ApiError(
                400, f"since: an ISO date or time, not {since!r}", field="since"
            ) from None
    if bill_ref:
        query = query.where(c2b_payments.c.bill_ref_number == bill_ref)
    with svc.engine.connect() as conn:
        return {"payments": [c2b_payment_view(row) for row in conn.execute(query)]}


def c2b_payment_view(row) -> dict:
    return {
        "id": row.id,
        "trans_id": row.trans_id,
        "kind": row.kind,
        "transaction_type": row.transaction_type,
        "amount": json_amount(row.amount),
        "msisdn": row.msisdn,
        "bill_ref_number": row.bill_ref_number,
        "invoice_number": row.invoice_number,
        "business_short_code": row.business_short_code,
        "name": " ".join(filter(None, (row.first_name, row.middle_name, row.last_name))) or None,
        "trans_time": _iso(row.trans_time),
        "source": row.source,
        "outcome": row.outcome,
        "received_at": _iso(row.received_at),
        "confirmed_at": _iso(row.confirmed_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if moment else None


# --- Register URL ------------------------------------------------------------------------------

C2B_HOOKS = {
    "validation": "/hooks/c2b/validation",
    "confirmation": "/hooks/c2b/confirmation",
}


def c2b_urls(svc: Service) -> dict[str, str]:
    """This deployment's C2B URLs, as Register URL is given them: {"validation": ...,
    "confirmation": ...} (PUBLIC_BASE_URL + hook path + callback token)."""
    return {name: svc.hook_url("c2b", name) for name in C2B_HOOKS}


@dataclass(frozen=True)
class Registration:
    """What `register-urls` asked Daraja for, and its answer."""

    shortcode: str
    response_type: str
    confirmation_url: str
    validation_url: str
    answer: dict


def register_urls(svc: Service) -> Registration:
    """C2B Register URL with this deployment's URLs (c2b_urls) and C2B_RESPONSE_TYPE; the
    caller checks the URLs first (golive.url_problems). DarajaError says why Daraja refused."""
    urls = c2b_urls(svc)
    shortcode = c2b_shortcode(svc.settings, svc.client.account.shortcode)
    response_type = svc.settings["C2B_RESPONSE_TYPE"]
    answer = svc.client.c2b_register_url(
        shortcode=shortcode,
        response_type=response_type,
        confirmation_url=urls["confirmation"],
        validation_url=urls["validation"],
    )
    return Registration(shortcode, response_type, urls["confirmation"], urls["validation"], answer)


def register_pull(svc: Service) -> dict | None:
    """Register the shortcode for Pull Transactions when C2B_PULL_NOMINATED_NUMBER is set."""
    nominated = svc.settings["C2B_PULL_NOMINATED_NUMBER"]
    if not nominated:
        return None
    return svc.client.pull_register(
        shortcode=c2b_shortcode(svc.settings, svc.client.account.shortcode),
        nominated_number=nominated,
        callback_url=c2b_urls(svc)["confirmation"],
    )
