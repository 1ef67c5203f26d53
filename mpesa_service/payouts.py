"""B2C payouts that never pay twice: the state machine, idempotent write-ahead initiation,
one send per attempt with three outcomes, and results applied once by compare-and-set."""

from __future__ import annotations

import functools
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import sqlalchemy as sa

from mpesa_service import idempotency, log
from mpesa_service.context import ApiError, Service
from mpesa_service.daraja import DarajaRejected, NotSent, OutcomeUnknown, daraja_error_fields
from mpesa_service.events import emit, event_row, writes_events
from mpesa_service.flags import add_flag
from mpesa_service.ids import new_id
from mpesa_service.parsing import (
    ResultCallback,
    bounded,
    json_amount,
    optional_text,
    requested_shillings,
    text_or_none,
)
from mpesa_service.settings import Settings
from mpesa_service.storage import (
    b2c_payment_callbacks,
    b2c_payments,
    b2c_payout_attempts,
    lock_named_row,
    payment_flags,
    payout_audit,
    retry_deadlocked,
    utcnow,
)
from recon.codes import integer_code, lookup
from recon.rules import (
    B2C_LIMITS,
    PAYOUT_MATCH_ORDER,
    InvalidValue,
    amount_difference,
    mpesa_phone,
    nairobi_day_start_utc,
    shillings_text,
)

# --- B2C payouts: the state machine ----------------------------------------------------------
# Every status change is a compare-and-set: UPDATE ... WHERE status IN (the states allowed to
# move to the target), and, for a result, WHERE its attempt is still the payout's current one.
# `pending`, `completed` and `failed` keep the old system's meanings.
#
# Evidence beats belief. A success result for any attempt, or a Transaction Status answer
# stating that the original transaction Completed with its receipt, is evidence that money
# moved; it is recorded on its attempt (status `completed`, with the receipt). A payout with
# evidence is never eligible for a new attempt, whatever its status, codes or an operator's
# decision say (start_new_attempt's compare-and-set checks it, and `failed` and "not paid"
# need its absence). Evidence makes the payout `completed` with that receipt, flagged
# `status_conflict` (with an audit row and an alert) when that contradicts an earlier belief
# (`failed`, or an operator's receipt); when two attempts carry evidence it goes to `review`,
# flagged `possible_double_payout`. `completed` is never unpaid again: its only move is to
# `review` on a second attempt's evidence.
#
# Maker-checker. A payout above APPROVAL_ABOVE is written ahead `awaiting_approval`, with no
# attempt: nothing can be sent for it, so no result can move it, until an operator key other
# than the one that created it approves it (then it is `submitting` with its first attempt, and
# goes on like any payout). `rejected` and `expired` end it unsent; they have no moves.

PAYOUT_STATES = {
    # status: (meaning, statuses it may move to)
    "awaiting_approval": (
        "above APPROVAL_ABOVE: written ahead with no attempt, nothing sent; waits for an "
        "operator key other than its creator's to approve (or reject) it",
        ("submitting", "rejected", "expired"),
    ),
    "submitting": (
        "written ahead (payout and attempt committed); the B2C request is being sent",
        ("pending", "unknown", "failed", "completed", "review"),
    ),
    "pending": (
        "accepted by Daraja (ResponseCode 0); waiting for the result callback",
        ("completed", "failed", "unknown", "review"),
    ),
    "unknown": (
        "may or may not have been accepted (timeout, reset, 5xx, queue timeout); "
        "resolved only by a Transaction Status query, never re-sent",
        ("completed", "failed", "review"),
    ),
    "failed": (
        "believed not paid (a failure result, a refusal, no such transaction, an operator); a "
        "retryable code gets a new attempt, unless evidence says it was paid after all, up to "
        "PAYOUT_MAX_ATTEMPTS (then it is flagged attempts_exhausted for a person)",
        ("submitting", "completed", "review"),
    ),
    "review": (
        "automation could not resolve it, or two attempts were paid; a person decides",
        ("completed", "failed"),
    ),
    "completed": (
        "paid; never unpaid again (a second attempt's evidence sends it to review)",
        ("review",),
    ),
    "rejected": ("refused by an operator while awaiting approval; never sent", ()),
    "expired": ("not approved within APPROVAL_EXPIRES_HOURS; never sent", ()),
}
# Statuses that moved no money and never will: they do not count against the daily limits.
NEVER_SENT = ("rejected", "expired")
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
# Attempts whose outcome no answer has settled yet.
OPEN_ATTEMPT_STATES = ("sending", "accepted", "unknown")
attempts_c = b2c_payout_attempts.c
# A payout none of whose attempts carries evidence that money moved.
NO_EVIDENCE = ~(
    sa.exists()
    .where(attempts_c.payout_id == b2c_payments.c.id)
    .where(attempts_c.status == "completed")
)


def payout_sources(target: str) -> list[str]:
    """The statuses from which a payout may move to `target`."""
    return [state for state, (_, targets) in PAYOUT_STATES.items() if target in targets]


def transition(
    conn: sa.Connection, payout_id: str, target: str, *conditions, only_from=None, **values
):
    """Move a payout to `target` if, and only if, its status allows it now (and any extra
    `conditions` hold). True if it moved."""
    sources = payout_sources(target)
    if only_from is not None:
        sources = [state for state in sources if state in only_from]
    statement = (
        b2c_payments.update()
        .where(b2c_payments.c.id == payout_id, b2c_payments.c.status.in_(sources), *conditions)
        .values(status=target, updated_at=utcnow(), **values)
    )
    moved = conn.execute(statement).rowcount == 1
    if moved and target in EVENT_STATES:
        emit_payout_event(conn, payout_id, target)
    return moved


# The statuses whose reaching is told as an event (payout.<status>), in the same transaction.
EVENT_STATES = ("completed", "failed", "review", "awaiting_approval", "rejected", "expired")


def emit_payout_event(conn: sa.Connection, payout_id: str, status: str) -> None:
    """Write the payout.<status> event, its data what GET /payouts/<reference_id> answers now."""
    if not writes_events(conn):
        return
    payout = payout_by(conn, b2c_payments.c.id, payout_id)
    emit(conn, f"payout.{status}", payout.reference_id or payout.id, payout_view(conn, payout))


