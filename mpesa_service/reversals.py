"""Reversals of collections (refunds) that are never sent twice.

A reversal is written ahead (`submitting`) before Daraja is called, like a payout attempt, and
its Reversal request is sent once: an answer that proves nothing about its fate makes it
`unknown`, resolved only by a Transaction Status query, never by sending again. Its result is
applied once by compare-and-set; a success makes the collection `reversed` (its own receipt
kept), with an audit row and a `payment.reversed` event in the same transaction.

A collection has at most one reversal open or completed: each attempt is a row unique on
(collection, attempt number), so concurrent requests for the same collection write one row and
the others answer it. Only an explicit retry of a `failed` reversal writes the next attempt.
B2C payouts cannot be reversed by API (REFERENCE 7.2): that is done in the M-Pesa org portal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.c2b import c2b_payment_view
from mpesa_service.context import ApiError, Service
from mpesa_service.daraja import DarajaRejected, NotSent, OutcomeUnknown, daraja_error_fields
from mpesa_service.events import emit, writes_events
from mpesa_service.flags import add_flag
from mpesa_service.ids import new_id
from mpesa_service.parsing import ResultCallback, bounded, json_amount, text_or_none
from mpesa_service.payouts import SYSTEM_ACTOR
from mpesa_service.resolution import FAILED_STATES, resolve_schedule, stated_status
from mpesa_service.stk import STK_PAID_STATES, emit_payment_event
from mpesa_service.storage import (
    b2c_payments,
    c2b_payments,
    collection_audit,
    payments,
    retry_deadlocked,
    reversal_callbacks,
    reversals,
    utcnow,
)
from recon.codes import meaning

# --- the state machine ------------------------------------------------------------------------
# Every status change is a compare-and-set: UPDATE ... WHERE status IN (the states allowed to
# move to the target). Evidence beats belief: a success result, or a status answer stating the
# reversal Completed with its receipt, completes it from any state but `completed`.

REVERSAL_STATES = {
    # status: (meaning, statuses it may move to)
    "submitting": (
        "written ahead; the Reversal request is being sent",
        ("pending", "unknown", "failed", "completed"),
    ),
    "pending": (
        "accepted by Daraja (ResponseCode 0); waiting for the result",
        ("completed", "failed", "unknown", "review"),
    ),
    "unknown": (
        "may or may not have been accepted (no answer, a 5xx, a queue timeout, R000001 without "
        "evidence, stopped while sending): resolved only by Transaction Status, never re-sent",
        ("completed", "failed", "review"),
    ),
    "review": (
        "the status queries ran out without an answer: a person decides (the org portal shows "
        "whether the receipt was reversed)",
        ("completed", "failed"),
    ),
    "failed": (
        "M-Pesa refused it (a result code, or a refusal proving nothing was sent); an operator "
        "may ask again explicitly, as a new attempt; a late success still completes it",
        ("completed",),
    ),
    "completed": ("reversed: the collection is `reversed`, this reversal's receipt kept", ()),
}
OPEN_STATES = ("submitting", "pending", "unknown", "review")
RESOLVABLE_STATES = ("pending", "unknown")
ALREADY_REVERSED = "R000001"
PAYOUT_NOT_REVERSIBLE = (
    "B2C payouts cannot be reversed by API (Daraja's Reversal takes collections only): "
    "reverse it in the M-Pesa organisation portal (org.ke.m-pesa.com)"
)


def reversal_sources(target: str) -> list[str]:
    """The statuses from which a reversal may move to `target`."""
    return [state for state, (_, targets) in REVERSAL_STATES.items() if target in targets]


def transition(conn: sa.Connection, reversal_id: str, target: str, *conditions, **values) -> bool:
    """Move a reversal to `target` if, and only if, its status allows it now. True if it moved."""
    statement = (
        reversals.update()
        .where(
            reversals.c.id == reversal_id,
            reversals.c.status.in_(reversal_sources(target)),
            *conditions,
        )
        .values(status=target, updated_at=utcnow(), **values)
    )
    return conn.execute(statement).rowcount == 1


# --- asking for a reversal ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReversalRequest:
    """An operator's request to reverse one collection."""

    payment_id: str
    reason: str
    actor: str
    retry: bool = False

    @classmethod
    def from_body(cls, payment_id: str, body: dict, actor: str) -> ReversalRequest:
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(400, "reason: required (why the collection is refunded)", field="reason")
        if len(reason.strip()) > 255:
            raise ApiError(400, "reason: at most 255 characters", field="reason")
        retry = body.get("retry", False)
        if not isinstance(retry, bool):
            raise ApiError(400, f"retry: true or false, not {retry!r}", field="retry")
        return cls(payment_id, " ".join(reason.split()), actor, retry)


