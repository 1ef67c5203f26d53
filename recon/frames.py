"""The DataFrames the checks read, in one normalised shape whatever their source.

Rows come in with the database's column names (from the named queries, from CSV exports, or
from plain dicts in tests) and leave with short names, amounts as nullable int64 cents, result
codes as strings ("0", "2001", "SFC_IC0003"), statuses lower-cased, receipts upper-cased
without spaces and times as naive UTC. Legacy rows with only the old PHP columns fill the newer
columns with missing values. A value present in the database that cannot be read (an amount
such as "about 1000", a time such as "yesterday") is not dropped silently: `Frames.unreadable`
lists it, and the `unreadable_value` check reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recon.money import cents_from_value

if TYPE_CHECKING:
    from recon.statement import Statement

# frame column -> database column, per frame; amounts end in _cents, times in _at.
PAYOUT_COLUMNS = {
    "id": "id",
    "user_id": "user_id",
    "phone": "phone_number",
    "amount_cents": "amount",
    "status": "status",
    "reference_id": "reference_id",
    "transaction_id": "transaction_id",
    "reason_code": "reason_code",
    "ocid": "originator_conversation_id",
    "conversation_id": "conversation_id",
    "paid_amount_cents": "paid_amount",
    "initiated_at": "initiated_at",
    "completed_at": "completed_at",
}
ATTEMPT_COLUMNS = {
    "payout_id": "payout_id",
    "ocid": "originator_conversation_id",
    "conversation_id": "conversation_id",
    "receipt": "receipt",
}
RESULT_COLUMNS = {
    "id": "id",
    "transaction_id": "transaction_id",
    "ocid": "originator_conversation_id",
    "conversation_id": "conversation_id",
    "result_code": "result_code",
    "result_code_text": "result_code_text",
    "result_description": "result_description",
    "amount_cents": "transaction_amount",
    "phone": "receiver_phone",
    "reference_id": "reference_id",
    "received_at": "received_at",
    "kind": "kind",
    "payout_id": "payout_id",
}
STK_COLUMNS = {
    "id": "id",
    "user_id": "user_id",
    "phone": "phone_number",
    "amount_cents": "amount",
    "paid_amount_cents": "paid_amount",
    "status": "status",
    "result_code": "result_code",
    "receipt": "receipt",
    "checkout_request_id": "checkout_request_id",
    "created_at": "created_at",
    "completed_at": "completed_at",
    # The receipt of the reversal the service made of it (its refund), if any.
    "reversal_receipt": "reversal_receipt",
}
C2B_COLUMNS = {
    "id": "id",
    "receipt": "trans_id",
    "amount_cents": "amount",
    "msisdn": "msisdn",
    "bill_ref": "bill_ref_number",
    "source": "source",
    "outcome": "outcome",
    "paid_at": "trans_time",
    "received_at": "received_at",
    "confirmed_at": "confirmed_at",
    # Whether C2B_BILL_REF_QUERY found the bill reference (recon.load); missing when not asked.
    "bill_ref_known": "bill_ref_known",
    # The receipt of the reversal the service made of it (its refund), if any.
    "reversal_receipt": "reversal_receipt",
}
LOWERCASE_COLUMNS = ("status", "kind", "source", "outcome")
RECEIPT_COLUMNS = ("transaction_id", "receipt", "reversal_receipt")
UNREADABLE_COLUMNS = ["table", "id", "column", "value"]


@dataclass
class Frames:
    """Everything one reconciliation run looks at. `statement` is None when none was given."""

    payouts: pd.DataFrame
    attempts: pd.DataFrame
    results: pd.DataFrame
    stk: pd.DataFrame
    statement: Statement | None = None
    c2b: pd.DataFrame = field(default_factory=lambda: normalise(None, C2B_COLUMNS))
    unreadable: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=UNREADABLE_COLUMNS), compare=False
    )

    @classmethod
    def from_database_frames(
        cls,
        *,
        payouts: pd.DataFrame | None = None,
        attempts: pd.DataFrame | None = None,
        results: pd.DataFrame | None = None,
        stk: pd.DataFrame | None = None,
        statement: Statement | None = None,
        c2b: pd.DataFrame | None = None,
    ) -> Frames:
        """Frames from DataFrames with the database's column names (missing columns allowed)."""
        frames = cls(
            payouts=normalise(payouts, PAYOUT_COLUMNS),
            attempts=normalise(attempts, ATTEMPT_COLUMNS),
            results=normalise_results(results),
            stk=normalise(stk, STK_COLUMNS),
            statement=statement,
            c2b=normalise(c2b, C2B_COLUMNS),
        )
        frames.unreadable = pd.concat(
            [
                unreadable_values("b2c_payments", payouts, frames.payouts, PAYOUT_COLUMNS),
                unreadable_values("b2c_payment_callbacks", results, frames.results, RESULT_COLUMNS),
                unreadable_values("payments", stk, frames.stk, STK_COLUMNS),
                unreadable_values("c2b_payments", c2b, frames.c2b, C2B_COLUMNS),
            ],
            ignore_index=True,
        )
        return frames

    @classmethod
    def from_records(
        cls,
        *,
        payouts: list[dict] = (),
        attempts: list[dict] = (),
        results: list[dict] = (),
        stk: list[dict] = (),
        statement: Statement | None = None,
        c2b: list[dict] = (),
    ) -> Frames:
        """Frames from plain row dicts keyed by database column names (tests, notebooks)."""
        return cls.from_database_frames(
            payouts=pd.DataFrame(list(payouts)),
            attempts=pd.DataFrame(list(attempts)),
            results=pd.DataFrame(list(results)),
            stk=pd.DataFrame(list(stk)),
            statement=statement,
            c2b=pd.DataFrame(list(c2b)),
        )