def payout_event_rows(conn: sa.Connection, payout_ids: list[str], status: str) -> list[dict]:
    """The payout.<status> events of several payouts that just moved, read together."""
    payouts = conn.execute(sa.select(b2c_payments).where(b2c_payments.c.id.in_(payout_ids))).all()
    views = payout_views(conn, payouts)
    by_id = {payout.id: payout for payout in payouts}
    return [
        event_row(f"payout.{status}", by_id[payout_id].reference_id or payout_id, views[payout_id])
        for payout_id in dict.fromkeys(payout_ids)
        if payout_id in by_id
    ]


def on_attempt(ocid: str | None):
    """The condition that the payout's current attempt is the one with `ocid` (or, for the old
    system's rows, that it has none)."""
    column = b2c_payments.c.originator_conversation_id
    return column.is_(None) if ocid is None else column == ocid


@dataclass(frozen=True)
class PayoutRequest:
    user_id: str | None
    user_type: str | None
    phone: str
    amount: int
    reason: str
    description: str
    command_id: str
    reference_id: str | None = None

    @classmethod
    def from_body(cls, body: dict, phone: str) -> PayoutRequest:
        try:
            amount = requested_shillings(body.get("amount"), B2C_LIMITS, "amount")
        except InvalidValue as error:
            raise ApiError(400, str(error), field=error.field) from None
        command_id = body.get("command_id") or "BusinessPayment"
        if command_id not in B2C_COMMANDS:
            raise ApiError(
                400,
                f"command_id: one of {', '.join(B2C_COMMANDS)}, not {command_id!r}",
                field="command_id",
            )
        reason = optional_text(body, "reason", 100) or "payout"
        return cls(
            user_id=payout_user_id(body),
            user_type=optional_text(body, "user_type", 20),
            phone=phone,
            amount=amount,
            reason=reason,
            description=payout_remarks(body.get("description"), reason),
            command_id=command_id,
            reference_id=payout_reference(body),
        )


def payout_user_id(body: dict) -> str:
    """The payee's user_id, which every new payout needs: per-user limits count by it."""
    user_id = optional_text(body, "user_id", 36)
    if not user_id:
        raise ApiError(
            400,
            "user_id: required (the payee's id, by which PAYOUT_USER_DAILY_LIMIT counts)",
            field="user_id",
        )
    return user_id


REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def payout_reference(body: dict) -> str | None:
    """The caller's reference_id, if any: letters, digits and _ . : - (it names the payout in
    URLs, links and forms, so nothing that could end or bend one is taken)."""
    reference = optional_text(body, "reference_id", 255)
    if reference is not None and not REFERENCE.fullmatch(reference):
        raise ApiError(
            400,
            f"reference_id: letters, digits and _ . : - only, not {reference!r}",
            field="reference_id",
        )
    return reference


def payout_remarks(description: object, reason: str) -> str:
    """Daraja's Remarks take 2–100 characters: the description (or the reason), cut to 100."""
    text = " ".join(str(description or reason).split())[:100].strip()
    return text if len(text) >= 2 else "Payout"


def payout_phone(svc: Service, body: dict) -> str:
    """The payee's phone from the body, or from PAYOUT_PHONE_QUERY by user_id."""
    raw = body.get("phone")
    query = svc.settings["PAYOUT_PHONE_QUERY"]
    if raw in (None, ""):
        if not query:
            raise ApiError(400, "phone: required unless PAYOUT_PHONE_QUERY is set", field="phone")
        user_id = payout_user_id(body)
        with svc.engine.connect() as conn:
            raw = conn.execute(sa.text(query), {"user_id": user_id}).scalar()
        if not raw:
            raise ApiError(
                400, f"phone: no phone number found for user_id {user_id!r}", field="phone"
            )
    try:
        return mpesa_phone(raw, "phone")
    except InvalidValue as error:
        raise ApiError(400, str(error), field=error.field) from None


def check_payout_limits(
    conn: sa.Connection, settings: Settings, request: PayoutRequest, excluding: str | None = None
) -> None:
    """The configured limits (0 means none); 422 naming the one exceeded. The daily totals are
    read under a lock per user (and one for all payouts), held until the payout written in the
    same transaction commits, so concurrent payouts cannot pass a limit together. `excluding`
    names a payout already counted that is the one being checked (an approval)."""
    maximum = settings.integer("PAYOUT_MAX_AMOUNT")
    if maximum and request.amount > maximum:
        raise ApiError(
            422,
            f"amount {request.amount:,} exceeds PAYOUT_MAX_AMOUNT {maximum:,}",
            limit="PAYOUT_MAX_AMOUNT",
        )
    today = counted_today(excluding)
    user_limit = settings.integer("PAYOUT_USER_DAILY_LIMIT")
    if user_limit and request.user_id:
        lock_named_row(conn, f"user:{request.user_id}")
        total = sum_amount(conn, sa.and_(today, b2c_payments.c.user_id == request.user_id))
        if total + request.amount > user_limit:
            raise ApiError(
                422,
                f"user {request.user_id} would reach {total + request.amount:,} "
                f"today, over PAYOUT_USER_DAILY_LIMIT {user_limit:,}",
                limit="PAYOUT_USER_DAILY_LIMIT",
            )
    daily_limit = settings.integer("PAYOUT_DAILY_LIMIT")
    if daily_limit:
        lock_named_row(conn, "all payouts")
        total = sum_amount(conn, today)
        if total + request.amount > daily_limit:
            raise ApiError(
                422,
                f"payouts would reach {total + request.amount:,} today, over "
                f"PAYOUT_DAILY_LIMIT {daily_limit:,}",
                limit="PAYOUT_DAILY_LIMIT",
            )