@dataclass(frozen=True)
class Collection:
    """A collection that may be reversed: an STK payment (`payments`) or a C2B payment
    (`c2b_payments`), read the same way. `status` is the STK payment's, or for a C2B payment
    `reversed` once reversed, else how it was recorded (`outcome`)."""

    kind: str  # "stk" or "c2b"
    id: str
    status: str | None
    paid: bool  # paid, with a receipt, and not reversed
    receipt: str | None
    amount: Decimal | None  # what was paid
    receiver_party: str | None  # the shortcode that received it; None: MPESA_SHORTCODE

    @classmethod
    def of_stk(cls, row) -> Collection:
        paid = row.paid_amount if row.paid_amount is not None else row.amount
        return cls(
            "stk",
            row.id,
            row.status,
            row.status in STK_PAID_STATES and bool(row.mpesa_receipt),
            row.mpesa_receipt,
            None if paid is None else Decimal(paid),
            None,
        )

    @classmethod
    def of_c2b(cls, row) -> Collection:
        status = "reversed" if row.reversed_at is not None else row.outcome
        return cls(
            "c2b",
            row.id,
            status,
            status != "reversed" and status != "malformed" and bool(row.trans_id),
            row.trans_id,
            None if row.amount is None else Decimal(row.amount),
            row.business_short_code,
        )

    @property
    def subject_type(self) -> str:
        """Its `payment_flags.subject_type`."""
        return "payment" if self.kind == "stk" else "c2b_payment"


def find_collection(conn: sa.Connection, kind: str, payment_id: str) -> Collection | None:
    if kind == "stk":
        row = conn.execute(sa.select(payments).where(payments.c.id == payment_id)).first()
        return None if row is None else Collection.of_stk(row)
    row = conn.execute(sa.select(c2b_payments).where(c2b_payments.c.id == payment_id)).first()
    return None if row is None else Collection.of_c2b(row)


def reverse_collection(svc: Service, request: ReversalRequest) -> tuple[int, dict]:
    """Reverse one collection (STK or C2B) once. (201, the reversal) when this request wrote
    and sent it; (200, the reversal) when one is open or completed already; 409 naming why
    not otherwise."""
    with svc.engine.connect() as conn:
        collection = _collection(conn, request.payment_id)
        latest = latest_reversal(conn, collection.id)
    if latest is not None and not (latest.status == "failed" and request.retry):
        return _existing(svc, latest, request)
    amount = _reversible_amount(collection)
    attempt_no = 1 if latest is None else latest.attempt_no + 1
    try:
        reversal_id = retry_deadlocked(
            lambda: write_ahead(svc, collection, request, amount, attempt_no)
        )
    except (sa.exc.IntegrityError, ReversedMeanwhile):  # a concurrent request got there first
        with svc.engine.connect() as conn:
            return 200, reversal_view(conn, latest_reversal(conn, collection.id))
    send_reversal(svc, reversal_id)
    with svc.engine.connect() as conn:
        return 201, reversal_view(conn, _reversal_by_id(conn, reversal_id))


def _collection(conn: sa.Connection, payment_id: str) -> Collection:
    """The STK or C2B collection `payment_id` names; 409 for a payout (which cannot be
    reversed by API), 404 for nothing."""
    for kind in ("stk", "c2b"):
        collection = find_collection(conn, kind, payment_id)
        if collection is not None:
            return collection
    payout = conn.execute(
        sa.select(b2c_payments.c.id).where(
            sa.or_(b2c_payments.c.id == payment_id, b2c_payments.c.reference_id == payment_id)
        )
    ).first()
    if payout is not None:
        raise ApiError(409, f"{payment_id} is a B2C payout. {PAYOUT_NOT_REVERSIBLE}")
    raise ApiError(404, f"no collection with id {payment_id!r}")


