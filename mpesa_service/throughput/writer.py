"""The callback writer: a GroupCommit whose first stage journals a batch of deliveries with one
fsync and answers them, and whose second stage applies the batch in one transaction on a
connection it holds, falling back to one transaction per callback when that fails."""

from __future__ import annotations

import contextlib
import threading

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.callbacks import CALLBACK_HANDLERS, apply_callback
from mpesa_service.context import Service
from mpesa_service.journal import journal_entries_applied
from mpesa_service.parsing import json_or_problem
from mpesa_service.throughput.groupcommit import GroupCommit, Ticket
from mpesa_service.throughput.handoff import Delivery, Journaled
from mpesa_service.throughput.statements import batch_engine
from mpesa_service.throughput.success_batch import SuccessBatch


def callback_writer(svc: Service) -> GroupCommit[Delivery, Journaled]:
    """A new callback writer for `svc` (build_service makes the service's one): concurrent
    deliveries are journaled with one fsync and applied in one transaction, each request
    answered as soon as its batch is journaled (journal_batch), the batch applied on a second
    thread (apply_batch) that holds one connection while it is busy."""
    return GroupCommit(
        "callback-writer",
        lambda tickets: journal_batch(svc, tickets),
        then=lambda tickets: apply_batch(svc, tickets),
        then_context=lambda: held_connection(svc.engine),
    )


def wait_applied(svc: Service, timeout: float = 10.0) -> bool:
    """Wait until every callback received so far has been applied (or kept for replay), not
    just answered: for tests, benchmarks and a clean shutdown. False on timeout."""
    return svc.callback_writer.drain(timeout)


# --- the two stages ------------------------------------------------------------------------


def journal_batch(svc: Service, tickets: list[Ticket[Delivery, Journaled]]) -> None:
    """The first stage: journal a batch of deliveries with one fsync, parse each body once, and
    answer each ticket (its result: what is wrong with its body as JSON, or None) unless it
    waits `until_applied`. Each ticket's handover, the callback as Journaled, goes on to
    apply_batch.

    A callback is answered once it is journaled, before it is applied: the journal is durable,
    and one not applied is replayed (the same rule as when the database is down). Answering
    first lets the answered connections send the next batch while this one is applied."""
    deliveries = [ticket.item for ticket in tickets]
    journal_ids = svc.journal.append_many(
        [(each.kind, each.body, each.address, each.payment_id) for each in deliveries]
    )
    for ticket, delivery, journal_id in zip(tickets, deliveries, journal_ids, strict=True):
        raw = delivery.body.decode("utf-8", errors="replace")
        parsed = json_or_problem(raw)
        ticket.result = parsed[1]
        ticket.handover = Journaled(delivery.kind, raw, journal_id, delivery.payment_id, parsed)
        if not delivery.until_applied:
            ticket.finish()


def apply_batch(svc: Service, tickets: list[Ticket[Delivery, Journaled]]) -> None:
    """The second stage: apply what journal_batch handed over. A ticket waiting
    `until_applied` gets what applying it raised as its error; for the others, already
    answered, that is logged, and the callback stays in the journal for replay."""
    errors = apply_deliveries(svc, [ticket.handover for ticket in tickets])
    for ticket, error in zip(tickets, errors, strict=True):
        if error is not None and ticket.finished:
            log.error(
                "%s callback %s kept in the journal for replay: applying it failed",
                ticket.handover.kind,
                ticket.handover.journal_id,
                exc_info=error,
            )
        ticket.error = error


def apply_deliveries(svc: Service, callbacks: list[Journaled]) -> list:
    """Apply journaled callbacks: together in one transaction, or, if any of them fails there,
    each on its own (callbacks.apply_callback) so that one bad callback neither holds back nor
    undoes the others. A database failure leaves a callback in the journal for replay.
    Returns, per callback, the other error it raised, or None."""
    if callbacks and _apply_together(svc, callbacks):
        return [None] * len(callbacks)
    errors = []
    for callback in callbacks:
        errors.append(None)
        try:
            apply_callback(
                svc, callback.kind, callback.raw, callback.journal_id, callback.payment_id
            )
        except sa.exc.SQLAlchemyError:
            log.exception(
                "callback %s kept in the journal for replay: the database failed",
                callback.journal_id,
            )
        except Exception as error:  # noqa: BLE001 - raised in the request that delivered it
            errors[-1] = error
    return errors


def _apply_together(svc: Service, callbacks: list[Journaled]) -> bool:
    try:
        with batch_transaction(svc.engine) as conn:
            journaled = journal_entries_applied(
                [(callback.journal_id, callback.kind) for callback in callbacks]
            )
            successes = SuccessBatch(conn, callbacks, leading=[journaled])
            for callback in callbacks:
                if successes.take(callback):
                    continue
                successes.flush()
                CALLBACK_HANDLERS[callback.kind](
                    svc,
                    conn,
                    callback.raw,
                    callback.journal_id,
                    callback.kind,
                    callback.payment_id,
                )
            successes.flush()
        return True
    except Exception as error:  # noqa: BLE001 - every one of them is applied again on its own
        log.warning(
            "a batch of %d callbacks failed together (%s); applying each alone",
            len(callbacks),
            type(error).__name__,
        )
        return False


# --- the applying thread's connection --------------------------------------------------------

_writer_thread = threading.local()


@contextlib.contextmanager
def held_connection(engine: sa.Engine):
    """For the applying thread's life, one connection (from statements.batch_engine) that its
    batches reuse, so that a batch does not pay the pool's checkout ping and return rollback.
    It is taken on first use, so entering cannot fail."""
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
    """A transaction on the applying thread's held connection, or on a pooled one elsewhere.
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