def counted_today(excluding: str | None = None):
    """The payouts of this Nairobi day that count against the daily limits (not failed, not
    never sent), but for the one `excluding` names."""
    counted = b2c_payments.c.status.notin_(["failed", *NEVER_SENT])
    if excluding is not None:
        counted = sa.and_(counted, b2c_payments.c.id != excluding)
    return sa.and_(b2c_payments.c.initiated_at >= nairobi_day_start_utc(), counted)


def sum_amount(conn: sa.Connection, condition) -> int:
    total = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(b2c_payments.c.amount), 0)).where(condition)
    ).scalar()
    return int(Decimal(total))


@dataclass(frozen=True)
class Maker:
    """Who asks for a payout: the API key's name (kept on the payout: that key may not approve
    it), and, for a person's form, what they used (the audit trail says "ops (console)")."""

    key_name: str | None = None
    via: str | None = None
    # The approval that already covers this payout (a bulk batch's): it does not wait again.
    approved_in: str | None = None

    @property
    def actor(self) -> str | None:
        if self.key_name and self.via:
            return f"{self.key_name} ({self.via})"
        return self.key_name


NO_MAKER = Maker()


def needs_approval(settings: Settings, amount: int) -> bool:
    above = settings.integer("APPROVAL_ABOVE")
    return bool(above) and amount > above


def initiate_payout(
    svc: Service, body: dict, idempotency_key: str, maker: Maker = NO_MAKER
) -> tuple[int, dict]:
    """Create one payout for one idempotency key and send its first attempt, or, above
    APPROVAL_ABOVE, keep it `awaiting_approval` with nothing sent.

    The key, the payout and the attempt (with a fresh OriginatorConversationID) are committed
    together before Daraja is called; the key's primary key makes concurrent requests with one
    key create one payout, and the unique reference_id one payout per reference. Returns (201,
    answer) for a new payout, (200, first answer) for a replay; 409 when the key was used with
    another body, or the reference by another payout. The maker's key name is kept on the
    payout; a form's payouts and those awaiting approval start their audit trail with it."""
    key = idempotency.require_key(idempotency_key)
    request_hash = idempotency.fingerprint(body)
    replay = replay_payout(svc, key, request_hash)
    if replay:
        return replay
    request = PayoutRequest.from_body(body, payout_phone(svc, body))
    try:
        payout_id, attempt = retry_deadlocked(
            lambda: write_ahead(svc, request, key, request_hash, maker)
        )
    except sa.exc.IntegrityError:
        replay = replay_payout(svc, key, request_hash, wait=True)
        if replay is None:  # the key is free: the reference was taken meanwhile
            raise reference_taken(svc, request.reference_id) from None
        return replay
    if attempt is not None:
        send_attempt(svc, payout_id, attempt)
    answer = payout_summary(svc, payout_id)
    idempotency.remember(svc, key, 201, answer)
    return 201, answer


def replay_payout(svc: Service, key: str, request_hash: str, wait: bool = False):
    """(200, first answer) for a key seen before; None for a new key (see idempotency.replay)."""
    replayed = idempotency.replay(
        svc,
        key,
        "payout",
        request_hash,
        in_flight=lambda payout_id: (200, payout_summary(svc, payout_id)),
        conflict_details=lambda payout_id: {"reference_id": _reference_of(svc, payout_id)},
        wait=wait,
    )
    return None if replayed is None else (200, replayed[1])


def _reference_of(svc: Service, payout_id: str) -> str | None:
    with svc.engine.connect() as conn:
        payout = payout_by(conn, b2c_payments.c.id, payout_id)
    return payout.reference_id if payout else None


def reference_taken(svc: Service, reference_id: str | None) -> ApiError:
    return ApiError(
        409,
        f"reference_id {reference_id!r} already belongs to another payout; "
        "a reference pays one payout",
        field="reference_id",
        reference_id=reference_id,
    )


def write_ahead(
    svc, request: PayoutRequest, key: str, request_hash: str, maker: Maker = NO_MAKER
) -> tuple[str, dict | None]:
    """Commit the key, the payout and its first attempt (None, and nothing to send, for a
    payout awaiting approval). Returns (payout id, attempt)."""
    payout_id, now = new_id(), utcnow()
    waits = maker.approved_in is None and needs_approval(svc.settings, request.amount)
    attempt = None if waits else new_attempt()
    status = "awaiting_approval" if waits else "submitting"
    with svc.engine.begin() as conn:
        idempotency.claim(conn, key, "payout", request_hash, payout_id)
        if request.reference_id and payout_by(
            conn, b2c_payments.c.reference_id, request.reference_id
        ):
            raise reference_taken(svc, request.reference_id)
        check_payout_limits(conn, svc.settings, request)
        conn.execute(
            b2c_payments.insert().values(
                id=payout_id,
                user_id=request.user_id,
                user_type=request.user_type,
                phone_number=request.phone,
                amount=request.amount,
                reference_id=request.reference_id or f"payout_ref_{uuid.uuid4().hex}",
                status=status,
                reason=request.reason,
                description=request.description,
                command_id=request.command_id,
                originator_conversation_id=attempt and attempt["originator_conversation_id"],
                attempt_count=0 if attempt is None else 1,
                initiated_at=now,
                updated_at=now,
                created_by=maker.key_name,
            )
        )
        if attempt is not None:
            insert_attempt(conn, payout_id, 1, attempt)
        if maker.actor and (maker.via or waits):  # from no status: the payout did not exist
            above = svc.settings.integer("APPROVAL_ABOVE")
            note = f"above APPROVAL_ABOVE {above:,}: awaits approval" if waits else ""
            note = note or maker.approved_in or ""
            born = SimpleNamespace(id=payout_id, status=None)
            audit(conn, born, maker.actor, "created", status, note=note)
        if waits:
            emit_payout_event(conn, payout_id, status)
    return payout_id, attempt


def new_attempt() -> dict:
    """A new attempt's ids: the row's and a fresh OriginatorConversationID."""
    return {"id": new_id(), "originator_conversation_id": f"b2c-{uuid.uuid4()}"}


PayoutAttempt = sa.Row  # a b2c_payout_attempts row


