"""Rules for money, phones and times shared by the service and reconciliation.

Money is whole shillings (int) on the way out and Decimal on the way in; a fractional amount is
rejected, never rounded. Phones are Kenyan mobiles as Daraja wants them (2547XXXXXXXX or
2541XXXXXXXX). Daraja's times are Africa/Nairobi; we store naive UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import phonenumbers

NAIROBI = ZoneInfo("Africa/Nairobi")
STK_LIMITS = (1, 250_000)
B2C_LIMITS = (10, 250_000)
DARAJA_TIME_FORMATS = ("%Y%m%d%H%M%S", "%d.%m.%Y %H:%M:%S")
# REFERENCE 9.5: words Daraja rejects in a callback URL, in any case ("exec" contains "exe").
REJECTED_URL_WORDS = ("m-pesa", "mpesa", "safaricom", "exe", "cmd", "sql", "query")
# Pull Transactions keeps this many hours of C2B transactions (REFERENCE 12.3).
PULL_TRANSACTIONS_HOURS = 48

# How a B2C result (a callback, a status answer, a recon row) finds its payout: the first of
# these keys that names one wins. The receipt is last because it is the only one two payouts
# can share (a duplicate receipt); the ids before it name exactly one.
PAYOUT_MATCH_ORDER = ("originator_conversation_id", "conversation_id", "reference_id", "receipt")


class InvalidValue(ValueError):
    """A value that cannot be used; `field` names it and the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def to_decimal(value: object, field: str = "amount") -> Decimal:
    """A Decimal from a JSON number or string (thousands separators allowed); never via float
    arithmetic: 10.1 becomes Decimal('10.1'), not 10.0999…"""
    if isinstance(value, bool) or value is None:
        raise InvalidValue(field, f"must be a number, not {value!r}")
    text = str(value).replace(",", "").strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidValue(field, f"must be a number, not {value!r}") from None
    if not number.is_finite():
        raise InvalidValue(field, f"must be a finite number, not {value!r}")
    return number


def whole_shillings(value: object, limits: tuple[int, int], field: str = "amount") -> int:
    """The amount as an int of shillings within `limits`; 150.5 is an error, not 150."""
    number = to_decimal(value, field)
    if number != number.to_integral_value():
        raise InvalidValue(field, f"must be whole shillings, not {value!r}")
    low, high = limits
    if not low <= number <= high:
        raise InvalidValue(field, f"must be between {low:,} and {high:,} shillings, not {value!r}")
    return int(number)


def mpesa_phone(value: object, field: str = "phone") -> str:
    """A Kenyan mobile as 2547XXXXXXXX / 2541XXXXXXXX, from 07…, 01…, +254…, 254… forms."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InvalidValue(field, f"must be a phone number, not {value!r}")
    text = str(value).strip()
    if text.isdigit() and text.startswith("254"):
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, "KE")
    except phonenumbers.NumberParseException:
        raise InvalidValue(field, f"not a phone number: {value!r}") from None
    national = str(parsed.national_number)
    is_mobile = phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE
    if parsed.country_code != 254 or len(national) != 9 or national[0] not in "17" or not is_mobile:
        raise InvalidValue(field, f"not a Kenyan mobile number: {value!r}")
    return f"254{national}"


def nairobi_to_utc(value: object) -> datetime | None:
    """A Daraja time (YYYYMMDDHHmmss number or string, or dd.MM.yyyy HH:mm:ss) read as
    Africa/Nairobi and returned as naive UTC; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if text.endswith(".0"):
        text = text[:-2]
    # Only digits can fit the first layout, and never the second: try just the one that may fit.
    layout = DARAJA_TIME_FORMATS[0] if text.isdigit() else DARAJA_TIME_FORMATS[1]
    try:
        local = datetime.strptime(text, layout).replace(tzinfo=NAIROBI)
    except ValueError:
        return None
    return local.astimezone(UTC).replace(tzinfo=None)


def iso_time_to_utc(text: str) -> datetime:
    """ISO 8601 ('2025-11-05', '2025-11-05T14:00', '...+03:00', '...Z') as naive UTC. A date or
    time without an offset is Africa/Nairobi, the statement's and the business's clock: the
    day '2025-11-05' starts at 00:00 in Nairobi, 21:00 UTC the day before. ValueError if it is
    not ISO 8601."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=NAIROBI)
    return moment.astimezone(UTC).replace(tzinfo=None)


def nairobi_day_start_utc(moment: datetime | None = None) -> datetime:
    """The start of the Nairobi day `moment` (default now) falls in, as naive UTC: the day
    payout limits count and the scheduled reconciliation covers."""
    local = (moment or datetime.now(UTC)).astimezone(NAIROBI)
    local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.astimezone(UTC).replace(tzinfo=None)


def nairobi_timestamp(moment: datetime | None = None) -> str:
    """Daraja's 14-digit YYYYMMDDHHmmss timestamp in Africa/Nairobi time."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def shillings_text(value: Decimal | int | None) -> str:
    """1,000.00; '?' when there is no amount."""
    return "?" if value is None else f"{Decimal(value):,.2f}"


def amount_difference(requested: Decimal | int, paid: Decimal | int) -> str:
    """'requested 1,000.00 != paid 100.00 (900.00 short)', or '(50.00 over)' when more was
    paid: the one wording of an amount that differs, in flags, findings and reports."""
    return (
        f"requested {shillings_text(requested)} != paid {shillings_text(paid)} "
        f"({amount_gap(requested, paid)})"
    )


def amount_gap(expected: Decimal | int, actual: Decimal | int) -> str:
    """'900.00 short' / '50.00 over': how far `actual` is from `expected`."""
    gap = Decimal(actual) - Decimal(expected)
    return f"{shillings_text(abs(gap))} {'over' if gap > 0 else 'short'}"