def _existing(svc: Service, latest, request: ReversalRequest) -> tuple[int, dict]:
    """The answer when the collection has a reversal already: it, or why no new one is sent."""
    with svc.engine.connect() as conn:
        view = reversal_view(conn, latest)
    if latest.status == "failed":
        raise ApiError(
            409,
            f"the reversal of {request.payment_id} failed ({latest.result_code}: "
            f'{latest.result_desc}); send "retry": true to ask M-Pesa again as a new attempt',
            reversal=view,
        )
    if request.retry:
        raise ApiError(
            409,
            f"the reversal of {request.payment_id} is {latest.status}: only a failed reversal "
            "may be retried",
            reversal=view,
        )
    return 200, view


def _reversible_amount(collection: Collection) -> int:
    """The paid amount, in whole shillings, of a paid collection with a receipt; 409 naming
    the collection's status otherwise."""
    if not collection.paid:
        raise ApiError(
            409,
            f"collection {collection.id} is {collection.status}"
            + ("" if collection.receipt else " with no receipt")
            + ": only a paid collection with a receipt can be reversed",
            payment_status=collection.status,
        )
    paid = collection.amount
    if paid is None or paid != paid.to_integral_value() or paid <= 0:
        raise ApiError(
            409, f"collection {collection.id} was paid {paid}, not whole shillings: not reversible"
        )
    return int(paid)


def write_ahead(
    svc: Service, collection: Collection, request: ReversalRequest, amount: int, number: int
) -> str:
    """Commit the reversal attempt (`submitting`) and its audit row before Daraja is called,
    if the collection is still paid and none of its reversals has completed meanwhile."""
    reversal_id, now = new_id(), utcnow()
    with svc.engine.begin() as conn:
        _still_reversible(conn, collection)
        conn.execute(
            reversals.insert().values(
                id=reversal_id,
                payment_kind=collection.kind,
                payment_id=collection.id,
                attempt_no=number,
                status="submitting",
                amount=amount,
                original_receipt=collection.receipt,
                receiver_party=collection.receiver_party or svc.client.account.shortcode,
                reason=request.reason,
                requested_by=request.actor,
                created_at=now,
                updated_at=now,
            )
        )
        note = f"reversal attempt {number} of {amount:,}: {request.reason}"
        audit(conn, collection, request.actor, "reversal_requested", collection.status, note=note)
    return reversal_id


class ReversedMeanwhile(Exception):
    """A concurrent request's reversal of this collection completed after this request looked
    for one: this request answers that reversal."""


def _still_reversible(conn: sa.Connection, collection: Collection) -> None:
    now = find_collection(conn, collection.kind, collection.id)
    done = conn.execute(
        sa.select(reversals.c.id).where(
            reversals.c.payment_id == collection.id, reversals.c.status == "completed"
        )
    ).first()
    if done is not None:
        raise ReversedMeanwhile(collection.id)
    if not now.paid:
        raise ApiError(
            409, f"collection {collection.id} is {now.status}: it cannot be reversed now"
        )


def send_reversal(svc: Service, reversal_id: str) -> str:
    """Send one reversal's request, once, and record which of three outcomes it had: accepted
    -> pending; provably not accepted -> failed; anything else -> unknown."""
    with svc.engine.connect() as conn:
        reversal = _reversal_by_id(conn, reversal_id)
    try:
        answer = svc.client.reversal(
            transaction_id=reversal.original_receipt,
            amount=int(reversal.amount),
            receiver_party=reversal.receiver_party,
            remarks=remarks(reversal.reason),
            result_url=reversal_hook(svc, "result", reversal_id),
            queue_timeout_url=reversal_hook(svc, "timeout", reversal_id),
        )
    except DarajaRejected as error:
        outcome = "failed" if error.proves_not_accepted else "unknown"
        return _record_unanswered(svc, reversal, outcome, error)
    except NotSent as error:
        return _record_unanswered(svc, reversal, "failed", error)
    except OutcomeUnknown as error:
        log.warning("reversal %s: %s", reversal_id, error)
        return _record_unanswered(svc, reversal, "unknown", error)
    except Exception as error:  # noqa: BLE001 - whatever happened, the request may have gone out
        log.exception("reversal %s ended without an answer", reversal_id)
        return _record_unanswered(svc, reversal, "unknown", error)
    return _record_accepted(svc, reversal, answer)


def remarks(reason: str) -> str:
    """Daraja's Remarks take 2-100 characters: the reason, cut to 100."""
    text = reason[:100].strip()
    return text if len(text) >= 2 else "Refund"