def normalise(raw: pd.DataFrame | None, columns: dict[str, str]) -> pd.DataFrame:
    """Rename to frame names, add missing columns, and convert each by its suffix."""
    raw = pd.DataFrame() if raw is None else raw
    converted = {}
    for name, source in columns.items():
        values = raw[source] if source in raw.columns else pd.Series([None] * len(raw))
        converted[name] = _convert(name, values.reset_index(drop=True))
    return pd.DataFrame(converted, index=pd.RangeIndex(len(raw)))


def normalise_results(raw: pd.DataFrame | None) -> pd.DataFrame:
    """Results with one `result_code` (the text column when present, else the old INT) and
    `kind` 'result' for legacy rows."""
    frame = normalise(raw, RESULT_COLUMNS)
    frame["result_code"] = frame["result_code_text"].fillna(frame["result_code"])
    frame["kind"] = frame["kind"].fillna("result")
    return frame.drop(columns="result_code_text")


def unreadable_values(
    table: str, raw: pd.DataFrame | None, frame: pd.DataFrame, columns: dict[str, str]
) -> pd.DataFrame:
    """(table, id, column, value) for each amount or time that `raw` holds and `frame` could
    not read."""
    found = []
    if raw is None or raw.empty:
        return pd.DataFrame(columns=UNREADABLE_COLUMNS)
    for name, source in columns.items():
        if source not in raw.columns or not name.endswith(("_cents", "_at")):
            continue
        values = raw[source].reset_index(drop=True)
        present = values.notna().to_numpy() & (values.astype("str").str.strip() != "").to_numpy()
        lost = np.flatnonzero(present & frame[name].isna().to_numpy())
        for row in lost:
            found.append((table, frame["id"].iloc[row], source, str(values.iloc[row])))
    return pd.DataFrame(found, columns=UNREADABLE_COLUMNS)


def _convert(name: str, values: pd.Series) -> pd.Series:
    if name == "bill_ref_known":
        return values.astype("boolean")
    if name in RECEIPT_COLUMNS:
        return receipt_series(values)
    if name.endswith("_cents"):
        return cents_series(values)
    if name.endswith("_at"):
        return utc_times(values)
    if name.endswith("code") or name.endswith("code_text"):
        return code_series(values)
    text = text_series(values)
    return text.str.lower() if name in LOWERCASE_COLUMNS else text


def cents_series(values: pd.Series) -> pd.Series:
    """Nullable int64 cents. Numeric columns are scaled and rounded (exact for amounts with at
    most two decimals well below 2**53 cents); others go through Decimal one by one."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return (values.astype("float64") * 100).round().astype("Int64")
    return pd.array([cents_from_value(value) for value in values], dtype="Int64")


def utc_times(values: pd.Series) -> pd.Series:
    """Naive UTC datetimes (the database's convention); aware values are converted."""
    if pd.api.types.is_datetime64_any_dtype(values):
        times = values
    else:
        cleaned = values.where(values.notna() & (values.astype("str").str.strip() != ""), None)
        times = pd.to_datetime(cleaned, format="ISO8601", errors="coerce", utc=True)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times.astype("datetime64[us]")


def code_series(values: pd.Series) -> pd.Series:
    """Result codes as strings: 0 / 0.0 / '0' all become '0'; blanks become missing."""
    text = text_series(values)
    return text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)


def receipt_series(values: pd.Series) -> pd.Series:
    """M-Pesa receipts as the statement prints them: upper case, no spaces ("tk5ay9 dlmg" is
    TK5AY9DLMG); None and blank become missing."""
    text = values.astype("str").where(values.notna())
    text = text.str.replace(r"\s+", "", regex=True).str.upper()
    return text.where(text != "")


def text_series(values: pd.Series) -> pd.Series:
    """Strings with surrounding blanks removed; None and blank become missing."""
    text = values.astype("str").where(values.notna())
    text = text.str.strip()
    return text.where(text != "")
