"""Money as integer cents: exact conversions in, readable strings out.

Amounts travel through the DataFrames as int64 cents so every comparison is integer arithmetic;
reports turn them back into Decimal or into "1,000.00" strings.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


def cents_from_value(value: object) -> int | None:
    """Cents of a Decimal, int, float or numeric string ("1,000.50", "KES 20"); None when absent
    or unreadable. Floats go through their shortest repr, so 1000.1 is 100010 cents exactly."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    text = str(value).replace(",", "").replace("KES", "").replace("Ksh", "").strip()
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
