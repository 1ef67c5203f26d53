"""Settling a batch of plain B2C success results with a few statements for the whole run
instead of a dozen each: the common case of a callback batch (see writer.apply_deliveries).

A result takes this path only while it is plainly the first word on its payout: a well-formed
success with a receipt, matched by its attempt's OriginatorConversationID, that attempt
current and still open, the payout still awaiting its result (so no belief is contradicted and
no other attempt carries evidence of payment), the receipt unknown to every payout
and stored callback, and no earlier delivery in the batch touching the same payout or receipt.
It then gets exactly what payouts.apply_b2c_callback would write for it, with one statement
per table for the whole run. The path covers only the leading run of such results in a batch:
from the first delivery that does not qualify, the collected ones are written and the rest
take the general path in order, so nothing is applied out of turn. The completions are still
a compare-and-set; if one does not hold (another process moved a payout since it was read)
the whole batch fails and is applied one by one."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa

from mpesa_service.events import emit_rows, writes_events
from mpesa_service.parsing import ResultCallback, json_or_problem, parse_result_callback
from mpesa_service.payouts import (
    AWAITING_RESULT,
    OPEN_ATTEMPT_STATES,
    flag_mismatches,
    paid_values,
    payout_event_rows,
    result_callback_row,
)
from mpesa_service.storage import (
    b2c_payment_callbacks,
    b2c_payments,
    b2c_payout_attempts,
    inserting,
    utcnow,
)
from mpesa_service.throughput.handoff import Journaled
from mpesa_service.throughput.statements import run_together

payouts, attempts = b2c_payments.c, b2c_payout_attempts.c


@functools.cache
def matching(count: int) -> sa.Select:
    """The payouts and attempts of `count` OriginatorConversationIDs (ocid_<i>), only what the
    fast path reads: a whole payout row costs more to decode than to fetch. One statement per
    count, with single parameters, so that it compiles once (see execute_precompiled)."""
    ocids = [
        sa.bindparam(f"ocid_{index}", type_=attempts.originator_conversation_id.type)
        for index in range(count)
    ]
    return (
        sa.select(
            payouts.id,
            payouts.status,
            payouts.originator_conversation_id,
            payouts.amount,
            payouts.phone_number,
            payouts.reference_id,
            attempts.id.label("attempt_id"),
            attempts.originator_conversation_id.label("attempt_ocid"),
            attempts.status.label("attempt_status"),
        )
        .join(b2c_payout_attempts, attempts.payout_id == payouts.id)
        .where(attempts.originator_conversation_id.in_(ocids))
    )


@functools.cache
def known_receipts(count: int) -> sa.CompoundSelect:
    """Which of `count` receipts (receipt_<i>) a payout or a stored callback already has."""
    receipts = [
        sa.bindparam(f"receipt_{index}", type_=payouts.transaction_id.type)
        for index in range(count)
    ]
    return sa.union_all(
        sa.select(payouts.transaction_id).where(payouts.transaction_id.in_(receipts)),
        sa.select(b2c_payment_callbacks.c.transaction_id).where(
            b2c_payment_callbacks.c.transaction_id.in_(receipts)
        ),
    )


@functools.cache
def completing(count: int, columns: tuple[str, ...]) -> sa.Update:
    """One UPDATE completing `count` payouts, each with its own paid values (a CASE on the id
    per column), only while they await their result: one round trip for a whole run.
    Parameters: now, and id_<i> plus <column>_<i> for each of `columns` (paid_values' keys)."""
    ids = [sa.bindparam(f"id_{index}", type_=payouts.id.type) for index in range(count)]
    return (
        b2c_payments.update()
        # The states as single parameters, not an expanding IN, so that it compiles once.
        .where(
            payouts.id.in_(ids),
            payouts.status.in_([sa.literal(state) for state in AWAITING_RESULT]),
        )
        .values(
            status="completed",
            updated_at=sa.bindparam("now", type_=payouts.updated_at.type),
            **{name: _per_row(payouts.id, ids, payouts[name]) for name in columns},
        )
    )


@functools.cache
def answering(count: int) -> sa.Update:
    """One UPDATE marking `count` open attempts paid, each with its own receipt and
    description. Parameters: now, and id_<i>, receipt_<i> and error_message_<i>."""
    ids = [sa.bindparam(f"id_{index}", type_=attempts.id.type) for index in range(count)]
    return (
        b2c_payout_attempts.update()
        .where(
            attempts.id.in_(ids),
            attempts.status.in_([sa.literal(state) for state in OPEN_ATTEMPT_STATES]),
        )
        .values(
            status="completed",
            response_code="0",
            answered_at=sa.bindparam("now", type_=attempts.answered_at.type),
            receipt=_per_row(attempts.id, ids, attempts.receipt),
            error_message=_per_row(attempts.id, ids, attempts.error_message),
        )
    )


def _per_row(key: sa.Column, ids: list, column: sa.Column) -> sa.Case:
    return sa.case(
        *[
            (key == row_id, sa.bindparam(f"{column.name}_{index}", type_=column.type))
            for index, row_id in enumerate(ids)
        ],
        else_=column,
    )


class PayoutMoved(Exception):
    """A payout left the state its result was read in: the batch is applied one by one."""


class SuccessBatch:
    """The leading run of plain success results of one batch, read in one go and written
    together by `flush`. The `leading` (statement, params) pairs run first, in the same round
    trip as the reads where the connection allows (see statements.run_together)."""

    def __init__(
        self, conn: sa.Connection, callbacks: list[Journaled], leading: list | None = None
    ):
        self.conn = conn
        self.parsed = _plain_successes(callbacks)
        self.pending: list[tuple[PlainSuccess, Journaled, object]] = []
        self.claimed_payouts: set[str] = set()
        self.claimed_receipts: set[str] = set()
        self.open = bool(self.parsed)
        if self.open:
            self._read_ahead(leading or [])
        elif leading:
            run_together(conn, leading)

    def _read_ahead(self, leading) -> None:
        ocids = [plain.parsed.originator_conversation_id for plain in self.parsed.values()]
        receipts = [plain.parsed.receipt for plain in self.parsed.values()]
        *_, matches, known = run_together(
            self.conn,
            [
                *leading,
                (
                    matching(len(ocids)),
                    {f"ocid_{index}": ocid for index, ocid in enumerate(ocids)},
                ),
                (
                    known_receipts(len(receipts)),
                    {f"receipt_{index}": receipt for index, receipt in enumerate(receipts)},
                ),
            ],
        )
        self.matches = {row.attempt_ocid: row for row in matches.rows}
        # Casefolded: MySQL compares receipts without case, so a receipt differing only in
        # case from a known one goes the general way, which asks the database itself.
        self.claimed_receipts.update(row[0].casefold() for row in known.rows)

    def take(self, callback: Journaled) -> bool:
        """Collect this callback if it qualifies and no earlier one has failed to; False means
        it must take the general path (and so must every callback after it)."""
        if self.open:
            self.open = self._collect(callback)
        return self.open

    def _collect(self, callback: Journaled) -> bool:
        plain = self.parsed.get(callback.journal_id) if callback.kind == "b2c_result" else None
        match = self.matches.get(plain.parsed.originator_conversation_id) if plain else None
        if (
            match is None
            or match.originator_conversation_id not in (None, match.attempt_ocid)
            or match.status not in AWAITING_RESULT
            or match.attempt_status not in OPEN_ATTEMPT_STATES
            or match.id in self.claimed_payouts
            or plain.parsed.receipt.casefold() in self.claimed_receipts
        ):
            return False
        self.claimed_payouts.add(match.id)
        self.claimed_receipts.add(plain.parsed.receipt.casefold())
        self.pending.append((plain, callback, match))
        return True

    def flush(self) -> None:
        """Write what was collected: the completions (a compare-and-set over all of them), the
        attempts and the stored callbacks, one statement each."""
        if not self.pending:
            return
        now = utcnow()
        completions, answers = {"now": now}, {"now": now}
        for index, (plain, _, payout) in enumerate(self.pending):
            completions[f"id_{index}"] = payout.id
            for name, value in plain.paid.items():
                completions[f"{name}_{index}"] = value
            answers[f"id_{index}"] = payout.attempt_id
            answers[f"receipt_{index}"] = plain.parsed.receipt
            answers[f"error_message_{index}"] = plain.parsed.result_desc
        columns = tuple(self.pending[0][0].paid)
        rows = [
            result_callback_row(
                plain.parsed,
                callback.raw,
                callback.journal_id,
                "result",
                payout,
                "applied",
                plain.parsed.receipt,
            )
            for plain, callback, payout in self.pending
        ]
        completed, answered, _ = run_together(
            self.conn,
            [
                (completing(len(self.pending), columns), completions),
                (answering(len(self.pending)), answers),
                (inserting(b2c_payment_callbacks, tuple(rows[0])), rows),
            ],
        )
        # Checked once all three have run: raising rolls the whole transaction back.
        expected = len(self.pending)
        if completed.rowcount != expected or answered.rowcount != expected:
            raise PayoutMoved(
                f"of {expected} results, {completed.rowcount} payouts and {answered.rowcount} "
                "attempts were still as read"
            )
        if writes_events(self.conn):
            completed_ids = [payout.id for _, _, payout in self.pending]
            emit_rows(self.conn, payout_event_rows(self.conn, completed_ids, "completed"))
        for plain, _, payout in self.pending:
            flag_mismatches(self.conn, payout, plain.paid["paid_amount"], plain.parsed.receiver[0])
        self.pending = []


@dataclass
class PlainSuccess:
    """A well-formed success result with a receipt, and what it writes on its payout."""

    parsed: ResultCallback
    paid: dict


def _plain_successes(callbacks: list[Journaled]) -> dict[str, PlainSuccess]:
    """{journal id: plain success} for the well-formed B2C success results with a receipt."""
    plain = {}
    for callback in callbacks:
        if callback.kind != "b2c_result":
            continue
        payload, problem = callback.parsed or json_or_problem(callback.raw)
        parsed = parse_result_callback(payload)
        if problem or parsed.problems or not parsed.originator_conversation_id:
            continue
        if parsed.receipt:  # None unless it succeeded
            plain[callback.journal_id] = PlainSuccess(parsed, paid_values(parsed))
    return plain
