"""Money as integer cents: exact conversions in, readable strings out.

Amounts travel through the DataFrames as int64 cents so every comparison is integer arithmetic;
reports turn them back into Decimal or into "1,000.00" strings.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
# What may surround or separate the digits of an amount the old system or a person wrote:
# a currency word before or after ("KES", "KSh", "Kshs."), and thousands separators (commas,
# spaces, no-break or thin spaces) between groups of three digits. Anything else makes the
# value unreadable: "10 20" is not a thousand and twenty.
CURRENCY = re.compile(r"^(?:kshs?\.?|kes)\s*|\s*(?:kshs?\.?|kes)$", re.IGNORECASE)
GROUPED = re.compile(r"^[-+]?\d{1,3}(?:[,\s\u00a0\u2009\u202f]\d{3})+(?:\.\d*)?$")
SEPARATORS = re.compile(r"[,\s\u00a0\u2009\u202f]")


def cents_from_value(value: object) -> int | None:
    """Cents of a Decimal, int, float or numeric string ("1,000.50", "KSh 1 000.00", "kes 20");
    None when absent or unreadable. Floats go through their shortest repr, so 1000.1 is 100010
    cents exactly."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    text = CURRENCY.sub("", str(value).strip())
    if GROUPED.match(text):
        text = SEPARATORS.sub("", text)
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return int(number.quantize(CENT, rounding=ROUND_HALF_UP).scaleb(2))


def decimal_from_cents(cents: object) -> Decimal | None:
    """The amount as a two-place Decimal, or None for a missing value."""
    if cents is None or _is_missing(cents):
        return None
    return Decimal(int(cents)).scaleb(-2).quantize(CENT)


def format_cents(cents: object) -> str:
    """'1,000.00' style with thousands separators; '-' for a missing amount."""
    if cents is None or _is_missing(cents):
        return "-"
    cents = int(cents)
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"


def _is_missing(value: object) -> bool:
    try:
        return bool(value != value) or str(value) == "<NA>"
    except TypeError:  # pd.NA refuses truthiness
        return True
