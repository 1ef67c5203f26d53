"""Reading what comes in: tolerant readers of every Daraja callback shape we know, the strict
readers of what a caller sends (an amount, an optional text field), and amounts written back as
JSON. The callback readers never raise; what they cannot read is listed in `problems`, and the raw
body is always kept by the caller."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from mpesa_service.context import ApiError
from recon.codes import is_success, normalise_code
from recon.rules import (
    InvalidValue,
    nairobi_to_utc,
    to_decimal,
    whole_shillings,
)

# Tolerant readers of Daraja's callback shapes (REFERENCE 2.3, 4.4, 6.3, 7.1 and the old audit's
# simplified example). They never raise: what they cannot read is listed in `problems`, and the
# raw body is always kept by the caller.

FAILURE_PLACEHOLDER_RECEIPT = re.compile(r"^[A-Z0-9]{3}0{7}$")
# The widest value each parsed field may have: the columns it is stored in. A longer value is
# not Daraja's and is dropped (the raw body keeps it), never cut short.
STK_FIELD_WIDTHS = {
    "merchant_request_id": 255,
    "checkout_request_id": 255,
    "result_code": 50,
    "receipt": 255,
    "phone": 20,
}
RESULT_FIELD_WIDTHS = {
    "result_type": 10,
    "result_code": 50,
    "originator_conversation_id": 255,
    "conversation_id": 255,
    "transaction_id": 255,
}


@dataclass
class StkCallback:
    """One STK Push callback, read tolerantly."""

    merchant_request_id: str | None = None
    checkout_request_id: str | None = None
    result_code: str | None = None
    result_desc: str | None = None
    amount: Decimal | None = None
    receipt: str | None = None
    phone: str | None = None
    transaction_date: datetime | None = None
    problems: list[str] = field(default_factory=list)


def json_or_problem(raw: str):
    """(the parsed JSON, None), or (None, what is wrong with it)."""
    try:
        return json.loads(raw), None
    except ValueError as error:
        return None, f"body is not JSON ({error.msg})"


@dataclass
class ResultCallback:
    """One `Result` envelope: a B2C result or queue timeout, a Transaction Status result, or an
    Account Balance result. `parameters` holds ResultParameters and ReferenceData items by key,
    with spaces removed from the keys ("Originator Conversation ID" -> OriginatorConversationID).
    It is not changed once parse_result_callback returns it, so the receipt and receiver, read
    several times on the callback path, are worked out once."""

    result_type: str | None = None
    result_code: str | None = None
    result_desc: str | None = None
    originator_conversation_id: str | None = None
    conversation_id: str | None = None
    transaction_id: str | None = None
    parameters: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return is_success(self.result_code)

    @functools.cached_property
    def receipt(self) -> str | None:
        """The M-Pesa receipt, only on success (failures carry a placeholder like TK50000000)."""
        if not self.succeeded:
            return None
        for candidate in (
            self.parameters.get("TransactionReceipt"),
            self.parameters.get("ReceiptNo"),
            self.transaction_id,
        ):
            text = bounded(text_or_none(candidate), 255)
            if text and not FAILURE_PLACEHOLDER_RECEIPT.match(text):
                return text
        return None

    @property
    def amount(self) -> Decimal | None:
        return parse_amount(self.parameters.get("TransactionAmount", self.parameters.get("Amount")))

    @functools.cached_property
    def receiver(self) -> tuple[str | None, str | None]:
        """(phone, name) from "2547... - NAME", split on the first " - "."""
        raw = text_or_none(
            self.parameters.get("ReceiverPartyPublicName", self.parameters.get("CreditPartyName"))
        )
        if not raw:
            return None, None
        phone, _, name = raw.partition(" - ")
        return bounded(phone.strip() or None, 20), bounded(name.strip() or None, 255)

    @property
    def completed_at(self) -> datetime | None:
        return nairobi_to_utc(
            self.parameters.get(
                "TransactionCompletedDateTime", self.parameters.get("FinalisedTime")
            )
        )


def parse_stk_callback(payload: object) -> StkCallback:
    parsed = StkCallback()
    body = _dig(payload, "Body", "stkCallback")
    if not isinstance(body, dict):
        parsed.problems.append("no Body.stkCallback object")
        return parsed
    parsed.merchant_request_id = text_or_none(body.get("MerchantRequestID"))
    parsed.checkout_request_id = text_or_none(body.get("CheckoutRequestID"))
    parsed.result_code = normalise_code(body.get("ResultCode"))
    parsed.result_desc = text_or_none(body.get("ResultDesc"))
    items = _items(_dig(body, "CallbackMetadata", "Item"), "Name")
    parsed.amount = parse_amount(items.get("Amount"))
    parsed.receipt = text_or_none(items.get("MpesaReceiptNumber"))
    parsed.phone = text_or_none(items.get("PhoneNumber"))
    parsed.transaction_date = nairobi_to_utc(items.get("TransactionDate"))
    _fit(parsed, STK_FIELD_WIDTHS)
    if not parsed.checkout_request_id:
        parsed.problems.append("no CheckoutRequestID")
    if parsed.result_code is None:
        parsed.problems.append("no ResultCode")
    return parsed


def parse_result_callback(payload: object) -> ResultCallback:
    parsed = ResultCallback()
    result = _dig(payload, "Result")
    if not isinstance(result, dict):
        parsed.problems.append("no Result object")
        return parsed
    parsed.result_type = normalise_code(result.get("ResultType"))
    parsed.result_code = normalise_code(result.get("ResultCode"))
    parsed.result_desc = text_or_none(result.get("ResultDesc"))
    parsed.originator_conversation_id = text_or_none(result.get("OriginatorConversationID"))
    parsed.conversation_id = text_or_none(result.get("ConversationID"))
    parsed.transaction_id = text_or_none(result.get("TransactionID"))
    parsed.parameters = {
        **_items(_dig(result, "ReferenceData", "ReferenceItem"), "Key"),
        **_items(_dig(result, "ResultParameters", "ResultParameter"), "Key"),
    }
    _fit(parsed, RESULT_FIELD_WIDTHS)
    if parsed.result_code is None:
        parsed.problems.append("no ResultCode")
    if not (parsed.originator_conversation_id or parsed.conversation_id):
        parsed.problems.append("no OriginatorConversationID or ConversationID")
    return parsed


C2B_FIELD_WIDTHS = {
    "trans_id": 255,
    "transaction_type": 50,
    "msisdn": 255,
    "bill_ref_number": 255,
    "invoice_number": 255,
    "business_short_code": 20,
    "first_name": 100,
    "middle_name": 100,
    "last_name": 100,
}
# TransactionType as Daraja writes it (REFERENCE 14), and the pull API's transactiontype, as the
# kind of shortcode paid: a paybill or a till.
C2B_KINDS = {
    "pay bill": "paybill",
    "paybill": "paybill",
    "customerpaybillonline": "paybill",
    "c2b-pay-bill-debit": "paybill",
    "buy goods": "till",
    "buygoods": "till",
    "customerbuygoodsonline": "till",
    "c2b-buy-goods-debit": "till",
}


@dataclass
class C2BPayment:
    """One C2B validation or confirmation (REFERENCE 14), read tolerantly. `msisdn` is kept
    exactly as sent: Daraja masks or hashes it, so it is never read as a phone."""

    trans_id: str | None = None
    transaction_type: str | None = None
    amount: Decimal | None = None
    msisdn: str | None = None
    bill_ref_number: str | None = None
    invoice_number: str | None = None
    business_short_code: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    trans_time: datetime | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        """ "paybill" or "till", from TransactionType; None when it is not one we know."""
        return C2B_KINDS.get((self.transaction_type or "").strip().lower())


def parse_c2b_payload(payload: object) -> C2BPayment:
    parsed = C2BPayment()
    if not isinstance(payload, dict):
        parsed.problems.append("not a JSON object")
        return parsed
    for name, key in C2B_KEYS.items():
        setattr(parsed, name, text_or_none(payload.get(key)))
    parsed.amount = parse_amount(payload.get("TransAmount"))
    parsed.trans_time = nairobi_to_utc(payload.get("TransTime"))
    _fit(parsed, C2B_FIELD_WIDTHS)
    if not parsed.trans_id:
        parsed.problems.append("no TransID")
    if parsed.amount is None:
        parsed.problems.append(f"TransAmount {payload.get('TransAmount')!r} is not an amount")
    return parsed


C2B_KEYS = {
    "trans_id": "TransID",
    "transaction_type": "TransactionType",
    "msisdn": "MSISDN",
    "bill_ref_number": "BillRefNumber",
    "invoice_number": "InvoiceNumber",
    "business_short_code": "BusinessShortCode",
    "first_name": "FirstName",
    "middle_name": "MiddleName",
    "last_name": "LastName",
}


def _fit(parsed, limits: dict[str, int]) -> None:
    for name, limit in limits.items():
        value = getattr(parsed, name)
        if value is not None and len(value) > limit:
            setattr(parsed, name, None)
            parsed.problems.append(f"{name} longer than {limit} characters")


def bounded(value: str | None, limit: int) -> str | None:
    return value if value is None or len(value) <= limit else None


def _dig(value: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _items(value: object, key_name: str) -> dict:
    """[{Key/Name, Value}] (or one such object) as a dict; an item without Value maps to None."""
    entries = value if isinstance(value, list) else [value]
    items = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get(key_name), str):
            items[entry[key_name].replace(" ", "")] = entry.get("Value")
    return items


def text_or_none(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


MONEY_LIMIT = Decimal("1e13")  # what DECIMAL(15,2) holds


def parse_amount(value: object) -> Decimal | None:
    """An amount that fits the money columns exactly (2 places, under 10^13), else None: the
    raw body keeps whatever was sent."""
    try:
        number = to_decimal(value)
    except InvalidValue:
        return None
    if abs(number) >= MONEY_LIMIT or number != number.quantize(Decimal("0.01")):
        return None
    return number


# --- amounts callers ask for -----------------------------------------------------------------


class JsonFraction(float):
    """A JSON number written with a fraction or an exponent: the float json has always given
    for it (so bodies compare and fingerprint as before), which also keeps how it was written.
    str() and repr() give that text, so an amount is read from the text, never the float."""

    def __new__(cls, literal: str):
        number = super().__new__(cls, literal)
        number.literal = literal
        return number

    def __repr__(self) -> str:
        return self.literal

    __str__ = __repr__


def read_json(body: bytes | str):
    """json.loads, keeping how each fractional or exponent number was written (JsonFraction)."""
    return json.loads(body, parse_float=JsonFraction)


PLAIN_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
AMOUNT_FORMS = 'whole shillings in digits (1500, "1500" or 1500.0)'


def requested_shillings(value: object, limits: tuple[int, int], field: str = "amount") -> int:
    """An amount a caller asks for, as int shillings within `limits`. Only unambiguous forms
    are taken: a JSON integer, or digits with an optional fraction as a number or a string
    (150, "150", 150.0); not "1,500", 1e3, booleans or signs. 150.5 is not whole: refused."""
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    is_written = isinstance(value, str | float) and PLAIN_AMOUNT.fullmatch(str(value))
    if not (is_integer or is_written):
        raise InvalidValue(field, f"must be {AMOUNT_FORMS}, not {value!r}")
    return whole_shillings(value, limits, field)


def optional_text(body: dict, name: str, limit: int) -> str | None:
    """A caller's optional text field `name`, stripped: None when absent or empty, a 400 naming
    it when it is not text or longer than `limit` characters."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ApiError(400, f"{name}: must be text", field=name)
    text = str(value).strip()
    if len(text) > limit:
        raise ApiError(400, f"{name}: at most {limit} characters, got {len(text)}", field=name)
    return text


def json_amount(value: Decimal | None):
    """Amounts in JSON: an int when whole, else a string of the exact decimal."""
    if value is None:
        return None
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else str(value)