def current_attempt(conn: sa.Connection, payout) -> PayoutAttempt | None:
    """The attempt the payout is on now (None for the old system's rows, which have none)."""
    if not payout.originator_conversation_id:
        return None
    return conn.execute(
        sa.select(b2c_payout_attempts).where(
            b2c_payout_attempts.c.originator_conversation_id == payout.originator_conversation_id
        )
    ).first()


def start_new_attempt(svc: Service, payout) -> dict | None:
    """Move a failed payout back to `submitting` with a new attempt and a new
    OriginatorConversationID. None when the payout is no longer `failed` (another process, or
    another run, got there first) or when any attempt of it carries evidence that it was paid."""
    number = payout.attempt_count + 1
    attempt = new_attempt()
    with svc.engine.begin() as conn:
        if not _within_limits_again(conn, svc.settings, payout):
            return None
        moved = transition(
            conn,
            payout.id,
            "submitting",
            b2c_payments.c.attempt_count == payout.attempt_count,
            NO_EVIDENCE,
            only_from=("failed",),
            attempt_count=number,
            originator_conversation_id=attempt["originator_conversation_id"],
            conversation_id=None,
            check_count=0,
            next_check_at=None,
        )
        if not moved:
            return None
        insert_attempt(conn, payout.id, number, attempt)
    log.info("payout %s: attempt %d after %s", payout.reference_id, number, payout.reason_code)
    return attempt


def request_of(payout) -> PayoutRequest:
    """The request a stored payout stands for, to check the limits against again."""
    return PayoutRequest(
        user_id=payout.user_id,
        user_type=payout.user_type,
        phone=payout.phone_number,
        amount=int(payout.amount),
        reason=payout.reason or "",
        description=payout.description or "",
        command_id=payout.command_id or "BusinessPayment",
    )


def _within_limits_again(conn: sa.Connection, settings: Settings, payout) -> bool:
    """A failed payout stopped counting against the daily limits; sending it again must fit
    them once more (other payouts may have taken the room meanwhile)."""
    try:
        check_payout_limits(conn, settings, request_of(payout))
    except ApiError as error:
        log.warning("payout %s not retried now: %s", payout.reference_id, error.message)
        return False
    return True


def insert_attempt(conn: sa.Connection, payout_id: str, number: int, attempt: dict) -> None:
    conn.execute(
        b2c_payout_attempts.insert().values(
            id=attempt["id"],
            payout_id=payout_id,
            attempt_no=number,
            status="sending",
            originator_conversation_id=attempt["originator_conversation_id"],
            created_at=utcnow(),
        )
    )


def send_attempt(svc: Service, payout_id: str, attempt: dict) -> str:
    """Send one attempt's B2C request, once, and record which of the three outcomes it had:
    accepted -> pending; provably not accepted -> failed; anything else -> unknown."""
    try:
        answer = post_attempt(svc, payout_id, attempt)
    except DarajaRejected as error:
        if error.proves_not_accepted:
            return _record_attempt(svc, payout_id, attempt, "failed", "rejected", error)
        return _record_attempt(svc, payout_id, attempt, "unknown", "unknown", error)
    except NotSent as error:
        return _record_attempt(svc, payout_id, attempt, "failed", "rejected", error)
    except OutcomeUnknown as error:
        log.warning("B2C attempt %s: %s", attempt["id"], error)
        return _record_attempt(svc, payout_id, attempt, "unknown", "unknown", error)
    except Exception as error:  # noqa: BLE001 - whatever happened, the request may have gone out
        log.exception("B2C attempt %s ended without an answer", attempt["id"])
        return _record_attempt(svc, payout_id, attempt, "unknown", "unknown", error)
    return _record_accepted(svc, payout_id, attempt, answer)


def post_attempt(svc: Service, payout_id: str, attempt: dict) -> dict:
    """The B2C request of one attempt, sent once; Daraja's answer, or the client's error."""
    with svc.engine.connect() as conn:
        payout = conn.execute(sa.select(b2c_payments).where(b2c_payments.c.id == payout_id)).one()
    return svc.client.b2c_payment(
        originator_conversation_id=attempt["originator_conversation_id"],
        phone=payout.phone_number,
        amount=int(payout.amount),
        command_id=payout.command_id or "BusinessPayment",
        remarks=payout.description or "Payout",
        result_url=svc.b2c_result_url,
        queue_timeout_url=svc.hook_url("b2c", "timeout"),
        occasion=(payout.reason or "")[:100],
    )


def _record_accepted(svc: Service, payout_id: str, attempt: dict, answer: dict) -> str:
    """Record Daraja's acceptance. A result that came first (the answer was slow) has settled
    the attempt already: only the ConversationID is added to it then. On MySQL a result being
    applied at the same moment can make this the victim of a deadlock; it is run again."""
    conversation_id = answer.get("ConversationID")
    ocid, now = attempt["originator_conversation_id"], utcnow()

    def record() -> None:
        with svc.engine.begin() as conn:
            conn.execute(
                b2c_payout_attempts.update()
                .where(attempts_c.id == attempt["id"])
                .values(
                    status=sa.case(
                        (attempts_c.status == "sending", "accepted"), else_=attempts_c.status
                    ),
                    conversation_id=conversation_id,
                    response_code=str(answer.get("ResponseCode", "0")),
                    sent_at=now,
                    answered_at=now,
                )
            )
            conn.execute(
                b2c_payments.update()
                .where(b2c_payments.c.id == payout_id, on_attempt(ocid))
                .values(conversation_id=conversation_id)
            )
            transition(
                conn,
                payout_id,
                "pending",
                on_attempt(ocid),
                only_from=("submitting",),
                next_check_at=now
                + timedelta(seconds=svc.settings.integer("RESOLVE_PENDING_AFTER_SECONDS")),
            )

    retry_deadlocked(record)
    return "pending"


