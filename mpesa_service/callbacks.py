"""Receiving callbacks: journal first, refuse what is forged, store raw, apply once in one
transaction that also records the journal entry; replay what the database missed."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.c2b import apply_c2b_confirmation
from mpesa_service.callback_auth import client_address
from mpesa_service.context import Service
from mpesa_service.flags import add_flag
from mpesa_service.ids import new_id
from mpesa_service.journal import journal_entry_body, mark_journal_applied
from mpesa_service.parsing import (
    ResultCallback,
    bounded,
    json_or_problem,
    parse_amount,
    parse_result_callback,
    parse_stk_callback,
)
from mpesa_service.payouts import apply_b2c_callback, store_result_callback
from mpesa_service.resolution import apply_status_callback
from mpesa_service.reversals import apply_reversal_callback, apply_reversal_status_callback
from mpesa_service.stk import apply_stk_callback
from mpesa_service.storage import (
    account_balances,
    callback_journal,
    utcnow,
)
from mpesa_service.throughput.handoff import Delivery

# The answer to a callback that is journaled, as Daraja expects it.
ACKNOWLEDGED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def _handle_stk(svc: Service, conn, raw: str, journal_id: str, kind: str, payment_id="") -> str:
    payload, problem = json_or_problem(raw)
    parsed = parse_stk_callback(payload)
    if problem:
        parsed.problems.insert(0, problem)
    return apply_stk_callback(conn, parsed, raw, journal_id, payment_id)


def _handle_result(svc: Service, conn, raw: str, journal_id: str, kind: str, payment_id="") -> str:
    payload, problem = json_or_problem(raw)
    parsed = parse_result_callback(payload)
    if problem:
        parsed.problems.insert(0, problem)
    if kind in ("b2c_result", "b2c_timeout"):
        return apply_b2c_callback(conn, parsed, raw, journal_id, kind.removeprefix("b2c_"))
    if kind == "balance_result":
        return apply_balance_callback(svc, conn, parsed, raw, journal_id)
    return apply_status_callback(svc, conn, parsed, raw, journal_id, STORED_KINDS[kind])


def _handle_reversal(svc: Service, conn, raw: str, journal_id: str, kind: str, named="") -> str:
    """A reversal's result, queue timeout, status answer or status timeout; `named` is the
    reversal its URL names."""
    payload, problem = json_or_problem(raw)
    parsed = parse_result_callback(payload)
    if problem:
        parsed.problems.insert(0, problem)
    stored_kind = REVERSAL_KINDS[kind]
    if stored_kind in ("result", "timeout"):
        return apply_reversal_callback(conn, parsed, raw, journal_id, stored_kind, named)
    return apply_reversal_status_callback(conn, parsed, raw, journal_id, stored_kind, named)


REVERSAL_KINDS = {
    "reversal_result": "result",
    "reversal_timeout": "timeout",
    "reversal_status_result": "status",
    "reversal_status_timeout": "status_timeout",
}


def _handle_c2b(svc: Service, conn, raw: str, journal_id: str, kind: str, payment_id="") -> str:
    """A confirmation is recorded; a validation was answered from its body when it came, and
    the journal keeps it."""
    if kind == "c2b_confirmation":
        return apply_c2b_confirmation(conn, raw, journal_id)
    return "validated"


CALLBACK_HANDLERS = {
    "c2b_validation": _handle_c2b,
    "c2b_confirmation": _handle_c2b,
    "stk": _handle_stk,
    "b2c_result": _handle_result,
    "b2c_timeout": _handle_result,
    "status_result": _handle_result,
    "status_timeout": _handle_result,
    "balance_result": _handle_result,
    "balance_timeout": _handle_result,
    **{kind: _handle_reversal for kind in REVERSAL_KINDS},
}
STORED_KINDS = {
    "status_result": "status",
    "status_timeout": "status_timeout",
    "balance_result": "balance",
    "balance_timeout": "balance_timeout",
}


def apply_balance_callback(
    svc: Service, conn, parsed: ResultCallback, raw: str, journal_id: str
) -> str:
    """Store each account's available balance; flag a utility account below the threshold."""
    balances = parse_account_balances(parsed.parameters.get("AccountBalance"))
    now = utcnow()
    for balance in balances:
        conn.execute(
            account_balances.insert().values(
                id=new_id(),
                account=balance.account,
                currency=balance.currency,
                available=balance.available,
                checked_at=now,
                journal_id=journal_id,
            )
        )
    threshold = svc.settings.integer("BALANCE_ALERT_BELOW")
    utility = [b.available for b in balances if b.account == "Utility Account"]
    if threshold and utility and utility[0] < threshold:
        add_flag(
            conn,
            "account",
            "Utility Account",
            "balance_low",
            f"B2C utility account has {utility[0]:,.2f}, below {threshold:,}",
        )
    outcome = "recorded" if balances else "malformed"
    store_result_callback(conn, parsed, raw, journal_id, "balance", None, outcome)
    return outcome


