"""Receiving callbacks: journal first, refuse what is forged, store raw, apply once in one
transaction that also records the journal entry; replay what the database missed."""

from __future__ import annotations

import contextlib
import threading
from decimal import Decimal
from typing import NamedTuple

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.batch_results import SuccessBatch
from mpesa_service.callback_auth import client_address
from mpesa_service.context import Service
from mpesa_service.flags import add_flag
from mpesa_service.groupcommit import GroupCommit, Ticket
from mpesa_service.ids import new_id
from mpesa_service.journal import journal_entries_applied, journal_entry_body, mark_journal_applied
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
from mpesa_service.stk import apply_stk_callback
from mpesa_service.storage import (
    account_balances,
    batch_engine,
    callback_journal,
    utcnow,
)

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


CALLBACK_HANDLERS = {
    "stk": _handle_stk,
    "b2c_result": _handle_result,
    "b2c_timeout": _handle_result,
    "status_result": _handle_result,
    "status_timeout": _handle_result,
    "balance_result": _handle_result,
    "balance_timeout": _handle_result,
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
    problem = callback_writer(svc).submit((kind, body, address, payment_id, until_applied))
    if problem:
        return 400, {"ResultCode": 1, "ResultDesc": problem}
    return 200, dict(ACKNOWLEDGED)


def refuse_delivery(svc: Service, kind: str, body: bytes, size: int, sender: str, reason: str):
    """Keep a bounded record of a delivery that was refused (see Journal.append_refused)."""
    if svc.journal.append_refused(kind, body, size, sender, reason):
        log.warning("callback refused (%s) from %s: %s", kind, sender, reason)


# One writer thread on every database (and one applying thread after it). Before the two stages
# were split, a second writer on MariaDB (writing a batch while the other waited on the server)
# left both with batches of 8-10 and cost 15% more CPU per callback for no more callbacks a
# second: issue 9's A/B under wrk, 1.06 against 1.25 ms and 781 against 732/s (medians of five
# alternating rounds, 2026-11-26).
CALLBACK_WRITERS = 1
_WRITER_LOCK = threading.Lock()


def callback_writer(svc: Service) -> GroupCommit:
    """The service's one callback writer (see groupcommit): concurrent deliveries are journaled
    with one fsync and applied in one transaction, each request answered as soon as its batch
    is journaled (journal_batch), the batch applied on a second thread (apply_batch) that holds
    one connection while it is busy."""
    if svc.callback_writer is not None:  # every callback asks: no lock once it exists
        return svc.callback_writer
    with _WRITER_LOCK:
        if svc.callback_writer is None:
            svc.callback_writer = GroupCommit(
                lambda tickets: journal_batch(svc, tickets),
                name="callback-writer",
                writers=CALLBACK_WRITERS,
                then=lambda tickets: apply_batch(svc, tickets),
                then_context=lambda: held_connection(svc.engine),
            )
        return svc.callback_writer


def wait_applied(svc: Service, timeout: float = 10.0) -> bool:
    """Wait until every callback received so far has been applied (or kept for replay), not
    just answered: for tests, benchmarks and a clean shutdown. False on timeout."""
    writer = svc.callback_writer
    return writer is None or writer.drain(timeout)


_writer_thread = threading.local()


@contextlib.contextmanager
def held_connection(engine: sa.Engine):
    """For a callback writer thread's life, one connection (from storage.batch_engine) that
    its batches reuse, so that a batch does not pay the pool's checkout ping and return
    rollback (two of its nine or so round trips). It is taken on first use, so entering
    cannot fail."""
    _writer_thread.engine, _writer_thread.connection = engine, None
    try:
        yield
    finally:
        connection = _writer_thread.connection
        _writer_thread.engine = _writer_thread.connection = None
        if connection is not None:
            connection.close()


@contextlib.contextmanager
def batch_transaction(engine: sa.Engine):
    """A transaction on the writer thread's held connection, or on a pooled one elsewhere.
    After any failure the held connection is closed and the next batch takes a fresh one."""
    if getattr(_writer_thread, "engine", None) is not engine:
        with engine.begin() as conn:
            yield conn
        return
    if _writer_thread.connection is None:
        _writer_thread.connection = batch_engine(engine).connect()
    conn = _writer_thread.connection
    try:
        with conn.begin():
            yield conn
    except BaseException:
        _writer_thread.connection = None
        conn.close()
        raise


def journal_batch(svc: Service, tickets: list[Ticket]) -> None:
    """The writer's first stage: journal a batch of (kind, body, address, payment id,
    until_applied) deliveries with one fsync, parse each body once, and answer each ticket (its
    result: what is wrong with its body as JSON, or None) unless it waits `until_applied`. Each
    ticket's handover, (kind, raw body, journal id), the parsed body and the payment id, goes
    on to apply_batch.

    A callback is answered once it is journaled, before it is applied: the journal is durable,
    and one not applied is replayed (the same rule as when the database is down). Answering
    first lets the answered connections send the next batch while this one is applied, and
    with the two stages on two threads the next batch is journaled meanwhile too (issue 9: on
    MariaDB about a quarter more callbacks a second than one thread doing both)."""
    journal_ids = svc.journal.append_many([ticket.item[:4] for ticket in tickets])
    for ticket, journal_id in zip(tickets, journal_ids, strict=True):
        kind, body, _, payment_id, until_applied = ticket.item
        raw = body.decode("utf-8", errors="replace")
        parsed = json_or_problem(raw)
        ticket.result = parsed[1]
        ticket.handover = ((kind, raw, journal_id), parsed, payment_id)
        if not until_applied:
            ticket.finish()


def apply_batch(svc: Service, tickets: list[Ticket]) -> None:
    """The writer's second stage: apply what journal_batch handed over. A ticket waiting
    `until_applied` gets what applying it raised as its error; for the others, already
    answered, that is logged, and the callback stays in the journal for replay."""
    deliveries, payloads, named = [], {}, {}
    for ticket in tickets:
        delivery, parsed, payment_id = ticket.handover
        deliveries.append(delivery)
        payloads[delivery[2]] = parsed
        if payment_id:
            named[delivery[2]] = payment_id
    errors = apply_deliveries(svc, deliveries, payloads, named)
    for ticket, error, (kind, _, journal_id) in zip(tickets, errors, deliveries, strict=True):
        if error is not None and ticket.finished:
            log.error(
                "%s callback %s kept in the journal for replay: applying it failed",
                kind,
                journal_id,
                exc_info=error,
            )
        ticket.error = error


def apply_deliveries(
    svc: Service,
    deliveries: list[tuple[str, str, str]],
    payloads: dict | None = None,
    named: dict | None = None,
) -> list:
    """Apply journaled (kind, raw body, journal id) deliveries: together in one transaction,
    or, if any of them fails there, each on its own so that one bad callback neither holds
    back nor undoes the others. A database failure leaves a callback in the journal for
    replay. `payloads` may hold bodies already parsed, as {journal id: json_or_problem(raw)},
    and `named` the payments their URLs named, as {journal id: payment id}. Returns, per
    delivery, the other error it raised, or None."""
    named = named or {}
    if deliveries and _apply_together(svc, deliveries, payloads or {}, named):
        return [None] * len(deliveries)
    errors = []
    for kind, raw, journal_id in deliveries:
        errors.append(None)
        try:
            apply_callback(svc, kind, raw, journal_id, named.get(journal_id, ""))
        except sa.exc.SQLAlchemyError:
            log.exception(
                "callback %s kept in the journal for replay: the database failed", journal_id
            )
        except Exception as error:  # noqa: BLE001 - raised in the request that delivered it
            errors[-1] = error
    return errors


def _apply_together(
    svc: Service, deliveries: list[tuple[str, str, str]], payloads: dict, named: dict
) -> bool:
    try:
        with batch_transaction(svc.engine) as conn:
            journaled = journal_entries_applied([(jid, kind) for kind, _, jid in deliveries])
            successes = SuccessBatch(conn, deliveries, payloads, leading=[journaled])
            for kind, raw, journal_id in deliveries:
                if successes.take(kind, raw, journal_id):
                    continue
                successes.flush()
                payment_id = named.get(journal_id, "")
                CALLBACK_HANDLERS[kind](svc, conn, raw, journal_id, kind, payment_id)
            successes.flush()
        return True
    except Exception as error:  # noqa: BLE001 - every one of them is applied again on its own
        log.warning(
            "a batch of %d callbacks failed together (%s); applying each alone",
            len(deliveries),
            type(error).__name__,
        )
        return False


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