def _record_attempt(svc, payout_id, attempt, payout_status, attempt_status, error) -> str:
    """Record a refusal (`failed`) or a call that proved nothing (`unknown`), unless a result
    has settled the attempt meanwhile."""
    code, message = daraja_error_fields(error)
    ocid, now = attempt["originator_conversation_id"], utcnow()

    def record() -> None:
        with svc.engine.begin() as conn:
            conn.execute(
                b2c_payout_attempts.update()
                .where(attempts_c.id == attempt["id"], attempts_c.status == "sending")
                .values(
                    status=attempt_status,
                    error_code=code,
                    error_message=message,
                    sent_at=now,
                    answered_at=now,
                )
            )
            values = {"error_description": message, "reason_code": code}
            if payout_status == "unknown":
                values = {
                    "error_description": f"outcome unknown: {message}",
                    "next_check_at": now
                    + timedelta(seconds=svc.settings.integer("RESOLVE_UNKNOWN_AFTER_SECONDS")),
                }
            transition(
                conn,
                payout_id,
                payout_status,
                on_attempt(ocid),
                NO_EVIDENCE,
                only_from=("submitting",),
                **values,
            )

    retry_deadlocked(record)
    return payout_status


# --- B2C payouts: results ------------------------------------------------------------------


def match_keys(parsed: ResultCallback) -> dict[str, str | None]:
    """A result's value for each key of recon.rules.PAYOUT_MATCH_ORDER, in that order."""
    values = {
        "originator_conversation_id": parsed.originator_conversation_id,
        "conversation_id": parsed.conversation_id,
        "reference_id": text_or_none(parsed.parameters.get("ReferenceID")),
        "receipt": parsed.receipt,
    }
    return {key: values[key] for key in PAYOUT_MATCH_ORDER}


# The column each match key is looked up in: an attempt by its own ids first (that says which
# attempt a result is for), then the payout by every key (the old system's rows have no attempts).
ATTEMPT_MATCH_COLUMNS = {
    "originator_conversation_id": "originator_conversation_id",
    "conversation_id": "conversation_id",
}
PAYOUT_MATCH_COLUMNS = {
    "originator_conversation_id": "originator_conversation_id",
    "conversation_id": "conversation_id",
    "reference_id": "reference_id",
    "receipt": "transaction_id",
}


def match_payout(conn: sa.Connection, parsed: ResultCallback):
    """(payout, attempt) for a result, either may be None: the first key of PAYOUT_MATCH_ORDER
    that names an attempt, else the first that names a payout."""
    keys = match_keys(parsed)
    for key, value in keys.items():
        column = ATTEMPT_MATCH_COLUMNS.get(key)
        if value and column:
            statement = first_row_by(b2c_payout_attempts, column)
            attempt = conn.execute(statement, {"value": value}).first()
            if attempt:
                return payout_by(conn, b2c_payments.c.id, attempt.payout_id), attempt
    for key, value in keys.items():
        if value:
            payout = payout_by(conn, b2c_payments.c[PAYOUT_MATCH_COLUMNS[key]], value)
            if payout:
                return payout, None
    return None, None


def payout_by(conn: sa.Connection, column, value):
    return conn.execute(first_row_by(b2c_payments, column.name), {"value": value}).first()


@functools.cache
def first_row_by(table: sa.Table, column_name: str) -> sa.Select:
    """`table`'s first row whose `column_name` is the parameter `value`. Built once per column:
    building a statement costs more than running it."""
    column = table.c[column_name]
    return sa.select(table).where(column == sa.bindparam("value")).limit(1)


RECEIPT_OWNER = (
    sa.select(b2c_payments.c.id, b2c_payments.c.reference_id)
    .where(b2c_payments.c.transaction_id == sa.bindparam("receipt"))
    .limit(1)
)


def settle_payout(conn: sa.Connection, payout, attempt, parsed: ResultCallback) -> str:
    """Apply a B2C (or status-query) result once. Returns applied / duplicate / stale /
    recorded / conflict. `attempt` is the attempt it answers (None for the old system's rows)."""
    if parsed.succeeded:
        return _settle_paid(conn, payout, attempt, parsed)
    return _settle_failed(conn, payout, attempt, parsed)


def _is_current(payout, attempt) -> bool:
    return attempt is None or payout.originator_conversation_id in (
        None,
        attempt.originator_conversation_id,
    )


def _ocid_of(payout, attempt) -> str | None:
    return attempt.originator_conversation_id if attempt else payout.originator_conversation_id


def _settle_failed(conn, payout, attempt, parsed: ResultCallback) -> str:
    """A failure result fails the payout only while its attempt is the current one and no
    attempt carries evidence of payment; otherwise it is recorded on its attempt."""
    closed = close_attempt(conn, attempt, "failed", parsed.result_code, parsed.result_desc)
    moved = transition(
        conn,
        payout.id,
        "failed",
        on_attempt(_ocid_of(payout, attempt)),
        NO_EVIDENCE,
        reason_code=parsed.result_code,
        error_description=parsed.result_desc,
        result_desc=parsed.result_desc,
    )
    if moved:
        return "applied"
    if attempt is not None and attempt.status == "completed":
        add_flag(
            conn,
            "payout",
            payout.id,
            "status_conflict",
            f"failure result {parsed.result_code} for attempt {attempt.attempt_no}, which a "
            f"success result said paid (receipt {attempt.receipt}): not applied",
        )
        return "conflict"
    fresh = payout_by(conn, b2c_payments.c.id, payout.id)
    believed_paid = fresh.status == "completed" and not paid_attempts(conn, payout.id)
    if believed_paid and _is_current(payout, attempt):
        # Completed by an operator (or the old system) with no result: Daraja disagrees.
        add_flag(
            conn,
            "payout",
            payout.id,
            "status_conflict",
            f"failure result {parsed.result_code} for a payout already completed",
        )
        return "conflict"
    if closed:
        return "recorded"
    return "duplicate" if _is_current(payout, attempt) else "stale"