def reversal_hook(svc: Service, kind: str, reversal_id: str) -> str:
    """The callback URL of one reversal's result, queue timeout or status answer: it names the
    reversal, so that an answer is matched even when Daraja's ids never reached us."""
    return f"{svc.hook_url('reversal', kind)}/{reversal_id}"


def _record_accepted(svc: Service, reversal, answer: dict) -> str:
    """Keep Daraja's ids; `pending` unless a result settled it first."""
    now = utcnow()
    wait = timedelta(seconds=svc.settings.integer("RESOLVE_PENDING_AFTER_SECONDS"))

    def record() -> None:
        with svc.engine.begin() as conn:
            conn.execute(
                reversals.update()
                .where(reversals.c.id == reversal.id)
                .values(
                    originator_conversation_id=bounded(
                        text_or_none(answer.get("OriginatorConversationID")), 255
                    ),
                    conversation_id=bounded(text_or_none(answer.get("ConversationID")), 255),
                    sent_at=now,
                )
            )
            transition(
                conn,
                reversal.id,
                "pending",
                reversals.c.status == "submitting",
                next_check_at=now + wait,
            )

    retry_deadlocked(record)
    return "pending"


def _record_unanswered(svc: Service, reversal, status: str, error: Exception) -> str:
    """Record a refusal (`failed`) or a call that proved nothing (`unknown`), unless a result
    has settled the reversal meanwhile."""
    code, message = daraja_error_fields(error)
    now = utcnow()
    values = {"result_code": code, "result_desc": message, "sent_at": now}
    if status == "unknown":
        wait = timedelta(seconds=svc.settings.integer("RESOLVE_UNKNOWN_AFTER_SECONDS"))
        values.update(result_desc=f"outcome unknown: {message}", next_check_at=now + wait)

    def record() -> None:
        with svc.engine.begin() as conn:
            transition(conn, reversal.id, status, reversals.c.status == "submitting", **values)

    retry_deadlocked(record)
    return status


# --- results ------------------------------------------------------------------------------------


def apply_reversal_callback(
    conn: sa.Connection, parsed: ResultCallback, raw: str, journal_id: str, kind: str, named: str
) -> str:
    """Store a reversal result or queue timeout whole and apply it once. `named` is the
    reversal its URL names, if any; else it is matched by Daraja's ids, then by the receipt
    it reversed (OriginalTransactionID)."""
    reversal = match_reversal(conn, parsed, named)
    if reversal is None:
        outcome = "orphan"
    elif kind == "timeout":
        outcome = _apply_queue_timeout(conn, reversal)
    else:
        outcome = apply_result(conn, reversal, parsed)
    store_reversal_callback(conn, parsed, raw, journal_id, kind, reversal, outcome)
    return outcome


def match_reversal(conn: sa.Connection, parsed: ResultCallback, named: str = ""):
    if named:
        found = _reversal_by_id(conn, named)
        if found is not None:
            return found
    for column, value in (
        (reversals.c.originator_conversation_id, parsed.originator_conversation_id),
        (reversals.c.conversation_id, parsed.conversation_id),
    ):
        if value:
            found = conn.execute(sa.select(reversals).where(column == value)).first()
            if found is not None:
                return found
    original = text_or_none(parsed.parameters.get("OriginalTransactionID"))
    if original:
        return conn.execute(
            sa.select(reversals)
            .where(reversals.c.original_receipt == original)
            .order_by(reversals.c.attempt_no.desc())
            .limit(1)
        ).first()
    return None


def apply_result(conn: sa.Connection, reversal, parsed: ResultCallback) -> str:
    """A result: success completes the reversal (evidence beats belief); R000001 without
    evidence makes it `unknown`, to be resolved by asking; any other code fails it."""
    _fill_daraja_ids(conn, reversal, parsed)
    code = parsed.result_code
    if parsed.succeeded:
        receipt = parsed.receipt
        if not receipt:
            return "malformed"
        return complete_reversal(conn, reversal, receipt, code, parsed.result_desc)
    if code == ALREADY_REVERSED:
        return _apply_already_reversed(conn, reversal, parsed)
    if code is None:
        return "malformed"
    moved = transition(
        conn,
        reversal.id,
        "failed",
        result_code=code,
        result_desc=f"{parsed.result_desc or ''} ({meaning(code, 'reversal')})".strip(),
    )
    return "applied" if moved else "duplicate"


