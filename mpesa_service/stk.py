"""Collections by STK Push: initiate (write first, then ask Daraja), apply callbacks and query
answers once by compare-and-set, flag amount mismatches, and sweep payments left open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from mpesa_service import idempotency, log
from mpesa_service.context import ApiError, Service
from mpesa_service.daraja import DarajaError, DarajaRejected, NotSent, daraja_error_fields
from mpesa_service.events import emit, writes_events
from mpesa_service.flags import add_flag, flags_of
from mpesa_service.ids import new_id
from mpesa_service.parsing import StkCallback, json_amount, optional_text, requested_shillings
from mpesa_service.storage import (
    payment_flags,
    payments,
    retry_while_unavailable,
    reversals,
    stk_callbacks,
    utcnow,
)
from recon.codes import meaning, normalise_code
from recon.rules import (
    STK_LIMITS,
    InvalidValue,
    amount_difference,
    mpesa_phone,
)

STK_OPEN_STATES = ("pending", "unknown")
STK_DESCRIPTION_LIMIT = 13
STK_REFERENCE_LIMIT = 12


@dataclass(frozen=True)
class StkRequest:
    phone: str
    amount: int
    account_reference: str
    description: str
    user_id: str | None
    booking_id: str | None

    @classmethod
    def from_body(cls, body: dict) -> StkRequest:
        try:
            phone = mpesa_phone(body.get("phone"), "phone")
            amount = requested_shillings(body.get("amount"), STK_LIMITS, "amount")
        except InvalidValue as error:
            raise ApiError(400, str(error), field=error.field) from None
        reference = required_text(body, "account_reference", STK_REFERENCE_LIMIT)
        if not reference.replace(" ", "").isalnum():
            raise ApiError(
                400, "account_reference: letters and digits only", field="account_reference"
            )
        return cls(
            phone=phone,
            amount=amount,
            account_reference=reference,
            description=stk_description(body.get("description")),
            user_id=optional_text(body, "user_id", 36),
            booking_id=optional_text(body, "booking_id", 36),
        )


def stk_description(value: object) -> str:
    """Daraja takes 1–13 characters: spaces are collapsed, the text is cut to 13 characters,
    and an empty description becomes "Payment"."""
    text = " ".join(str(value or "").split())
    return text[:STK_DESCRIPTION_LIMIT].strip() or "Payment"


def required_text(body: dict, name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name}: required text", field=name)
    if len(value.strip()) > limit:
        raise ApiError(
            400, f"{name}: at most {limit} characters, got {len(value.strip())}", field=name
        )
    return value.strip()


def write_payment_ahead(svc: Service, request: StkRequest, key: KeyClaim | None = None) -> str:
    """Commit the `payments` row (and the caller's idempotency key, if any) before Daraja is
    called; returns its id. IntegrityError when another request holds the key."""
    payment_id, now = new_id(), utcnow()
    # Due for the sweep from the start: if the process dies before Daraja's answer is stored,
    # the sweep still finds the payment and expires it after STK_EXPIRY_SECONDS.
    first_query = now + timedelta(seconds=svc.settings.integer("STK_QUERY_AFTER_SECONDS"))
    with svc.engine.begin() as conn:
        if key is not None:
            idempotency.claim(conn, key.key, SCOPE, key.request_hash, payment_id)
        conn.execute(
            payments.insert().values(
                id=payment_id,
                user_id=request.user_id,
                booking_id=request.booking_id,
                amount=request.amount,
                status="pending",
                method="mpesa",
                phone_number=request.phone,
                account_reference=request.account_reference,
                description=request.description,
                created_at=now,
                updated_at=now,
                next_query_at=first_query,
            )
        )
    return payment_id


NOT_RECORDED = (
    "the prompt was sent but the database could not record it: do not send it again; the "
    "payment will expire and its callback be flagged as an orphan for review"
)


@dataclass(frozen=True)
class KeyClaim:
    """A caller's idempotency key and the fingerprint of the body it came with."""

    key: str
    request_hash: str


SCOPE = "collection"


def initiate_stk(svc: Service, body: dict, idempotency_key: str = "") -> tuple[int, dict]:
    """Write the payment row, ask Daraja to prompt the customer, record Daraja's answer.
    Returns (HTTP status, answer): 200, or 202 when the prompt went out but could not be
    recorded (see _record_push_answer). With an idempotency key, the same key and body get the
    first answer again (one prompt, even for concurrent requests); another body is a 409."""
    request = StkRequest.from_body(body)
    if not idempotency_key:
        return push_stk(svc, request, write_payment_ahead(svc, request))
    claim = KeyClaim(idempotency.require_key(idempotency_key), idempotency.fingerprint(body))
    replayed = _replay_push(svc, claim)
    if replayed:
        return replayed
    try:
        payment_id = write_payment_ahead(svc, request, claim)
    except sa.exc.IntegrityError:
        return _replay_push(svc, claim, wait=True)
    try:
        status, answer = push_stk(svc, request, payment_id)
    except ApiError as error:
        idempotency.remember(svc, claim.key, error.status, {"error": error.message, **error.extra})
        raise
    idempotency.remember(svc, claim.key, status, answer)
    return status, answer


def _replay_push(svc: Service, claim: KeyClaim, wait: bool = False):
    return idempotency.replay(
        svc,
        claim.key,
        SCOPE,
        claim.request_hash,
        in_flight=lambda payment_id: (200, _push_as_it_stands(svc, payment_id)),
        wait=wait,
    )


def _push_as_it_stands(svc: Service, payment_id: str) -> dict:
    with svc.engine.connect() as conn:
        payment = conn.execute(sa.select(payments).where(payments.c.id == payment_id)).one()
    return {
        "payment_id": payment.id,
        "checkout_request_id": payment.checkout_request_id or "",
        "status": payment.status,
    }


def push_stk(svc: Service, request: StkRequest, payment_id: str) -> tuple[int, dict]:
    """Ask Daraja to prompt the customer for the payment written ahead, and record its answer."""
    answer = _send_stk_push(svc, payment_id, request)
    checkout_request_id = str(answer.get("CheckoutRequestID") or "")
    merchant_request_id = answer.get("MerchantRequestID")
    sent = {
        "payment_id": payment_id,
        "checkout_request_id": checkout_request_id,
        "status": "pending",
    }
    if not _record_push_answer(svc, payment_id, checkout_request_id, merchant_request_id):
        return 202, {**sent, "recorded": False, "warning": NOT_RECORDED}
    return 200, sent


def _record_push_answer(
    svc: Service, payment_id: str, checkout_request_id: str, merchant_request_id: str | None
) -> bool:
    """Store the ids Daraja gave the push, then apply callbacks that came before them. The
    prompt is out by now, so a database outage here must not become a 503: the client would
    send the push again and the customer be prompted twice. While the database is out of
    reach the write is tried again for STK_RECORD_RETRY_SECONDS; False if it never went in."""

    try:
        _update_after_sending(
            svc,
            payment_id,
            checkout_request_id=checkout_request_id or None,
            merchant_request_id=merchant_request_id,
        )
    except sa.exc.SQLAlchemyError:
        log.exception(
            "STK push for payment %s was sent (CheckoutRequestID %s, MerchantRequestID %s) "
            "but could not be recorded",
            payment_id,
            checkout_request_id,
            merchant_request_id,
        )
        return False
    try:
        apply_waiting_stk_callbacks(svc, checkout_request_id)
    except sa.exc.SQLAlchemyError:
        log.exception(
            "callbacks that came before STK push %s was recorded stay orphans; the sweep's "
            "STK Query settles payment %s",
            checkout_request_id,
            payment_id,
        )
    return True


def _update_after_sending(svc: Service, payment_id: str, *conditions, **values) -> None:
    """Set `values` on the payment once Daraja was called (if `conditions` hold), trying again
    while the database is out of reach, for up to STK_RECORD_RETRY_SECONDS."""

    def update():
        with svc.engine.begin() as conn:
            moved = conn.execute(
                payments.update()
                .where(payments.c.id == payment_id, *conditions)
                .values(updated_at=utcnow(), **values)
            ).rowcount
            if moved and values.get("status") == "failed":
                emit_payment_event(conn, payment_id, "payment.failed")

    seconds = svc.settings.integer("STK_RECORD_RETRY_SECONDS")
    retry_while_unavailable(update, seconds, f"recording Daraja's answer for payment {payment_id}")


def _send_stk_push(svc: Service, payment_id: str, request: StkRequest) -> dict:
    try:
        return svc.client.stk_push(
            phone=request.phone,
            amount=request.amount,
            callback_url=f"{svc.hook_url('stk')}/{payment_id}",
            account_reference=request.account_reference,
            description=request.description,
        )
    except (DarajaRejected, NotSent) as error:
        code, message = daraja_error_fields(error)
        _close_stk_unsent(svc, payment_id, "failed", code, message)
        raise ApiError(
            502,
            f"Daraja refused the STK push: {message}",
            daraja_code=code,
            daraja_message=message,
            payment_id=payment_id,
        ) from None
    except DarajaError as error:
        code, message = daraja_error_fields(error)
        _close_stk_unsent(svc, payment_id, "unknown", code, message)
        raise ApiError(
            504,
            "no answer from Daraja: the prompt may or may not have been sent",
            payment_id=payment_id,
        ) from None


def _close_stk_unsent(svc: Service, payment_id: str, status: str, code: str, message: str):
    """Record Daraja's refusal (`failed`) or silence (`unknown`: the sweep job expires it after
    STK_EXPIRY_SECONDS, since without a CheckoutRequestID there is nothing to query), unless
    the push's callback, naming the payment, has settled it meanwhile (a compare-and-set on
    `pending`). If the database will not take it, the row stays `pending`, which the sweep
    expires the same way, and the client still gets Daraja's answer rather than a 503 inviting
    a second push."""

    try:
        _update_after_sending(
            svc,
            payment_id,
            payments.c.status == "pending",
            status=status,
            error_code=code,
            error_message=message,
            next_query_at=utcnow() if status == "unknown" else None,
        )
    except sa.exc.SQLAlchemyError:
        log.exception("payment %s could not be marked %s; the sweep expires it", payment_id, status)


def settle_stk(
    conn: sa.Connection,
    payment,
    *,
    code: str,
    desc: str | None,
    amount: Decimal | None = None,
    receipt: str | None = None,
    completed_at: datetime | None = None,
) -> str:
    """Apply a final STK answer once (compare-and-set). Returns applied/duplicate/conflict."""
    if code == "0":
        return _settle_stk_paid(conn, payment, desc, amount, receipt, completed_at)
    changed = conn.execute(
        payments.update()
        .where(payments.c.id == payment.id, payments.c.status.in_(STK_OPEN_STATES))
        .values(status="failed", result_code=code, result_desc=desc, updated_at=utcnow())
    ).rowcount
    if changed:
        emit_payment_event(conn, payment.id, "payment.failed")
        return "applied"
    if payment.status == "failed" and payment.result_code == code:
        return "duplicate"
    add_flag(
        conn,
        "payment",
        payment.id,
        "status_conflict",
        f"result {code} ({desc}) for a payment already {payment.status}",
    )
    return "conflict"


def _settle_stk_paid(conn, payment, desc, amount, receipt, completed_at) -> str:
    """Evidence that the customer paid: it completes the payment from any state but paid,
    flagged when it contradicts an earlier belief (`failed`: expired, or a failure result).
    A paid payment never loses its receipt or amount: an answer without them (STK Query's)
    leaves the ones it has."""
    if receipt and _receipt_owner(conn, receipt, payment.id):
        add_flag(
            conn,
            "payment",
            payment.id,
            "status_conflict",
            f"paid with receipt {receipt}, which already paid another payment: not applied",
        )
        return "conflict"
    mismatch = amount is not None and amount != payment.amount
    values = {
        "result_code": "0",
        "result_desc": desc,
        "completed_at": completed_at or utcnow(),
        "updated_at": utcnow(),
    }
    if receipt:
        values.update(mpesa_receipt=receipt, transaction_reference=receipt)
    if amount is not None:
        values["paid_amount"] = amount
    changed = conn.execute(
        payments.update()
        .where(payments.c.id == payment.id, payments.c.status.in_(UNPAID_STATES))
        .values(status="amount_mismatch" if mismatch else "completed", **values)
    ).rowcount
    if changed:
        if payment.status == "failed":
            add_flag(
                conn,
                "payment",
                payment.id,
                "status_conflict",
                f"paid (receipt {receipt or 'not given'}) after it was failed "
                f"({payment.result_code or payment.error_code}: {payment.result_desc})",
            )
        _flag_paid_amount(conn, payment, amount)
        paid = "payment.amount_mismatch" if mismatch else "payment.completed"
        emit_payment_event(conn, payment.id, paid)
        return "applied"
    if payment.mpesa_receipt is None and receipt:
        return _fill_stk_receipt(conn, payment, receipt, amount)
    return "duplicate"


STK_PAID_STATES = ("completed", "amount_mismatch")
UNPAID_STATES = (*STK_OPEN_STATES, "failed")


def _flag_paid_amount(conn, payment, amount: Decimal | None) -> None:
    if amount is not None and amount != payment.amount:
        flag = "underpaid" if amount < payment.amount else "overpaid"
        add_flag(conn, "payment", payment.id, flag, amount_difference(payment.amount, amount))


def _receipt_owner(conn, receipt: str, payment_id: str) -> str | None:
    """The other payment this receipt already paid, if any."""
    return conn.execute(
        sa.select(payments.c.id)
        .where(payments.c.mpesa_receipt == receipt, payments.c.id != payment_id)
        .limit(1)
    ).scalar()


def _fill_stk_receipt(conn, payment, receipt: str, amount: Decimal | None) -> str:
    """A callback after a query settled the payment: add the receipt and amount it carries."""
    values = {"mpesa_receipt": receipt, "transaction_reference": receipt, "updated_at": utcnow()}
    if amount is not None:
        values.update(
            paid_amount=amount,
            status="amount_mismatch" if amount != payment.amount else payment.status,
        )
    filled = conn.execute(
        payments.update()
        .where(
            payments.c.id == payment.id,
            payments.c.status.in_(STK_PAID_STATES),
            payments.c.mpesa_receipt.is_(None),
        )
        .values(**values)
    ).rowcount
    if not filled:
        return "duplicate"
    _flag_paid_amount(conn, payment, amount)
    if amount is not None and amount != payment.amount and payment.status == "completed":
        emit_payment_event(conn, payment.id, "payment.amount_mismatch")
    return "applied"


def apply_stk_callback(
    conn: sa.Connection, parsed: StkCallback, raw: str, journal_id: str, payment_id: str = ""
) -> str:
    """Match the callback to its payment by CheckoutRequestID, or else to the payment its URL
    names (`payment_id`, see initiate_stk) if that one has no CheckoutRequestID yet, and
    settle it; store the callback with its outcome either way."""
    payment = None
    if parsed.checkout_request_id:
        payment = _payment_by_checkout(conn, parsed.checkout_request_id)
        if payment is None and payment_id:
            payment = _adopted_by_named_payment(conn, parsed, payment_id)
    if parsed.problems and (payment is None or parsed.result_code is None):
        outcome = "malformed"
    elif payment is None:
        outcome = "orphan"
    else:
        outcome = settle_stk(
            conn,
            payment,
            code=parsed.result_code,
            desc=parsed.result_desc,
            amount=parsed.amount,
            receipt=parsed.receipt,
            completed_at=parsed.transaction_date,
        )
    callback_id = new_id()
    conn.execute(
        stk_callbacks.insert().values(
            id=callback_id,
            checkout_request_id=parsed.checkout_request_id,
            merchant_request_id=parsed.merchant_request_id,
            payment_id=payment.id if payment else None,
            result_code=parsed.result_code,
            result_desc=parsed.result_desc,
            amount=parsed.amount,
            mpesa_receipt=parsed.receipt,
            phone_number=parsed.phone,
            transaction_date=parsed.transaction_date,
            outcome=outcome,
            journal_id=journal_id,
            raw_response=raw,
            received_at=utcnow(),
        )
    )
    if outcome in ("orphan", "malformed"):
        add_flag(
            conn,
            "stk_callback",
            callback_id,
            f"{outcome}_callback",
            f"STK callback for CheckoutRequestID {parsed.checkout_request_id}: "
            + ("; ".join(parsed.problems) or "no such payment"),
        )
    return outcome


def _adopted_by_named_payment(conn: sa.Connection, parsed: StkCallback, payment_id: str):
    """The payment the callback's URL names, once it has taken the callback's CheckoutRequestID
    and MerchantRequestID if it had none yet; None if no payment then holds that id (the named
    one has its own, or there is no such payment). Without this, a push Daraja accepted
    but whose answer never reached the database (Daraja silent, the database out of reach, the
    process killed in between) ends `expired` while its callback waits as an orphan. Looked up
    again after the update, so that a twin of the callback adopted concurrently (the replay job
    beside the writer) makes this one a duplicate, not an orphan."""
    adopted = conn.execute(
        payments.update()
        .where(payments.c.id == payment_id, payments.c.checkout_request_id.is_(None))
        .values(
            checkout_request_id=parsed.checkout_request_id,
            merchant_request_id=parsed.merchant_request_id,
            updated_at=utcnow(),
        )
    ).rowcount
    if adopted:
        log.warning(
            "STK callback %s matched payment %s by its callback URL: the push's answer had not "
            "been recorded",
            parsed.checkout_request_id,
            payment_id,
        )
    return _payment_by_checkout(conn, parsed.checkout_request_id)


def apply_waiting_stk_callbacks(svc: Service, checkout_request_id: str) -> None:
    """Apply callbacks that arrived before we had stored the CheckoutRequestID they carry."""
    if not checkout_request_id:
        return
    with svc.engine.begin() as conn:
        waiting = conn.execute(
            sa.select(stk_callbacks)
            .where(stk_callbacks.c.checkout_request_id == checkout_request_id)
            .where(stk_callbacks.c.outcome == "orphan")
        ).all()
        for callback in waiting:
            payment = _payment_by_checkout(conn, checkout_request_id)
            outcome = settle_stk(
                conn,
                payment,
                code=callback.result_code,
                desc=callback.result_desc,
                amount=callback.amount,
                receipt=callback.mpesa_receipt,
                completed_at=callback.transaction_date,
            )
            conn.execute(
                stk_callbacks.update()
                .where(stk_callbacks.c.id == callback.id)
                .values(outcome=outcome, payment_id=payment.id)
            )
            conn.execute(
                payment_flags.update()
                .where(payment_flags.c.subject_id == callback.id)
                .values(resolved_at=utcnow())
            )


def _payment_by_checkout(conn: sa.Connection, checkout_request_id: str):
    return conn.execute(
        sa.select(payments).where(payments.c.checkout_request_id == checkout_request_id)
    ).first()


def query_stk(svc: Service, checkout_request_id: str) -> dict:
    """The stored status; while it is open, ask Daraja and apply a final answer."""
    with svc.engine.connect() as conn:
        payment = _payment_by_checkout(conn, checkout_request_id)
    if payment is None:
        raise ApiError(404, f"no payment with checkout_request_id {checkout_request_id!r}")
    if payment.status in STK_OPEN_STATES:
        ask_daraja_about_stk(svc, payment)
    return payment_view(svc, checkout_request_id)


def ask_daraja_about_stk(svc: Service, payment) -> bool:
    """STK Query; apply the answer if final. True when the payment is now settled."""
    try:
        answer = svc.client.stk_query(payment.checkout_request_id)
    except DarajaRejected as error:
        if not error.still_processing:
            log.warning("STK query for %s refused: %s", payment.id, error)
        return False
    except DarajaError as error:
        log.warning("STK query for %s failed: %s", payment.id, error)
        return False
    code = normalise_code(answer.get("ResultCode"))
    if code is None:
        return False
    with svc.engine.begin() as conn:
        fresh = conn.execute(sa.select(payments).where(payments.c.id == payment.id)).first()
        settle_stk(conn, fresh, code=code, desc=answer.get("ResultDesc"))
    return True


def payment_view(svc: Service, checkout_request_id: str) -> dict:
    with svc.engine.connect() as conn:
        return payment_row_view(conn, _payment_by_checkout(conn, checkout_request_id))


def emit_payment_event(conn: sa.Connection, payment_id: str, event_type: str) -> None:
    """Write a payment event, its data what POST /payments/mpesa/stk-query answers now."""
    if not writes_events(conn):
        return
    payment = conn.execute(sa.select(payments).where(payments.c.id == payment_id)).one()
    subject = payment.checkout_request_id or payment.id
    emit(conn, event_type, subject, payment_row_view(conn, payment))


def payment_row_view(conn: sa.Connection, payment) -> dict:
    """A collection as POST /payments/mpesa/stk-query answers it."""
    flags = flags_of(conn, "payment", payment.id)
    return {
        "payment_id": payment.id,
        "checkout_request_id": payment.checkout_request_id,
        "status": payment.status,
        "amount": json_amount(payment.amount),
        "paid_amount": json_amount(payment.paid_amount),
        "result_code": payment.result_code,
        "result_desc": payment.result_desc,
        "result_meaning": meaning(payment.result_code, "stk") if payment.result_code else None,
        "mpesa_receipt": payment.mpesa_receipt,
        "error_code": payment.error_code,
        "flags": flags,
        **(
            {"reversal_receipt": reversal_receipt(conn, payment.id)}
            if payment.status == "reversed"
            else {}
        ),
    }


def reversal_receipt(conn: sa.Connection, payment_id: str) -> str | None:
    """The receipt of the reversal that reversed a collection (see reversals.py)."""
    return conn.execute(
        sa.select(reversals.c.receipt)
        .where(reversals.c.payment_id == payment_id, reversals.c.status == "completed")
        .order_by(reversals.c.completed_at)
        .limit(1)
    ).scalar()


def sweep_stk(svc: Service) -> int:
    """Query STK payments still open after STK_QUERY_AFTER_SECONDS, with backoff; fail those
    past STK_EXPIRY_SECONDS. Each step is claimed with a compare-and-set first, so two
    processes never query the same payment at the same step. Returns how many were handled."""
    now = utcnow()
    with svc.engine.connect() as conn:
        due = conn.execute(
            sa.select(payments)
            .where(payments.c.method == "mpesa")
            .where(payments.c.status.in_(STK_OPEN_STATES))
            .where(payments.c.next_query_at <= now)
            .order_by(payments.c.next_query_at)
            .limit(200)
        ).all()
    handled = 0
    for payment in due:
        if _claim_stk_step(svc, payment, now):
            handled += 1
            _sweep_one(svc, payment, now)
    return handled


def _claim_stk_step(svc: Service, payment, now: datetime) -> bool:
    delay = min(30 * 2**payment.query_count, 600)
    with svc.engine.begin() as conn:
        return bool(
            conn.execute(
                payments.update()
                .where(payments.c.id == payment.id)
                .where(payments.c.query_count == payment.query_count)
                .where(payments.c.status.in_(STK_OPEN_STATES))
                .values(
                    query_count=payment.query_count + 1,
                    next_query_at=now + timedelta(seconds=delay),
                )
            ).rowcount
        )


def _sweep_one(svc: Service, payment, now: datetime) -> None:
    if payment.checkout_request_id and ask_daraja_about_stk(svc, payment):
        return
    seconds = svc.settings.integer("STK_EXPIRY_SECONDS")
    if payment.created_at and now - payment.created_at >= timedelta(seconds=seconds):
        reason = f"expired: no final answer from M-Pesa within {seconds} s"
        with svc.engine.begin() as conn:
            expired = conn.execute(
                payments.update()
                .where(payments.c.id == payment.id, payments.c.status.in_(STK_OPEN_STATES))
                .values(status="failed", result_desc=reason, updated_at=utcnow())
            ).rowcount
            if expired:
                emit_payment_event(conn, payment.id, "payment.failed")