def _settle_paid(conn, payout, attempt, parsed: ResultCallback) -> str:
    """Evidence that money moved: recorded on its attempt, then the payout is completed with
    it (whatever it was believed to be), or sent to review if another attempt was paid too."""
    receipt = parsed.receipt
    owner = conn.execute(RECEIPT_OWNER, {"receipt": receipt}).first() if receipt else None
    if owner is not None and owner.id != payout.id:
        # A genuine result replayed with another payout's ids: one receipt pays one payout.
        add_flag(
            conn,
            "payout",
            payout.id,
            "status_conflict",
            f"success result with receipt {receipt}, which already paid payout "
            f"{owner.reference_id}: not applied",
        )
        return "conflict"
    if attempt is not None and not record_evidence(conn, attempt, receipt, parsed.result_desc):
        return _repeated_evidence(conn, payout, attempt, parsed)
    # The first word on a payout still waiting for it: no belief to contradict, and no other
    # attempt can carry evidence (such a payout is completed or in review).
    if _is_current(payout, attempt) and transition(
        conn, payout.id, "completed", only_from=AWAITING_RESULT, **paid_values(parsed)
    ):
        flag_mismatches(conn, payout, parsed.amount, parsed.receiver[0])
        return "applied"
    return _settle_paid_against_belief(conn, payout, attempt, parsed)


AWAITING_RESULT = ("submitting", "pending", "unknown")


def _settle_paid_against_belief(conn, payout, attempt, parsed: ResultCallback) -> str:
    """Evidence for a payout believed failed, in review, completed, or on another attempt."""
    before = payout_by(conn, b2c_payments.c.id, payout.id)
    if len(paid_attempts(conn, payout.id)) > 1:
        return _double_payout(conn, before, paid_attempts(conn, payout.id))
    if transition(conn, payout.id, "completed", **paid_values(parsed)):
        _flag_completion(conn, before, attempt, parsed)
        close_flags(conn, payout.id, "attempts_exhausted")  # it was paid after all
        flag_mismatches(conn, payout, parsed.amount, parsed.receiver[0])
        return "applied"
    fresh = payout_by(conn, b2c_payments.c.id, payout.id)
    paid = paid_attempts(conn, payout.id)
    if len(paid) > 1:  # another attempt's evidence committed meanwhile
        return _double_payout(conn, fresh, paid)
    if fresh.status == "completed" and fresh.transaction_id in (parsed.receipt, None):
        if fresh.transaction_id is None and parsed.receipt:
            _fill_receipt(conn, fresh, parsed)
            return "applied"
        return _repeated_result(conn, fresh, parsed)
    if fresh.status == "completed":
        return _replace_believed_receipt(conn, fresh, parsed)
    return "duplicate"  # in review already


def record_evidence(conn, attempt, receipt: str | None, desc: str | None) -> bool:
    """Mark `attempt` paid, with its receipt; False if it was already."""
    return (
        conn.execute(
            b2c_payout_attempts.update()
            .where(attempts_c.id == attempt.id, attempts_c.status != "completed")
            .values(
                status="completed",
                receipt=receipt,
                response_code="0",
                error_message=desc,
                answered_at=utcnow(),
            )
        ).rowcount
        == 1
    )


def paid_attempts(conn, payout_id: str) -> list:
    """The payout's attempts that carry evidence of payment, oldest first."""
    return conn.execute(
        sa.select(b2c_payout_attempts)
        .where(attempts_c.payout_id == payout_id, attempts_c.status == "completed")
        .order_by(attempts_c.attempt_no)
    ).all()


def _repeated_evidence(conn, payout, attempt, parsed: ResultCallback) -> str:
    """A success for an attempt already known paid: the same receipt again is a duplicate;
    another receipt for the same attempt cannot be, and is flagged."""
    known = conn.execute(sa.select(attempts_c.receipt).where(attempts_c.id == attempt.id)).scalar()
    if parsed.receipt and known and parsed.receipt != known:
        add_flag(
            conn,
            "payout",
            payout.id,
            "status_conflict",
            f"success result with receipt {parsed.receipt} for attempt {attempt.attempt_no}, "
            f"which receipt {known} already paid: not applied",
        )
        return "conflict"
    fresh = payout_by(conn, b2c_payments.c.id, payout.id)
    return _repeated_result(conn, fresh, parsed) if fresh.status == "completed" else "duplicate"


def _double_payout(conn, before, paid: list) -> str:
    """Two attempts were paid: a person must recover one payment."""
    receipts = ", ".join(f"attempt {a.attempt_no} receipt {a.receipt}" for a in paid)
    payout = before
    moved = transition(conn, payout.id, "review")
    if not moved and before.status != "review":
        return "conflict"
    add_flag(
        conn,
        "payout",
        payout.id,
        "possible_double_payout",
        f"payout {payout.reference_id} was paid by {len(paid)} attempts ({receipts}): "
        "recover the extra payment, then resolve it",
    )
    audit(conn, before, SYSTEM_ACTOR, "double_payout", "review", note=receipts)
    return "applied"


def close_flags(conn, payout_id: str, flag: str) -> None:
    """Mark the payout's open `flag` flags resolved: what they said no longer holds."""
    conn.execute(
        payment_flags.update()
        .where(payment_flags.c.subject_type == "payout", payment_flags.c.subject_id == payout_id)
        .where(payment_flags.c.flag == flag, payment_flags.c.resolved_at.is_(None))
        .values(resolved_at=utcnow())
    )


def _flag_completion(conn, before, attempt, parsed: ResultCallback) -> None:
    """Evidence that contradicts a belief (`failed`), or that arrives for an attempt other than
    the one still out, is flagged for a person and audited."""
    number = attempt.attempt_no if attempt is not None else "?"
    note = f"success result (receipt {parsed.receipt}) for attempt {number}"
    if before.status == "failed":
        note += (
            f" of a payout believed not paid ({before.reason_code}: "
            f"{before.error_description or before.result_desc})"
        )
    elif attempt is not None and not _is_current(before, attempt):
        note += f" while attempt {before.attempt_count} is still out: check it does not pay too"
    else:
        return
    add_flag(conn, "payout", before.id, "status_conflict", note)
    audit(
        conn,
        before,
        SYSTEM_ACTOR,
        "evidence_of_payment",
        "completed",
        receipt=parsed.receipt,
        note=note,
    )


