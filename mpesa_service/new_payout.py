"""The console's "New payout" form: what an operator typed is checked and shown back (masked
phone, the amount in words, the name M-Pesa gave for that phone last time) before anything is
sent, then sent through the same path as POST /payouts. Each form carries its own
idempotency key, so a double click, a resubmitted page or a second tab sends one payout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from mpesa_service.context import Service
from mpesa_service.payouts import Maker, PayoutRequest, initiate_payout, payout_phone
from mpesa_service.storage import b2c_payments

FIELDS = ("user_id", "phone", "amount", "reason", "description")


@dataclass(frozen=True)
class Draft:
    """A payout checked but not sent: the body POST /payouts would take, and what the
    confirmation step shows of it."""

    body: dict
    key: str
    request: PayoutRequest
    recipient: str | None

    @property
    def amount_in_words(self) -> str:
        return f"{number_in_words(self.request.amount)} shillings"


def new_form_key() -> str:
    return f"console-{uuid.uuid4()}"


def form_body(form) -> dict:
    """The fields of POST /payouts from the form, as typed (trimmed); empty ones left out."""
    typed = {name: (form.getunicode(name) or "").strip() for name in FIELDS}
    return {name: value for name, value in typed.items() if value}


def check_draft(svc: Service, body: dict, key: str) -> Draft:
    """The payout the form describes, checked as POST /payouts checks it (ApiError naming
    the field otherwise); nothing is written or sent."""
    request = PayoutRequest.from_body(body, payout_phone(svc, body))
    return Draft(body, key, request, last_recipient_name(svc, request.phone))


def send_draft(svc: Service, body: dict, key: str, operator: str) -> tuple[int, dict]:
    """Send the confirmed payout once per form key: (201, payout) the first time, (200, the
    same payout) for any repeat; above APPROVAL_ABOVE it waits for another operator's
    approval. The audit trail names the operator, and the payout the operator's key."""
    return initiate_payout(svc, body, key, Maker(operator, "console"))


def last_recipient_name(svc: Service, phone: str) -> str | None:
    """The registered name M-Pesa stated for this phone in its latest completed payout."""
    with svc.engine.connect() as conn:
        return conn.execute(
            sa.select(b2c_payments.c.receiver_name)
            .where(b2c_payments.c.phone_number == phone)
            .where(b2c_payments.c.status == "completed")
            .where(b2c_payments.c.receiver_name.is_not(None))
            .order_by(b2c_payments.c.completed_at.desc())
            .limit(1)
        ).scalar()


ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
)
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_in_words(number: int) -> str:
    """A whole number in English words, as a person reads a sum aloud: 1500 -> "one thousand
    five hundred", 2021 -> "two thousand and twenty-one"."""
    if number < 0:
        raise ValueError(f"not a whole amount: {number}")
    if number == 0:
        return ONES[0]
    words = []
    for scale, name in SCALES:
        if number >= scale:
            words.append(f"{_under_a_thousand(number // scale)} {name}")
            number %= scale
    if number:
        rest = _under_a_thousand(number)
        words.append(f"and {rest}" if words and number < 100 else rest)
    return " ".join(words)


def _under_a_thousand(number: int) -> str:
    hundreds, rest = divmod(number, 100)
    words = [f"{ONES[hundreds]} hundred"] if hundreds else []
    if rest:
        if hundreds:
            words.append("and")
        words.append(_under_a_hundred(rest))
    return " ".join(words)


def _under_a_hundred(number: int) -> str:
    if number < 20:
        return ONES[number]
    tens, ones = divmod(number, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")