class AccountBalance(NamedTuple):
    account: str
    currency: str
    available: Decimal


def parse_account_balances(value: object) -> list[AccountBalance]:
    """'Working Account|KES|120000.00|...&Utility Account|KES|84512.50|...' as one
    AccountBalance per account; unreadable parts are skipped."""
    balances = []
    for part in str(value or "").split("&"):
        fields = [field.strip() for field in part.split("|")]
        available = parse_amount(fields[2]) if len(fields) >= 3 else None
        account, currency = (
            (bounded(fields[0], 100), bounded(fields[1], 10)) if available else (None, None)
        )
        if account and currency is not None:
            balances.append(AccountBalance(account, currency, available))
        else:
            log.warning("unreadable balance entry %.80r", part)
    return balances


def receive_callback(
    svc: Service,
    kind: str,
    token: str,
    body: bytes,
    peer: str,
    forwarded_for: str = "",
    until_applied: bool = False,
    payment_id: str = "",
) -> tuple[int, dict]:
    """Check, journal, answer, apply. The answer is (HTTP status, JSON body), given once the
    callback is journaled (durably: from then on it is applied or replayed), or with
    `until_applied` once it is applied too, with what applying it raised. `payment_id` is the
    payment the callback's URL names, journaled with it (see stk.apply_stk_callback)."""
    refusal = svc.policy.refusal(token, peer, forwarded_for)
    address = client_address(peer, forwarded_for, svc.policy.trusted_proxies)
    if refusal:
        refuse_delivery(svc, kind, body, len(body), address, refusal.reason)
        return refusal.status, {"ResultCode": 1, "ResultDesc": "Rejected"}
    problem = svc.callback_writer.submit(Delivery(kind, body, address, payment_id, until_applied))
    if problem:
        return 400, {"ResultCode": 1, "ResultDesc": problem}
    return 200, dict(ACKNOWLEDGED)


def refuse_delivery(svc: Service, kind: str, body: bytes, size: int, sender: str, reason: str):
    """Keep a bounded record of a delivery that was refused (see Journal.append_refused)."""
    if svc.journal.append_refused(kind, body, size, sender, reason):
        log.warning("callback refused (%s) from %s: %s", kind, sender, reason)


def apply_callback(svc: Service, kind: str, raw: str, journal_id: str, payment_id="") -> str:
    """Apply one journaled callback in one transaction, once: the journal id is recorded in
    the same transaction. A unique-key race with a concurrent delivery is retried.
    `payment_id` is the payment its URL named, if any."""
    for attempt in range(3):
        try:
            with svc.engine.begin() as conn:
                if not mark_journal_applied(conn, journal_id, kind):
                    return "already_applied"
                return CALLBACK_HANDLERS[kind](svc, conn, raw, journal_id, kind, payment_id)
        except (sa.exc.IntegrityError, sa.exc.OperationalError) as error:
            if attempt == 2 or not _is_retryable(error):
                raise
    raise AssertionError("unreachable")


def _is_retryable(error: sa.exc.DBAPIError) -> bool:
    if isinstance(error, sa.exc.IntegrityError):
        return True
    code = error.orig.args[0] if error.orig and error.orig.args else None
    return code in (1213, 1205)  # MySQL deadlock, lock wait timeout


def replay_journal(svc: Service) -> int:
    """Apply every journaled callback the database does not have yet. Returns how many."""
    with svc.engine.connect() as conn:
        done = set(conn.execute(sa.select(callback_journal.c.id)).scalars())
    applied = 0
    for entry in svc.journal.entries():
        if entry.get("state") != "received" or entry.get("id") in done:
            continue
        if entry.get("kind") not in CALLBACK_HANDLERS:
            continue
        raw = journal_entry_body(entry).decode("utf-8", errors="replace")
        try:
            outcome = apply_callback(
                svc, entry["kind"], raw, entry["id"], entry.get("payment_id", "")
            )
        except Exception:  # noqa: BLE001 - one entry must not hold back the ones after it
            log.exception("journal entry %s could not be replayed; moving on", entry["id"])
            continue
        if outcome != "already_applied":
            applied += 1
    return applied