def _fill_receipt(conn, payout, parsed: ResultCallback) -> None:
    """A payout completed without a receipt (the old system's rows) takes the one that came."""
    conn.execute(
        b2c_payments.update()
        .where(b2c_payments.c.id == payout.id, b2c_payments.c.transaction_id.is_(None))
        .values(transaction_id=parsed.receipt, paid_amount=parsed.amount, updated_at=utcnow())
    )


def _replace_believed_receipt(conn, payout, parsed: ResultCallback) -> str:
    """A payout an operator completed with one receipt, which Daraja's evidence contradicts:
    the evidence's receipt replaces it, flagged and audited with both."""
    note = (
        f"success result says receipt {parsed.receipt} paid it; it was completed with "
        f"receipt {payout.transaction_id}"
    )
    conn.execute(
        b2c_payments.update()
        .where(b2c_payments.c.id == payout.id, b2c_payments.c.status == "completed")
        .values(**paid_values(parsed), updated_at=utcnow())
    )
    add_flag(conn, "payout", payout.id, "status_conflict", note)
    audit(
        conn,
        payout,
        SYSTEM_ACTOR,
        "evidence_of_payment",
        "completed",
        receipt=parsed.receipt,
        note=note,
    )
    return "applied"


def paid_values(parsed: ResultCallback) -> dict:
    """What a success result writes on the payout it completes."""
    return dict(
        transaction_id=parsed.receipt,
        completed_at=parsed.completed_at or utcnow(),
        reason_code="0",
        result_desc=parsed.result_desc,
        paid_amount=parsed.amount,
        receiver_name=parsed.receiver[1],
        error_description=None,
    )


def _repeated_result(conn, payout, parsed: ResultCallback) -> str:
    """The same success again: a duplicate, unless it tells another amount (then flagged)."""
    if (
        parsed.amount is not None
        and payout.paid_amount is not None
        and (parsed.amount != payout.paid_amount)
    ):
        add_flag(
            conn,
            "payout",
            payout.id,
            "amount_mismatch",
            f"amount mismatch: a repeated result for receipt {payout.transaction_id} says "
            f"{shillings_text(parsed.amount)}, the first said {shillings_text(payout.paid_amount)}",
        )
    return "duplicate"


def close_attempt(conn, attempt, status: str, code: str | None, desc: str | None) -> bool:
    """Record how an open attempt ended (failed, unknown, not_found); an attempt an answer has
    settled already is left as it is. True if it changed."""
    if attempt is None:
        return False
    return (
        conn.execute(
            b2c_payout_attempts.update()
            .where(attempts_c.id == attempt.id, attempts_c.status.in_(OPEN_ATTEMPT_STATES))
            .values(status=status, response_code=code, error_message=desc, answered_at=utcnow())
        ).rowcount
        == 1
    )


def flag_mismatches(conn, payout, amount: Decimal | None, phone: str | None) -> None:
    if amount is not None and payout.amount is not None and amount != payout.amount:
        add_flag(
            conn,
            "payout",
            payout.id,
            "amount_mismatch",
            "amount mismatch: " + amount_difference(payout.amount, amount),
        )
    digits = re.sub(r"\D", "", phone or "")
    if len(digits) == 12 and payout.phone_number and digits != payout.phone_number:
        add_flag(
            conn,
            "payout",
            payout.id,
            "phone_mismatch",
            f"phone mismatch: requested {payout.phone_number} != paid {digits}",
        )


def mark_queue_timeout(conn: sa.Connection, payout, attempt) -> str:
    """A queue timeout says the outcome is unknown, never that the payout failed."""
    moved = transition(
        conn,
        payout.id,
        "unknown",
        on_attempt(_ocid_of(payout, attempt)),
        only_from=("submitting", "pending"),
        next_check_at=utcnow(),
    )
    if moved:
        close_attempt(conn, attempt, "unknown", None, "queue timeout")
        return "applied"
    return "duplicate"


SYSTEM_ACTOR = "system"


def audit(
    conn: sa.Connection,
    payout,
    actor: str,
    action: str,
    status_after: str,
    *,
    receipt: str | None = None,
    note: str = "",
) -> None:
    """One row of the payout's append-only audit trail: who did what, from which status."""
    conn.execute(
        payout_audit.insert().values(
            id=new_id(),
            payout_id=payout.id,
            actor=actor,
            action=action,
            status_before=payout.status,
            status_after=status_after,
            receipt=receipt or None,
            note=note,
            created_at=utcnow(),
        )
    )


def apply_b2c_callback(
    conn: sa.Connection, parsed: ResultCallback, raw: str, journal_id: str, kind: str
) -> str:
    """Store a B2C result or queue-timeout callback whole and apply it once."""
    payout, attempt = match_payout(conn, parsed)
    if parsed.problems and (payout is None or parsed.result_code is None):
        outcome = "malformed"
    elif payout is None:
        outcome = "orphan"
    elif kind == "timeout":
        outcome = mark_queue_timeout(conn, payout, attempt)
    else:
        outcome = settle_payout(conn, payout, attempt, parsed)
    callback_id = store_result_callback(conn, parsed, raw, journal_id, kind, payout, outcome)
    if outcome in ("orphan", "malformed"):
        add_flag(
            conn,
            "b2c_callback",
            callback_id,
            f"{outcome}_callback",
            f"{kind} callback OriginatorConversationID {parsed.originator_conversation_id} "
            f"ConversationID {parsed.conversation_id}: "
            + ("; ".join(parsed.problems) or "matches no payout"),
        )
    return outcome


STORED_RECEIPT = sa.select(b2c_payment_callbacks.c.id).where(
    b2c_payment_callbacks.c.transaction_id == sa.bindparam("receipt")
)


def store_result_callback(
    conn, parsed: ResultCallback, raw: str, journal_id: str, kind: str, payout, outcome: str
) -> str:
    """One b2c_payment_callbacks row per delivery. The unique transaction_id holds a receipt
    once: later deliveries of the same receipt keep it in raw_response only."""
    receipt = parsed.receipt if kind == "result" else None
    if receipt and conn.execute(STORED_RECEIPT, {"receipt": receipt}).first():
        receipt = None
    row = result_callback_row(parsed, raw, journal_id, kind, payout, outcome, receipt)
    conn.execute(b2c_payment_callbacks.insert().values(**row))
    return row["id"]


