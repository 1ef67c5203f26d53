"""The old front end's `payment_insert`: after its polling says an STK payment succeeded, it
asks for the payment to be recorded. The service already holds every payment it pushed, so the
call only confirms one (and links it to the user or booking it names where the service has
none): it never creates or completes a payment from the client's word. While the outcome is
open it asks Daraja (STK Query); a claim that contradicts what the service knows is refused and
flagged."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from mpesa_service.context import ApiError, Service
from mpesa_service.flags import add_flag, flags_of
from mpesa_service.parsing import json_amount
from mpesa_service.stk import (
    STK_OPEN_STATES,
    STK_PAID_STATES,
    ask_daraja_about_stk,
)
from mpesa_service.storage import payment_flags, payments, utcnow

REFUSED_FLAG = "client_claim_refused"


@dataclass(frozen=True)
class PaymentClaim:
    """What the client says: which payment (any of its ids) and, optionally, what it was."""

    payment_id: str
    checkout_request_id: str
    receipt: str
    amount: Decimal | None
    user_id: str
    booking_id: str

    @classmethod
    def from_body(cls, body: dict) -> PaymentClaim:
        claim = cls(
            payment_id=_text(body, "payment_id"),
            checkout_request_id=_text(body, "checkout_request_id"),
            # The old `payments` row kept the receipt in transaction_reference.
            receipt=(_text(body, "mpesa_receipt") or _text(body, "transaction_reference")).upper(),
            amount=_claimed_amount(body.get("amount")),
            user_id=_text(body, "user_id"),
            booking_id=_text(body, "booking_id"),
        )
        if not (claim.payment_id or claim.checkout_request_id or claim.receipt):
            raise ApiError(
                400,
                "payment_insert needs the payment's checkout_request_id, mpesa_receipt "
                "(or transaction_reference) or payment_id",
                field="checkout_request_id",
            )
        return claim


def _text(body: dict, name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ApiError(400, f"{name}: must be text, not {value!r}", field=name)
    return str(value).strip()[:255]


def _claimed_amount(value: object) -> Decimal | None:
    """The amount a claim states, compared with the service's, never used to pay: digits (a
    number or a string), or None when it states none."""
    if value is None or value == "":
        return None
    amount = None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        with contextlib.suppress(InvalidOperation):
            amount = Decimal(str(value))
    if amount is None or not amount.is_finite():
        raise ApiError(400, f"amount: must be a number of shillings, not {value!r}", field="amount")
    return amount


def confirm_payment_claim(svc: Service, body: dict) -> tuple[int, dict]:
    """Answer a payment_insert in the old shape: 200 success for a payment M-Pesa confirmed, 202
    pending while it is open, 404 for a payment the service does not hold, 409 for a claim that
    contradicts the service (flagged once per distinct contradiction)."""
    claim = PaymentClaim.from_body(body)
    payment = _claimed_payment(svc, claim)
    if payment.status in STK_OPEN_STATES:
        ask_daraja_about_stk(svc, payment)
        payment = _payment(svc, payment.id)
    contradictions = _contradictions(claim, payment)
    if contradictions:
        detail = "payment_insert claim refused: " + "; ".join(contradictions)
        _flag_once(svc, payment.id, detail)
        return 409, {"status": "error", "message": detail, "data": _view(svc, payment)}
    if payment.status in STK_OPEN_STATES:
        message = f"payment {payment.checkout_request_id} is not confirmed by M-Pesa yet"
        return 202, {"status": "pending", "message": message, "data": _view(svc, payment)}
    payment = _link(svc, payment, claim)
    return 200, {"status": "success", "message": "Payment recorded", "data": _view(svc, payment)}


def _claimed_payment(svc: Service, claim: PaymentClaim):
    """The one payment every id in the claim names; 404 when none does, 409 (flagged) when the
    ids name different payments."""
    matches = {}
    with svc.engine.connect() as conn:
        for column, value in _identifiers(claim):
            for row in conn.execute(sa.select(payments).where(column == value)):
                matches[row.id] = row
    if not matches:
        named = ", ".join(f"{column.name} {value!r}" for column, value in _identifiers(claim))
        raise ApiError(
            404,
            f"no payment with {named}: payment_insert records only payments this service "
            "started (STK Push), it never creates one",
        )
    if len(matches) > 1:
        detail = "payment_insert claim refused: its ids name different payments " + ", ".join(
            sorted(row.checkout_request_id or row.id for row in matches.values())
        )
        for payment_id in matches:
            _flag_once(svc, payment_id, detail)
        raise ApiError(409, detail)
    return next(iter(matches.values()))


def _identifiers(claim: PaymentClaim):
    if claim.payment_id:
        yield payments.c.id, claim.payment_id
    if claim.checkout_request_id:
        yield payments.c.checkout_request_id, claim.checkout_request_id
    if claim.receipt:
        yield payments.c.mpesa_receipt, claim.receipt


def _contradictions(claim: PaymentClaim, payment) -> list[str]:
    """How the claim disagrees with what the service knows. A receipt the service does not hold
    yet is not a contradiction, but it is never taken from the client either."""
    found = []
    if payment.status not in (*STK_OPEN_STATES, *STK_PAID_STATES):
        found.append(
            f"the payment is {payment.status} ({payment.result_code or payment.error_code}: "
            f"{payment.result_desc or payment.error_message})"
        )
    if claim.receipt and payment.mpesa_receipt and claim.receipt != payment.mpesa_receipt:
        found.append(f"receipt {claim.receipt} != {payment.mpesa_receipt}")
    known_amount = payment.paid_amount if payment.paid_amount is not None else payment.amount
    if claim.amount is not None and claim.amount != known_amount:
        found.append(f"amount {claim.amount} != {known_amount}")
    for name in ("user_id", "booking_id"):
        claimed, known = getattr(claim, name), getattr(payment, name)
        if claimed and known and claimed != known:
            found.append(f"{name} {claimed} != {known}")
    return found


def _flag_once(svc: Service, payment_id: str, detail: str) -> None:
    """A client repeating the same claim is one thing to look at, not one per call."""
    with svc.engine.begin() as conn:
        already = conn.execute(
            sa.select(payment_flags.c.id).where(
                payment_flags.c.subject_type == "payment",
                payment_flags.c.subject_id == payment_id,
                payment_flags.c.flag == REFUSED_FLAG,
                payment_flags.c.detail == detail,
            )
        ).first()
        if already is None:
            add_flag(conn, "payment", payment_id, REFUSED_FLAG, detail)


def _link(svc: Service, payment, claim: PaymentClaim):
    """Fill the user and booking the service does not know yet; never overwrite one."""
    values = {
        name: getattr(claim, name)
        for name in ("user_id", "booking_id")
        if getattr(claim, name) and not getattr(payment, name)
    }
    if values:
        with svc.engine.begin() as conn:
            for name, value in values.items():
                column = payments.c[name]
                conn.execute(
                    payments.update()
                    .where(payments.c.id == payment.id, column.is_(None))
                    .values({name: value, "updated_at": utcnow()})
                )
    return _payment(svc, payment.id)


def _payment(svc: Service, payment_id: str):
    with svc.engine.connect() as conn:
        return conn.execute(sa.select(payments).where(payments.c.id == payment_id)).first()


def _view(svc: Service, payment) -> dict:
    """The payment as the old `payments` row and the service see it."""
    with svc.engine.connect() as conn:
        flags = flags_of(conn, "payment", payment.id)
    return {
        "id": payment.id,
        "payment_id": payment.id,
        "checkout_request_id": payment.checkout_request_id,
        "user_id": payment.user_id,
        "booking_id": payment.booking_id,
        "amount": json_amount(payment.amount),
        "paid_amount": json_amount(payment.paid_amount),
        "status": payment.status,
        "method": payment.method,
        "transaction_reference": payment.mpesa_receipt,
        "mpesa_receipt": payment.mpesa_receipt,
        "flags": flags,
    }