def _fill_daraja_ids(conn: sa.Connection, reversal, parsed: ResultCallback) -> None:
    """Keep Daraja's ids from a result whose synchronous answer never reached us."""
    values = {}
    if not reversal.originator_conversation_id and parsed.originator_conversation_id:
        values["originator_conversation_id"] = bounded(parsed.originator_conversation_id, 255)
    if not reversal.conversation_id and parsed.conversation_id:
        values["conversation_id"] = bounded(parsed.conversation_id, 255)
    if values:
        conn.execute(reversals.update().where(reversals.c.id == reversal.id).values(**values))


def _apply_already_reversed(conn: sa.Connection, reversal, parsed: ResultCallback) -> str:
    """R000001: the receipt was reversed already. With evidence (another attempt of ours
    completed, with its receipt) this one is that reversal; without, nothing says by whom or
    with which receipt: it is `unknown`, resolved by a status query about the receipt."""
    done = conn.execute(
        sa.select(reversals).where(
            reversals.c.payment_id == reversal.payment_id,
            reversals.c.status == "completed",
            reversals.c.id != reversal.id,
        )
    ).first()
    if done is not None:
        moved = transition(
            conn,
            reversal.id,
            "failed",
            result_code=ALREADY_REVERSED,
            result_desc=f"already reversed by attempt {done.attempt_no} ({done.receipt})",
        )
        return "applied" if moved else "duplicate"
    moved = transition(
        conn,
        reversal.id,
        "unknown",
        reversals.c.status.in_(("submitting", "pending")),
        result_code=ALREADY_REVERSED,
        result_desc=f"{parsed.result_desc or 'already reversed'}: asking which reversal it was",
        next_check_at=utcnow(),
    )
    return "applied" if moved else "recorded"


def _apply_queue_timeout(conn: sa.Connection, reversal) -> str:
    moved = transition(
        conn,
        reversal.id,
        "unknown",
        reversals.c.status.in_(("submitting", "pending")),
        result_desc="outcome unknown: the request timed out in Daraja's queue",
        next_check_at=utcnow(),
    )
    return "applied" if moved else "recorded"


def complete_reversal(conn: sa.Connection, reversal, receipt: str, code, desc) -> str:
    """Evidence that the money went back: the reversal is `completed` with its receipt, and
    the collection `reversed`, audited, with its event. A second reversal of one collection
    is flagged for a person (the customer was refunded twice)."""
    moved = transition(
        conn,
        reversal.id,
        "completed",
        receipt=bounded(receipt, 255),
        result_code=code,
        result_desc=desc,
        completed_at=utcnow(),
    )
    if not moved:
        return "duplicate" if reversal.status == "completed" else "conflict"
    if reversal.status == "failed":
        add_flag(
            conn,
            subject_type_of(reversal),
            reversal.payment_id,
            "status_conflict",
            f"reversal attempt {reversal.attempt_no} believed failed ({reversal.result_code}) "
            f"was completed with receipt {receipt}",
        )
    collection = find_collection(conn, reversal.payment_kind, reversal.payment_id)
    if not _mark_reversed(conn, collection, receipt):
        add_flag(
            conn,
            collection.subject_type,
            collection.id,
            "possible_double_reversal",
            f"reversal {receipt} completed for a collection already {collection.status}",
        )
        return "applied"
    note = f"reversed by {receipt} (attempt {reversal.attempt_no})"
    audit(conn, collection, SYSTEM_ACTOR, "reversed", "reversed", receipt=receipt, note=note)
    _emit_reversed(conn, collection)
    return "applied"


def _mark_reversed(conn: sa.Connection, collection: Collection, receipt: str) -> bool:
    """The collection becomes reversed (compare-and-set); False if it was not paid any more."""
    now = utcnow()
    if collection.kind == "stk":
        statement = (
            payments.update()
            .where(payments.c.id == collection.id, payments.c.status.in_(STK_PAID_STATES))
            .values(status="reversed", updated_at=now)
        )
    else:
        statement = (
            c2b_payments.update()
            .where(c2b_payments.c.id == collection.id, c2b_payments.c.reversed_at.is_(None))
            .values(reversed_at=now, reversal_receipt=bounded(receipt, 255))
        )
    return conn.execute(statement).rowcount == 1