def result_callback_row(
    parsed: ResultCallback,
    raw: str,
    journal_id: str,
    kind: str,
    payout,
    outcome: str,
    receipt,
) -> dict:
    """The b2c_payment_callbacks row for one delivery, keeping `receipt` as its transaction_id."""
    phone, name = parsed.receiver
    code = parsed.result_code
    return dict(
        id=new_id(),
        transaction_id=receipt,
        originator_conversation_id=parsed.originator_conversation_id,
        conversation_id=parsed.conversation_id,
        result_code=integer_code(code),
        result_code_text=code,
        result_description=parsed.result_desc,
        result_type=parsed.result_type,
        transaction_amount=parsed.amount,
        receiver_phone=phone,
        receiver_name=name,
        reference_id=payout.reference_id
        if payout
        else bounded(text_or_none(parsed.parameters.get("ReferenceID")), 255),
        payout_id=payout.id if payout else None,
        kind=kind,
        outcome=outcome,
        journal_id=journal_id,
        raw_response=raw,
        received_at=utcnow(),
    )


def payout_summary(svc: Service, payout_id: str) -> dict:
    with svc.engine.connect() as conn:
        payout = payout_by(conn, b2c_payments.c.id, payout_id)
    summary = {
        "reference_id": payout.reference_id,
        "status": payout.status,
        "amount": json_amount(payout.amount),
        "phone_number": payout.phone_number,
        "originator_conversation_id": payout.originator_conversation_id,
    }
    if payout.status == "failed":
        summary.update(result_code=payout.reason_code, result_desc=payout.error_description)
    return summary


def payout_detail(svc: Service, reference_id: str) -> dict:
    with svc.engine.connect() as conn:
        payout = payout_by(conn, b2c_payments.c.reference_id, reference_id)
        if payout is None:
            raise ApiError(404, f"no payout with reference_id {reference_id!r}")
        return payout_view(conn, payout)


def payout_view(conn: sa.Connection, payout) -> dict:
    """The payout as GET /payouts/<reference_id> shows it: with its attempts, flags, history."""
    return payout_views(conn, [payout])[payout.id]


def payout_views(conn: sa.Connection, payouts: list) -> dict[str, dict]:
    """{payout id: its view} for these payout rows, with three reads whatever their number."""
    ids = [payout.id for payout in payouts]
    attempts = conn.execute(
        sa.select(b2c_payout_attempts)
        .where(b2c_payout_attempts.c.payout_id.in_(ids))
        .order_by(b2c_payout_attempts.c.attempt_no)
    ).all()
    flags = conn.execute(
        sa.select(payment_flags.c.subject_id, payment_flags.c.flag)
        .where(payment_flags.c.subject_type == "payout", payment_flags.c.subject_id.in_(ids))
        .order_by(payment_flags.c.created_at)
    ).all()
    audit = conn.execute(
        sa.select(payout_audit)
        .where(payout_audit.c.payout_id.in_(ids))
        .order_by(payout_audit.c.created_at)
    ).all()
    attempts_of, flags_of_payout, history_of = (defaultdict(list) for _ in range(3))
    for attempt in attempts:
        attempts_of[attempt.payout_id].append(attempt_view(attempt))
    for flag in flags:
        flags_of_payout[flag.subject_id].append(flag.flag)
    for row in audit:
        history_of[row.payout_id].append(audit_entry(row))
    return {
        payout.id: {
            **payout_row_view(payout),
            "attempts": attempts_of[payout.id],
            "flags": list(dict.fromkeys(flags_of_payout[payout.id])),
            "history": history_of[payout.id],
        }
        for payout in payouts
    }


def attempt_view(attempt) -> dict:
    return {
        "attempt_no": attempt.attempt_no,
        "originator_conversation_id": attempt.originator_conversation_id,
        "conversation_id": attempt.conversation_id,
        "status": attempt.status,
        "error_code": attempt.error_code,
        "error_message": attempt.error_message,
        "created_at": _iso(attempt.created_at),
    }


def payout_row_view(payout) -> dict:
    code = payout.reason_code
    return {
        "reference_id": payout.reference_id,
        "status": payout.status,
        "amount": json_amount(payout.amount),
        "paid_amount": json_amount(payout.paid_amount),
        "phone_number": payout.phone_number,
        "user_id": payout.user_id,
        "created_by": payout.created_by,
        "transaction_id": payout.transaction_id,
        "result_code": code,
        "result_desc": payout.result_desc or payout.error_description,
        "result_meaning": lookup(code, "b2c").meaning if lookup(code, "b2c") else None,
        "originator_conversation_id": payout.originator_conversation_id,
        "conversation_id": payout.conversation_id,
        "initiated_at": _iso(payout.initiated_at),
        "completed_at": _iso(payout.completed_at),
    }


def list_payouts(svc: Service, status: str | None, since: str | None, limit: int = 100) -> dict:
    query = sa.select(b2c_payments).order_by(b2c_payments.c.initiated_at.desc()).limit(limit)
    if status and status not in PAYOUT_STATES:
        raise ApiError(
            400, f"status: one of {', '.join(PAYOUT_STATES)}, not {status!r}", field="status"
        )
    if status:
        query = query.where(b2c_payments.c.status == status)
    if since:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise ApiError(
                400, f"since: an ISO date or time, not {since!r}", field="since"
            ) from None
        if moment.tzinfo:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        query = query.where(b2c_payments.c.initiated_at >= moment)
    with svc.engine.connect() as conn:
        rows = conn.execute(query).all()
    return {"payouts": [payout_row_view(row) for row in rows]}


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=UTC).isoformat() if moment else None


def audit_entry(row) -> dict:
    return {
        "actor": row.actor,
        "action": row.action,
        "status_before": row.status_before,
        "status_after": row.status_after,
        "receipt": row.receipt,
        "note": row.note,
        "at": row.created_at.isoformat() + "Z",
    }
