"""The M-Pesa result-code catalogue: code -> meaning, and whether a failure may be retried.

One place for the service (which flags and retries) and for reconciliation (which explains
failed results). Codes are strings: Daraja sends numbers, strings and codes like SFC_IC0003.
Meanings follow REFERENCE sections 3.1 and 4.6.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ResultCode:
    code: str
    meaning: str
    retryable: bool = False


def _catalogue(*codes: ResultCode) -> dict[str, ResultCode]:
    return {entry.code: entry for entry in codes}


STK_CODES = _catalogue(
    ResultCode("0", "paid"),
    ResultCode("1", "customer balance insufficient"),
    ResultCode("2", "amount below the minimum"),
    ResultCode("3", "amount above the per-transaction maximum"),
    ResultCode("4", "would exceed the customer's daily limit"),
    ResultCode("8", "would exceed the receiving account's maximum balance"),
    ResultCode("17", "rule limited: same amount to the same customer within about 2 minutes"),
    ResultCode("26", "system busy", retryable=True),
    ResultCode("1001", "subscriber busy with another transaction", retryable=True),
    ResultCode("1019", "transaction expired before the customer answered"),
    ResultCode("1025", "error sending the push request (prompt too long)"),
    ResultCode("1032", "cancelled by the customer"),
    ResultCode("1037", "customer's phone could not be reached"),
    ResultCode("2001", "wrong PIN entered"),
    ResultCode(
        "2028", "not permitted by product assignment (TransactionType and PartyB do not fit)"
    ),
    ResultCode("8006", "customer's security credential locked"),
    ResultCode("9999", "error sending the push request", retryable=True),
    ResultCode("SFC_IC0003", "operator does not exist (wrong TransactionType or PartyB)"),
)

B2C_CODES = _catalogue(
    ResultCode("0", "paid"),
    ResultCode("1", "insufficient balance in the B2C utility account"),
    ResultCode("2", "amount below the B2C minimum"),
    ResultCode("3", "amount above the B2C maximum"),
    ResultCode("4", "would exceed the daily transfer limit"),
    ResultCode("8", "would exceed the customer's maximum balance"),
    ResultCode("11", "B2C account not active"),
    ResultCode("15", "duplicate OriginatorConversationID"),
    ResultCode("17", "M-Pesa internal failure", retryable=True),
    ResultCode("18", "initiator credential check failed"),
    ResultCode("20", "unresolved initiator"),
    ResultCode("21", "initiator not allowed to initiate this request"),
    ResultCode("22", "initiator not active or not permitted for the receiver"),
    ResultCode("24", "missing mandatory fields"),
    ResultCode("25", "invalid request parameters"),
    ResultCode("26", "system busy (traffic blocking)", retryable=True),
    ResultCode("29", "invalid CommandID"),
    ResultCode("2001", "initiator information invalid (username, password or certificate)"),
    ResultCode("2006", "account status does not allow this transaction"),
    ResultCode("2028", "short code not permitted to do B2C"),
    ResultCode("2040", "recipient is not a registered M-Pesa customer"),
    ResultCode("8006", "API user's security credential locked"),
    ResultCode("SFC_IC0003", "recipient phone number does not exist"),
)

# Reversal result codes (REFERENCE 7.2).
REVERSAL_CODES = _catalogue(
    ResultCode("0", "reversed"),
    ResultCode("R000001", "the transaction was already reversed"),
    ResultCode("R000002", "the original transaction id (receipt) is invalid"),
    ResultCode("1", "insufficient balance to reverse"),
    ResultCode("11", "account not active"),
    ResultCode("21", "initiator not allowed to reverse (needs the Org Reversals Initiator role)"),
    ResultCode("2001", "initiator information invalid (username, password or certificate)"),
    ResultCode("2006", "account status does not allow this transaction"),
    ResultCode("2028", "not permitted by product assignment"),
    ResultCode("8006", "API user's security credential locked"),
)

CATALOGUES = {"stk": STK_CODES, "b2c": B2C_CODES, "reversal": REVERSAL_CODES}


def normalise_code(code: object) -> str | None:
    """Daraja's code as a string ("0", "1032", "SFC_IC0003"); None when absent."""
    if code is None:
        return None
    text = str(code).strip()
    if text.endswith(".0") and ASCII_DIGITS.fullmatch(text[:-2]):
        text = text[:-2]
    return text or None


ASCII_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit, which also takes "²"


def integer_code(code: str | None) -> int | None:
    """A code as the old INT column holds it ("2001" -> 2001); None for codes that are not a
    number of at most nine ASCII digits ("SFC_IC0003", "²")."""
    if code is None or not ASCII_DIGITS.fullmatch(code) or len(code) > 9:
        return None
    return int(code)


def lookup(code: object, product: str) -> ResultCode | None:
    normalised = normalise_code(code)
    return CATALOGUES[product].get(normalised) if normalised is not None else None


def meaning(code: object, product: str) -> str:
    """A sentence-fragment meaning for a code, or 'unknown result code X'."""
    entry = lookup(code, product)
    return entry.meaning if entry else f"unknown result code {normalise_code(code)}"


def is_success(code: object) -> bool:
    return normalise_code(code) == "0"


def default_retryable(product: str) -> frozenset[str]:
    """Codes whose failure proves no money moved and is worth a new attempt by default."""
    return frozenset(code for code, entry in CATALOGUES[product].items() if entry.retryable)