def _emit_reversed(conn: sa.Connection, collection: Collection) -> None:
    """payment.reversed, its data what the collection's own answers show now."""
    if collection.kind == "stk":
        emit_payment_event(conn, collection.id, "payment.reversed")
    elif writes_events(conn):
        row = conn.execute(sa.select(c2b_payments).where(c2b_payments.c.id == collection.id)).one()
        view = {**c2b_payment_view(row), "reversal_receipt": row.reversal_receipt}
        emit(conn, "payment.reversed", row.trans_id, view)


def subject_type_of(reversal) -> str:
    return "payment" if reversal.payment_kind == "stk" else "c2b_payment"


def store_reversal_callback(conn, parsed: ResultCallback, raw, journal_id, kind, reversal, outcome):
    conn.execute(
        reversal_callbacks.insert().values(
            id=new_id(),
            reversal_id=reversal.id if reversal is not None else None,
            kind=kind,
            result_code=bounded(parsed.result_code, 50),
            result_desc=parsed.result_desc,
            originator_conversation_id=bounded(parsed.originator_conversation_id, 255),
            conversation_id=bounded(parsed.conversation_id, 255),
            transaction_id=bounded(parsed.transaction_id, 255),
            outcome=outcome,
            journal_id=journal_id,
            raw_response=raw,
            received_at=utcnow(),
        )
    )


# --- resolving unknown outcomes by Transaction Status ---------------------------------------------


def resolve_reversals(svc: Service) -> int:
    """One pass: reversals left `submitting` become `unknown`; due `pending` and `unknown` ones
    get a Transaction Status query (never a second Reversal); those past the schedule go to
    `review`. Returns how many it worked on."""
    _expire_stuck_submissions(svc)
    with svc.engine.connect() as conn:
        due = conn.execute(
            sa.select(reversals)
            .where(reversals.c.status.in_(RESOLVABLE_STATES))
            .where(reversals.c.next_check_at <= utcnow())
            .order_by(reversals.c.next_check_at)
            .limit(200)
        ).all()
    schedule = resolve_schedule(svc.settings)
    handled = 0
    for reversal in due:
        step = _claim_check(svc, reversal, schedule)
        if step is None:
            continue
        handled += 1
        if step >= len(schedule):
            _send_to_review(svc, reversal, step)
        else:
            ask_reversal_status(svc, reversal)
    return handled


def _expire_stuck_submissions(svc: Service) -> None:
    cutoff = utcnow() - timedelta(seconds=svc.settings.seconds("SUBMITTING_STUCK_AFTER_SECONDS"))
    with svc.engine.begin() as conn:
        conn.execute(
            reversals.update()
            .where(reversals.c.status == "submitting", reversals.c.updated_at <= cutoff)
            .values(
                status="unknown",
                result_desc="outcome unknown: the service stopped while sending",
                next_check_at=utcnow(),
                updated_at=utcnow(),
            )
        )


def _claim_check(svc: Service, reversal, schedule: list[int]) -> int | None:
    step = reversal.check_count
    wait = schedule[step] if step < len(schedule) else 0
    with svc.engine.begin() as conn:
        claimed = conn.execute(
            reversals.update()
            .where(reversals.c.id == reversal.id, reversals.c.check_count == step)
            .where(reversals.c.status.in_(RESOLVABLE_STATES))
            .values(check_count=step + 1, next_check_at=utcnow() + timedelta(seconds=wait))
        ).rowcount
    return step if claimed else None


def _send_to_review(svc: Service, reversal, queries: int) -> None:
    with svc.engine.begin() as conn:
        if transition(conn, reversal.id, "review"):
            add_flag(
                conn,
                subject_type_of(reversal),
                reversal.payment_id,
                "review",
                f"reversal of receipt {reversal.original_receipt} still {reversal.status} after "
                f"{queries} status queries: a person must check the org portal",
            )


def ask_reversal_status(svc: Service, reversal) -> bool:
    """One Transaction Status query about the reversal: by its OriginatorConversationID when
    Daraja's answer gave it, else by the receipt it reverses (also after R000001, which says
    the receipt was reversed by another request). The answer comes to a URL naming the
    reversal. False when the query could not be sent (it is asked again on schedule)."""
    ocid = reversal.originator_conversation_id
    if reversal.result_code == ALREADY_REVERSED:
        ocid = None
    try:
        svc.client.transaction_status(
            result_url=reversal_hook(svc, "status", reversal.id),
            queue_timeout_url=reversal_hook(svc, "status-timeout", reversal.id),
            original_conversation_id=ocid,
            transaction_id=None if ocid else reversal.original_receipt,
            remarks="Reversal status check",
            party_a=reversal.receiver_party,
        )
    except Exception as error:  # noqa: BLE001 - a query that failed is asked again on schedule
        log.warning("status query for reversal %s failed: %s", reversal.id, error)
        return False
    return True


def apply_reversal_status_callback(
    conn: sa.Connection, parsed: ResultCallback, raw: str, journal_id: str, kind: str, named: str
) -> str:
    """Store a status answer about a reversal and apply what it states: `Completed` with a
    receipt other than the collection's own is the reversal's evidence; a failed state, when
    the answer is about the reversal itself (its OriginatorConversationID), fails it. Anything
    else is no answer yet."""
    reversal = _reversal_by_id(conn, named) if named else None
    outcome = "orphan" if reversal is None else "recorded"
    if reversal is not None and kind == "status":
        outcome = apply_status_answer(conn, reversal, parsed)
    store_reversal_callback(conn, parsed, raw, journal_id, kind, reversal, outcome)
    return outcome


def apply_status_answer(conn: sa.Connection, reversal, parsed: ResultCallback) -> str:
    state = stated_status(parsed)
    receipt = text_or_none(parsed.parameters.get("ReceiptNo"))
    if state == "completed" and receipt and receipt != reversal.original_receipt:
        return complete_reversal(conn, reversal, receipt, "0", "reversed (Transaction Status)")
    about_it = reversal.originator_conversation_id and (
        text_or_none(parsed.parameters.get("OriginatorConversationID"))
        == reversal.originator_conversation_id
    )
    if state in FAILED_STATES and about_it:
        moved = transition(
            conn,
            reversal.id,
            "failed",
            reversals.c.status.in_(RESOLVABLE_STATES),
            result_code=state,
            result_desc=f"reversal {state} (Transaction Status)",
        )
        return "applied" if moved else "recorded"
    return "recorded"


# --- reading --------------------------------------------------------------------------------------


def _reversal_by_id(conn: sa.Connection, reversal_id: str):
    return conn.execute(sa.select(reversals).where(reversals.c.id == reversal_id)).first()


def latest_reversal(conn: sa.Connection, payment_id: str):
    """The collection's latest reversal attempt, or None."""
    return conn.execute(
        sa.select(reversals)
        .where(reversals.c.payment_id == payment_id)
        .order_by(reversals.c.attempt_no.desc())
        .limit(1)
    ).first()


def reversal_view(conn: sa.Connection, reversal) -> dict:
    """A reversal as the API answers it."""
    code = reversal.result_code
    return {
        "reversal_id": reversal.id,
        "payment_id": reversal.payment_id,
        "payment_kind": reversal.payment_kind,
        "attempt": reversal.attempt_no,
        "status": reversal.status,
        "amount": json_amount(reversal.amount),
        "original_receipt": reversal.original_receipt,
        "receipt": reversal.receipt,
        "result_code": code,
        "result_desc": reversal.result_desc,
        "result_meaning": meaning(code, "reversal") if code else None,
        "reason": reversal.reason,
        "requested_by": reversal.requested_by,
        "originator_conversation_id": reversal.originator_conversation_id,
        "conversation_id": reversal.conversation_id,
    }


def reversals_of(svc: Service, payment_id: str) -> list[dict]:
    """Every reversal attempt of a collection, oldest first."""
    with svc.engine.connect() as conn:
        rows = conn.execute(
            sa.select(reversals)
            .where(reversals.c.payment_id == payment_id)
            .order_by(reversals.c.attempt_no)
        ).all()
        return [reversal_view(conn, row) for row in rows]


def audit(
    conn, collection: Collection, actor: str, action: str, status_after, *, receipt=None, note=""
):
    """One row of the collection's append-only audit trail."""
    conn.execute(
        collection_audit.insert().values(
            id=new_id(),
            payment_kind=collection.kind,
            payment_id=collection.id,
            actor=actor,
            action=action,
            status_before=collection.status,
            status_after=status_after,
            receipt=receipt,
            note=note,
            created_at=utcnow(),
        )
    )
