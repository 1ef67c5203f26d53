"""The reconciliation checks: pure functions of the Frames, one registry, one runner.

Each check is `check_<name>(frames, *, options) -> DataFrame` with FINDING_COLUMNS, one row per
finding and an empty frame when clean; none raises on bad data. `check` values are the fixed
vocabulary in CHECK_NAMES. Reasons are one fixed phrase per kind naming expected, actual and the
direction ("amount mismatch: requested 1,000.00 != paid 100.00 (900.00 short)").

How results find their payouts, and our records the statement's rows, is recon.matching's;
the checks read it from MatchedFrames, which run_checks builds once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from recon.charges import UNKNOWN, expected_charges, totals_per_day
from recon.codes import meaning
from recon.frames import Frames
from recon.matching import (
    COMPLETED_STATUSES,
    MatchedFrames,
    collection_references,
    lookup_values,
    pointing_at,
)
from recon.money import decimal_from_cents, format_cents
from recon.rules import amount_difference, amount_gap
from recon.statement import ROLE_REVERSAL, customer_initiated
from recon.tariff import Tariff, shipped_tariff

FINDING_COLUMNS = [
    "check",
    "subject",
    "reference_id",
    "payout_id",
    "payment_id",
    "transaction_id",
    "phone",
    "result_code",
    "occurred_at",
    "age_hours",
    "expected_amount",
    "actual_amount",
    "at_risk",
    "reason",
]
FAILED_STATUSES = frozenset({"failed"})
# `submitting` too: a payout left mid-send (the process died) is as open as one awaiting its result.
OPEN_STATUSES = frozenset({"submitting", "pending", "unknown"})


@dataclass(frozen=True)
class Options:
    """Parameters of one run. Tolerances are explicit and default to zero."""

    as_of: datetime | None = None  # naive UTC; None means now
    stale_after_minutes: int = 30
    double_payout_window_hours: float = 24
    amount_tolerance_cents: int = 0
    since: datetime | None = None  # the period checked, naive UTC; None means unbounded
    until: datetime | None = None
    tariff: Tariff | None = None  # B2C charges; None means the shipped tariff

    @property
    def b2c_tariff(self) -> Tariff:
        return self.tariff or shipped_tariff()

    @property
    def now(self) -> pd.Timestamp:
        moment = self.as_of or datetime.now(UTC).replace(tzinfo=None)
        return pd.Timestamp(moment)


@dataclass
class Findings:
    """Every finding of one run, the checks that ran, and how much matched."""

    frame: pd.DataFrame
    checks: tuple[str, ...]
    match: dict[str, tuple[int, int]] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)  # what was checked and what was not
    traffic: dict[str, int] = field(default_factory=dict)  # what was looked at (see traffic)
    charges: pd.DataFrame | None = None  # per Nairobi day, see charge_totals; None: no statement

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def is_clean(self) -> bool:
        return self.frame.empty

    def of(self, check: str) -> pd.DataFrame:
        return self.frame[self.frame["check"] == check]

    def counts(self) -> dict[str, int]:
        counted = self.frame["check"].value_counts()
        return {name: int(counted.get(name, 0)) for name in self.checks}

    def summary(self) -> pd.DataFrame:
        """Per check in vocabulary order: count and KES at risk (Decimal; None for a check
        that moves no money, see AT_RISK)."""
        rows = []
        for name in self.checks:
            found = self.of(name)
            at_risk = sum((value for value in found["at_risk"] if value is not None), Decimal(0))
            valued = AT_RISK.get(name) is not None
            rows.append(
                {
                    "check": name,
                    "count": len(found),
                    "kes_at_risk": _two(at_risk) if valued else None,
                }
            )
        return pd.DataFrame(rows, columns=["check", "count", "kes_at_risk"])


# -- statement rows -----------------------------------------------------------------------------


def statement_row_findings(
    check: str, rows: pd.DataFrame, reasons: list[str], options: Options
) -> pd.DataFrame:
    """Findings about statement rows (with `amount_cents`), each putting its amount at risk."""
    return make_findings(
        check,
        rows,
        options=options,
        subject=statement_lines(rows),
        reasons=reasons,
        transaction_id=rows["receipt"],
        occurred_at=rows["completed_at"],
        actual_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"],
    )


def statement_lines(rows: pd.DataFrame) -> pd.Series:
    """'statement line 12' per statement row; 'statement b.csv line 12' when several files
    were read together."""
    lines = rows["line"].astype("str")
    if "file" not in rows.columns:
        return "statement line " + lines
    return "statement " + rows["file"] + " line " + lines


def in_period(rows: pd.DataFrame, options: Options) -> pd.DataFrame:
    """Statement rows completed inside the period checked."""
    if options.since is not None:
        rows = rows[rows["completed_at"] >= pd.Timestamp(options.since)]
    if options.until is not None:
        rows = rows[rows["completed_at"] < pd.Timestamp(options.until)]
    return rows


# -- naming what a finding is about -------------------------------------------------------------
#
# A finding names a payout by its reference_id (what GET /payouts/<reference_id> and the console
# take) and a collection by its CheckoutRequestID, else its receipt; the internal ids (the
# primary keys of b2c_payments and payments) go in payout_id / payment_id only.


def record_keys(kinds: pd.Series | str, references: pd.Series, ids: pd.Series) -> dict:
    """make_findings' `subject`, `reference_id`, `payout_id` and `payment_id` for records of
    `kinds` ('payout' or 'payment', one for all or one per row). A record without a reference
    is named by its internal id ('payout id p01') so that the finding still says which."""
    if isinstance(kinds, str):
        kinds = pd.Series(kinds, index=ids.index, dtype="str")
    shown = references.fillna("id " + ids.astype("str"))
    is_payout = (kinds == "payout").to_numpy()
    return {
        "subject": kinds + " " + shown,
        "reference_id": references,
        "payout_id": ids.where(is_payout),
        "payment_id": ids.where((kinds == "payment").to_numpy()),
    }


def named(kind: str, reference: object, id_: object) -> str:
    """One record's name as record_keys gives it, for a reason naming another record."""
    return f"{kind} {reference}" if isinstance(reference, str) else f"{kind} id {id_}"


# -- building findings --------------------------------------------------------------------------


def empty_findings() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in FINDING_COLUMNS})


def make_findings(
    check: str,
    rows: pd.DataFrame,
    *,
    options: Options,
    subject: pd.Series,
    reasons: list[str],
    reference_id: pd.Series | None = None,
    payout_id: pd.Series | None = None,
    payment_id: pd.Series | None = None,
    transaction_id: pd.Series | None = None,
    phone: pd.Series | None = None,
    result_code: pd.Series | None = None,
    occurred_at: pd.Series | None = None,
    expected_cents: pd.Series | None = None,
    actual_cents: pd.Series | None = None,
    at_risk_cents: pd.Series | None = None,
) -> pd.DataFrame:
    """The fixed-column frame for `rows`; each keyword is a Series aligned with `rows`."""
    if rows.empty:
        return empty_findings()

    def column(values):
        if values is None:
            return [None] * len(rows)
        missing = pd.isna(values).tolist()
        if isinstance(values.dtype, pd.StringDtype):  # the same str objects, without a
            values = values.to_numpy()  # Python call per element
        return [None if absent else value for value, absent in zip(values, missing, strict=True)]

    def amounts(values):
        return [decimal_from_cents(value) for value in column(values)]

    if occurred_at is None:
        times = pd.Series(pd.NaT, dtype="datetime64[us]", index=rows.index)
    else:
        times = pd.Series(occurred_at.to_numpy(), index=rows.index).astype("datetime64[us]")
    age = ((options.now - times).dt.total_seconds() / 3600).round(1)
    return pd.DataFrame(
        {
            "check": check,
            "subject": column(subject),
            "reference_id": column(reference_id),
            "payout_id": column(payout_id),
            "payment_id": column(payment_id),
            "transaction_id": column(transaction_id),
            "phone": column(phone),
            "result_code": column(result_code),
            "occurred_at": column(times),
            "age_hours": column(age),
            "expected_amount": amounts(expected_cents),
            "actual_amount": amounts(actual_cents),
            "at_risk": amounts(at_risk_cents),
            "reason": reasons,
        },
        index=rows.index,
    ).reset_index(drop=True)


@dataclass(frozen=True)
class RecordRows:
    """Where a check's rows keep what every finding about their record shows: the columns
    naming it (record_keys), its phone and the amount asked for (the expected amount), and,
    when the rows have them, its receipt and time. A check adds only what is particular to it."""

    kind: str | None  # 'payout' or 'payment'; None: each row's `kind` column says
    reference: str
    id: str = "id"
    phone: str = "phone"
    expected: str = "amount_cents"
    receipt: str | None = None
    occurred_at: str | None = None

    def keys(self, rows: pd.DataFrame) -> dict:
        """record_keys of the rows."""
        kinds = rows["kind"] if self.kind is None else self.kind
        return record_keys(kinds, rows[self.reference], rows[self.id])

    def findings(
        self, check: str, rows: pd.DataFrame, reasons: list[str], options: Options, **values
    ) -> pd.DataFrame:
        """make_findings for `rows`; `values` (make_findings' keywords) adds or overrides."""
        shown = {"phone": rows[self.phone], "expected_cents": rows[self.expected]}
        if self.receipt is not None:
            shown["transaction_id"] = rows[self.receipt]
        if self.occurred_at is not None:
            shown["occurred_at"] = rows[self.occurred_at]
        return make_findings(
            check, rows, options=options, reasons=reasons, **self.keys(rows), **shown | values
        )


PAYOUTS = RecordRows("payout", reference="reference_id")
# matched_results rows: the payout each result matched.
MATCHED_PAYOUTS = RecordRows(
    "payout",
    reference="payout_reference_id",
    id="payout_ref",
    phone="payout_phone",
    expected="payout_amount_cents",
)
# STK collection rows given their `reference` (collection_references).
COLLECTIONS = RecordRows("payment", reference="reference", receipt="receipt")
# our_records rows: payouts and collections mixed.
OUR_RECORDS = RecordRows(None, reference="reference", receipt="receipt", occurred_at="occurred_at")


def amount_reasons(kind: str, requested: pd.Series, paid: pd.Series) -> list[str]:
    """'<kind>: requested 1,000.00 != paid 100.00 (900.00 short)' per row, in cents."""
    return [
        f"{kind}: {amount_difference(decimal_from_cents(want), decimal_from_cents(got))}"
        for want, got in zip(requested, paid, strict=True)
    ]


def _answers(results: pd.DataFrame) -> np.ndarray:
    """Matched results that answer their payout (not timeouts, not status answers)."""
    return (results["payout_ref"].notna() & (results["kind"] == "result")).to_numpy()


def _age_text(hours: float) -> str:
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _code_meaning(code: object) -> str:
    return meaning(code, "b2c")


# -- the checks ---------------------------------------------------------------------------------


def check_amount_mismatch(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Successful B2C results whose amount differs from their payout's amount."""
    results = MatchedFrames.of(frames).matched_results
    gap = (results["amount_cents"] - results["payout_amount_cents"]).abs()
    differs = results["is_success"] & (gap > options.amount_tolerance_cents).fillna(False)
    rows = results[differs.to_numpy()]
    reasons = amount_reasons("amount mismatch", rows["payout_amount_cents"], rows["amount_cents"])
    return MATCHED_PAYOUTS.findings(
        "amount_mismatch",
        rows,
        reasons,
        options,
        transaction_id=rows["transaction_id"],
        result_code=rows["result_code"],
        occurred_at=rows["received_at"],
        actual_cents=rows["amount_cents"],
        at_risk_cents=(rows["amount_cents"] - rows["payout_amount_cents"]).abs(),
    )


def check_orphan_callback(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Results (of any kind) that match no payout by any key."""
    results = MatchedFrames.of(frames).matched_results
    rows = results[results["payout_ref"].isna()]
    keys = rows["ocid"].fillna(rows["conversation_id"]).fillna(rows["reference_id"])
    reasons = [
        f"orphan callback: expected 1 matching payout for {key if isinstance(key, str) else '-'} "
        f"!= 0 found ({format_cents(amount if success else 0)} unaccounted)"
        for key, amount, success in zip(
            keys, rows["amount_cents"].fillna(0), rows["is_success"], strict=True
        )
    ]
    return make_findings(
        "orphan_callback",
        rows,
        options=options,
        subject="result " + rows["id"].fillna("?"),
        reasons=reasons,
        transaction_id=rows["transaction_id"].where(rows["is_success"]),
        phone=rows["phone"],
        result_code=rows["result_code"],
        occurred_at=rows["received_at"],
        actual_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"].where(rows["is_success"], 0),
    )


def check_failed_result(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts whose latest result (or, with none, whose legacy reason_code) is not 0, and that
    nothing states paid: an earlier attempt's failure arriving late does not fail a payout a
    result proves paid (and a payout marked failed although paid is status_conflict's)."""
    matched = MatchedFrames.of(frames)
    results = matched.matched_results
    answers = _answers(results)
    answer_to = results["payout_pos"].to_numpy()
    failing = (
        answers & ~results["is_success"].to_numpy() & results["result_code"].notna().to_numpy()
    )
    # Only payouts with a failed answer can have a failed latest answer: sort those few.
    failed_once = pointing_at(answer_to, answer_to[failing], len(frames.payouts))
    latest = results[answers & failed_once]
    latest = latest.sort_values("received_at", kind="stable", na_position="first")
    latest = latest.drop_duplicates("payout_ref", keep="last").set_index("payout_ref")
    latest = latest[~latest["is_success"]]
    payouts = frames.payouts
    answered = matched.payouts_at(answer_to[answers])
    unpaid = ~matched.proven_paid
    by_answer = payouts[matched.payouts_at(latest["payout_pos"].to_numpy()) & unpaid]
    by_reason = payouts[
        ~answered & unpaid & payouts["reason_code"].notna() & (payouts["reason_code"] != "0")
    ]
    rows = pd.concat([by_answer, by_reason]).sort_index()
    code = lookup_values(rows["id"], latest["result_code"]).fillna(rows["reason_code"])
    when = lookup_values(rows["id"], latest["received_at"]).fillna(rows["completed_at"])
    reasons = [
        f"failed result: expected result code 0 != {value} ({_code_meaning(value)})"
        for value in code
    ]
    return PAYOUTS.findings(
        "failed_result",
        rows,
        reasons,
        options,
        result_code=code,
        occurred_at=when.fillna(rows["initiated_at"]),
    )


def check_stale_pending(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts still submitting, pending or unknown `stale_after_minutes` after initiation."""
    payouts = frames.payouts
    limit = pd.Timedelta(minutes=options.stale_after_minutes)
    age = options.now - payouts["initiated_at"]
    rows = payouts[payouts["status"].isin(OPEN_STATUSES) & (age > limit)]
    hours = (age[rows.index].dt.total_seconds() / 3600).tolist()
    allowed = options.stale_after_minutes / 60
    reasons = [
        f"stale pending: expected a final status within {options.stale_after_minutes} min != "
        f"{status} after {_age_text(waited)} ({_age_text(waited - allowed)} overdue)"
        for status, waited in zip(rows["status"], hours, strict=True)
    ]
    return PAYOUTS.findings(
        "stale_pending",
        rows,
        reasons,
        options,
        occurred_at=rows["initiated_at"],
        at_risk_cents=rows["amount_cents"],
    )


def check_duplicate_callback(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts with more than one result for the same attempt (legacy rows: the same payout).
    A redelivery moves no money: a second receipt is counted by paid_twice."""
    results = MatchedFrames.of(frames).matched_results
    candidates = np.flatnonzero(results["payout_ref"].notna() & (results["kind"] == "result"))
    answer_to = pd.Series(results["payout_pos"].to_numpy()[candidates])
    repeated = answer_to.duplicated(keep=False).to_numpy()  # ints: a cheap first cut
    answers = results.iloc[candidates[repeated]]
    answers = answers.assign(attempt=answers["ocid"].fillna(""))
    repeated = answers[answers.duplicated(["payout_ref", "attempt"], keep=False)]
    counted = (
        repeated.groupby(["payout_ref", "attempt"], sort=False)
        .agg(
            received=("id", "size"),
            successes=("is_success", "sum"),
            receipts=("transaction_id", lambda values: ", ".join(sorted(set(values.dropna())))),
            last_at=("received_at", "max"),
            payout_amount_cents=("payout_amount_cents", "first"),
            payout_phone=("payout_phone", "first"),
            payout_reference_id=("payout_reference_id", "first"),
        )
        .reset_index()
    )
    rows = counted[counted["received"] > 1]
    reasons = [
        f"duplicate callback: expected 1 result != {received} received ({received - 1} extra)"
        for received in rows["received"]
    ]
    return MATCHED_PAYOUTS.findings(
        "duplicate_callback",
        rows,
        reasons,
        options,
        transaction_id=rows["receipts"].where(rows["receipts"] != ""),
        occurred_at=rows["last_at"],
    )


def check_paid_twice(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts with evidence of payment under more than one receipt: two attempts paid, or a
    Transaction Status answer names a receipt other than the result's."""
    evidence = MatchedFrames.of(frames).payout_evidence
    repeated = evidence[evidence["payout_pos"].duplicated(keep=False).to_numpy()]
    receipts = repeated.groupby("payout_pos", sort=True)["receipt"].agg(
        lambda values: sorted(values)
    )
    rows = frames.payouts.iloc[receipts.index.to_numpy()]
    counts = pd.Series([len(names) for names in receipts], index=rows.index)
    reasons = [
        f"paid twice: expected 1 receipt != {count} ({', '.join(names)}; "
        f"{format_cents(amount * (count - 1) if pd.notna(amount) else None)} paid over)"
        for count, names, amount in zip(counts, receipts, rows["amount_cents"], strict=True)
    ]
    return PAYOUTS.findings(
        "paid_twice",
        rows,
        reasons,
        options,
        transaction_id=pd.Series([", ".join(names) for names in receipts], index=rows.index),
        occurred_at=rows["completed_at"].fillna(rows["initiated_at"]),
        actual_cents=rows["amount_cents"] * counts,
        at_risk_cents=rows["amount_cents"] * (counts - 1),
    )


def check_status_conflict(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts whose final status contradicts their results: marked failed although a result,
    a status answer or an attempt states a receipt, or marked completed although every result
    failed and nothing states a receipt."""
    matched = MatchedFrames.of(frames)
    payouts, results = matched.payouts, matched.matched_results
    answer_to = results["payout_pos"].to_numpy()
    refused = _answers(results) & ~results["is_success"].to_numpy()
    paid = matched.proven_paid
    denied = matched.payouts_at(answer_to[refused])
    status = payouts["status"]
    paid_but_failed = status.isin(FAILED_STATUSES).to_numpy() & paid
    unpaid_but_completed = status.isin(COMPLETED_STATUSES).to_numpy() & denied & ~paid
    rows = payouts[paid_but_failed | unpaid_but_completed]
    about = results[pointing_at(answer_to, matched.payout_rows[rows.index], len(payouts))]
    last_at = about.groupby("payout_pos")["received_at"].max()
    receipts = about[about["states_receipt"]].drop_duplicates("payout_pos")
    receipts = receipts.set_index("payout_pos")["transaction_id"]
    first_rows = pd.Series(matched.payout_rows[rows.index], index=rows.index)
    was_paid = pd.Series(paid_but_failed[rows.index], index=rows.index)
    reasons = [
        f"status conflict: expected {'completed' if paid else 'failed'} (results say "
        f"{'paid' if paid else 'not paid'}) != recorded {status} "
        f"({'paid but marked failed' if paid else 'marked completed but not paid'})"
        for paid, status in zip(was_paid, rows["status"], strict=True)
    ]
    return PAYOUTS.findings(
        "status_conflict",
        rows,
        reasons,
        options,
        transaction_id=lookup_values(first_rows, receipts),
        occurred_at=lookup_values(first_rows, last_at),
        at_risk_cents=rows["amount_cents"],
    )


def check_possible_double_payout(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Completed payouts of the same amount to the same user or phone within the window."""
    completed = frames.payouts["status"].isin(COMPLETED_STATUSES).to_numpy()
    columns = ["id", "reference_id", "user_id", "phone", "amount_cents"]
    payouts = frames.payouts.loc[completed, columns]
    payouts["transaction_id"] = frames.payouts["transaction_id"]
    payouts["when"] = frames.payouts["completed_at"].fillna(frames.payouts["initiated_at"])
    window = pd.Timedelta(hours=options.double_payout_window_hours)
    pairs = pd.concat([_repeats(payouts, key, window) for key in ("user_id", "phone")])
    pairs = pairs.drop_duplicates("id")
    hours = f"{options.double_payout_window_hours:g} h"
    reasons = [
        f"possible double payout: expected 1 payout of {format_cents(amount)} to {label} "
        f"within {hours} != 2 ({format_cents(amount)} over; also {earlier})"
        for amount, label, earlier in zip(
            pairs["amount_cents"], pairs["label"], pairs["earlier"], strict=True
        )
    ]
    return PAYOUTS.findings(
        "possible_double_payout",
        pairs,
        reasons,
        options,
        transaction_id=pairs["transaction_id"],
        occurred_at=pairs["when"],
        actual_cents=pairs["amount_cents"] * 2,
        at_risk_cents=pairs["amount_cents"],
    )


def _repeats(payouts: pd.DataFrame, key: str, window: pd.Timedelta) -> pd.DataFrame:
    """Each payout that follows another of the same key and amount within `window`."""
    # Hash first, sort the few: the key alone (cheap) is a first cut for key and amount.
    candidates = payouts[key].duplicated(keep=False) & payouts["amount_cents"].notna()
    keyed = payouts[candidates.to_numpy() & payouts[key].notna().to_numpy()]
    keyed = keyed[keyed.duplicated([key, "amount_cents"], keep=False)]
    keyed = keyed.sort_values([key, "amount_cents", "when"], kind="stable")
    same = (keyed[key] == keyed[key].shift()) & (
        keyed["amount_cents"] == keyed["amount_cents"].shift()
    )
    close = (keyed["when"] - keyed["when"].shift()) <= window
    previous = PAYOUTS.keys(keyed)["subject"].shift()
    flagged = same & close.fillna(False)
    rows = keyed[flagged].copy()
    label = "user " if key == "user_id" else "phone "
    rows["label"] = label + rows[key]
    rows["earlier"] = previous[flagged]
    return rows


def check_stk_amount_mismatch(frames: Frames, *, options: Options) -> pd.DataFrame:
    """STK collections whose paid amount differs from the amount requested."""
    stk = frames.stk
    comparable = stk["paid_amount_cents"].notna() & stk["amount_cents"].notna()
    rows = stk[comparable]
    gap = (rows["paid_amount_cents"] - rows["amount_cents"]).abs()
    rows = rows[gap > options.amount_tolerance_cents]
    rows = rows.assign(reference=collection_references(rows))
    reasons = amount_reasons("STK amount mismatch", rows["amount_cents"], rows["paid_amount_cents"])
    return COLLECTIONS.findings(
        "stk_amount_mismatch",
        rows,
        reasons,
        options,
        result_code=rows["result_code"],
        occurred_at=rows["completed_at"].fillna(rows["created_at"]),
        actual_cents=rows["paid_amount_cents"],
        at_risk_cents=(rows["paid_amount_cents"] - rows["amount_cents"]).abs(),
    )


def check_missing_from_statement(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Completed payouts and collections, inside the statement's period, whose receipt the
    statement does not show (or that have no receipt to look for)."""
    rows = _missing_from_statement(frames)
    rows = rows[(rows["kind"] != "c2b").to_numpy()]
    reasons = [
        f"missing from statement: expected receipt {receipt if isinstance(receipt, str) else '-'} "
        f"({direction} {format_cents(amount)}) in the statement != not found "
        f"({format_cents(amount)} unconfirmed)"
        for receipt, direction, amount in zip(
            rows["receipt"], rows["direction"], rows["amount_cents"], strict=True
        )
    ]
    return OUR_RECORDS.findings(
        "missing_from_statement", rows, reasons, options, at_risk_cents=rows["amount_cents"]
    )


def check_c2b_missing_from_statement(frames: Frames, *, options: Options) -> pd.DataFrame:
    """C2B payments we hold (confirmed, or found by Pull Transactions), inside the statement's
    period, whose receipt the statement does not show as Paid In."""
    rows = _missing_from_statement(frames)
    rows = rows[(rows["kind"] == "c2b").to_numpy()]
    reasons = [
        f"C2B payment missing from statement: expected receipt {receipt} (paid in "
        f"{format_cents(amount)}) in the statement != not found ({format_cents(amount)} "
        "unconfirmed)"
        for receipt, amount in zip(rows["receipt"], rows["amount_cents"], strict=True)
    ]
    return OUR_RECORDS.findings(
        "c2b_missing_from_statement", rows, reasons, options, at_risk_cents=rows["amount_cents"]
    )


def _missing_from_statement(frames: Frames) -> pd.DataFrame:
    """our_records (but repeats) inside the statement's period that it does not show."""
    if frames.statement is None or frames.statement.period[0] is None:
        return MatchedFrames.of(frames).our_records.iloc[:0]
    statement = frames.statement
    start, end = statement.period
    ours = MatchedFrames.of(frames).statement_matches.ours
    if statement.time_periods:
        in_period = statement.covers(ours["occurred_at"])
    else:
        in_period = ours["occurred_at"].between(start, end).to_numpy()
    return ours[in_period & ours["statement_cents"].isna().to_numpy()]


def check_unrecorded_statement_entry(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Statement payouts and collections (inside the period checked) with a receipt we have no
    payout, result or payment for; C2B rows are c2b_without_confirmation's."""
    if frames.statement is None:
        return empty_findings()
    rows = _unrecorded_rows(frames, options)
    rows = rows[~rows["customer_initiated"].to_numpy()]
    reasons = [
        f"unrecorded statement entry: expected a record of receipt {receipt} != none found "
        f"({direction} {format_cents(amount)} unaccounted)"
        for receipt, direction, amount in zip(
            rows["receipt"], rows["direction"], rows["amount_cents"], strict=True
        )
    ]
    return statement_row_findings("unrecorded_statement_entry", rows, reasons, options)


def check_c2b_without_confirmation(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Statement rows of payments customers started (paybill, till: by Reason Type or Details)
    whose receipt no C2B confirmation, Pull Transactions run or other record of ours holds."""
    if frames.statement is None:
        return empty_findings()
    rows = _unrecorded_rows(frames, options)
    rows = rows[rows["customer_initiated"].to_numpy()]
    reasons = [
        f"C2B statement entry without a confirmation: expected a C2B payment {receipt} != none "
        f"found ({direction} {format_cents(amount)} unaccounted)"
        for receipt, direction, amount in zip(
            rows["receipt"], rows["direction"], rows["amount_cents"], strict=True
        )
    ]
    return statement_row_findings("c2b_without_confirmation", rows, reasons, options)


def _unrecorded_rows(frames: Frames, options: Options) -> pd.DataFrame:
    """Statement payment rows in the period whose receipt nothing of ours holds, with
    `customer_initiated` (statement.customer_initiated)."""
    matched = MatchedFrames.of(frames)
    rows = matched.statement_matches.rows
    rows = in_period(rows[~rows["recorded"]], options)
    results = matched.matched_results
    everything_we_hold = [
        frames.payouts["transaction_id"],
        results.loc[results["states_receipt"], "transaction_id"],
        frames.attempts["receipt"],
        frames.stk["receipt"],
        frames.stk["reversal_receipt"],
        frames.c2b["receipt"],
        frames.c2b["reversal_receipt"],
    ]
    # Scan the large receipt lists for the few unrecorded ones (hashing the few, not the many).
    known = pd.concat([held[held.isin(rows["receipt"])] for held in everything_we_hold])
    rows = rows[~rows["receipt"].isin(known)]
    return rows.assign(customer_initiated=customer_initiated(rows))


def check_c2b_unknown_bill_ref(frames: Frames, *, options: Options) -> pd.DataFrame:
    """C2B payments whose bill reference C2B_BILL_REF_QUERY finds no booking or user for
    (only when that query is configured: recon.load looks each one up)."""
    c2b = frames.c2b
    rows = c2b[(c2b["bill_ref_known"] == False).fillna(False).to_numpy()]  # noqa: E712
    rows = rows.assign(reference=rows["receipt"].fillna("id " + rows["id"].astype("str")))
    reasons = [
        f"C2B bill reference unknown: expected a booking or user for {bill_ref!r} != none "
        f"found ({format_cents(amount)} received, not attributed)"
        for bill_ref, amount in zip(rows["bill_ref"].fillna(""), rows["amount_cents"], strict=True)
    ]
    return make_findings(
        "c2b_unknown_bill_ref",
        rows,
        options=options,
        subject="c2b " + rows["reference"],
        reasons=reasons,
        reference_id=rows["receipt"],
        transaction_id=rows["receipt"],
        phone=rows["msisdn"],
        occurred_at=rows["paid_at"].fillna(rows["received_at"]),
        actual_cents=rows["amount_cents"],
    )


def check_statement_amount_mismatch(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Receipts on both sides whose statement amount is neither what we asked for nor what
    the result says was paid (payout vs Withdrawn, collection vs Paid In)."""
    if frames.statement is None:
        return empty_findings()
    ours = MatchedFrames.of(frames).statement_matches.ours
    tolerance = options.amount_tolerance_cents
    theirs = ours["statement_cents"]
    off_paid = ((theirs - ours["amount_cents"]).abs() > tolerance).fillna(False)
    off_asked = ((theirs - ours["requested_cents"]).abs() > tolerance).fillna(True)
    rows = ours[(off_paid & off_asked).to_numpy()]
    reasons = [
        f"statement amount mismatch: recorded {format_cents(ours_cents)} != statement "
        f"{format_cents(statement)} ({_cents_gap(ours_cents, statement)})"
        for ours_cents, statement in zip(rows["amount_cents"], rows["statement_cents"], strict=True)
    ]
    return OUR_RECORDS.findings(
        "statement_amount_mismatch",
        rows,
        reasons,
        options,
        actual_cents=rows["statement_cents"],
        at_risk_cents=_beyond_recorded_gap(rows),
    )


def _cents_gap(expected: object, actual: object) -> str:
    return amount_gap(decimal_from_cents(expected), decimal_from_cents(actual))


def _beyond_recorded_gap(rows: pd.DataFrame) -> pd.Series:
    """The part of a three-way disagreement (asked, paid, statement) that the gap between asked
    and paid (counted by amount_mismatch / stk_amount_mismatch) does not already count."""
    amounts = rows[["requested_cents", "amount_cents", "statement_cents"]].astype("Int64")
    spread = amounts.max(axis=1) - amounts.min(axis=1)
    return spread - (rows["requested_cents"] - rows["amount_cents"]).abs().fillna(0)


def check_reversal(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts and collections we hold as paid that the statement shows reversed: a reversal
    row carrying or linked to their receipt, or a row with their receipt moving money the other
    way. The money came back; a reversal of a receipt we do not know is reported too. A
    collection the service reversed matches its reversal's row (that row's receipt, or a row
    with the collection's own receipt moving money back) and is no finding; any other reversal
    of it is."""
    if frames.statement is None:
        return empty_findings()
    matched = MatchedFrames.of(frames)
    ours = matched.statement_matches.ours
    reversals = in_period(_reversal_rows(matched, ours), options)
    reversals = reversals[~_reversed_by_us(reversals, ours)]
    ours_by_receipt = ours[ours["receipt"].isin(reversals["reversed"]).to_numpy()]
    ours_by_receipt = ours_by_receipt.drop_duplicates("receipt").set_index("receipt")
    known = reversals["reversed"].isin(ours_by_receipt.index).to_numpy()
    ours_matched = ours_by_receipt.loc[reversals.loc[known, "reversed"]].set_index(
        reversals.index[known]
    )
    keys = OUR_RECORDS.keys(ours_matched)
    keys = {name: values.reindex(reversals.index) for name, values in keys.items()}
    keys["subject"] = keys["subject"].fillna(statement_lines(reversals))
    reasons = [
        f"reversal: expected receipt {reversed_} to stand != reversed by "
        f"{receipt} on line {line} ({format_cents(amount)} back"
        f"{'' if mine else ', and we hold no record of ' + reversed_})"
        for reversed_, receipt, line, amount, mine in zip(
            reversals["reversed"],
            reversals["receipt"].fillna("-"),
            reversals["line"],
            reversals["amount_cents"],
            known,
            strict=True,
        )
    ]
    return make_findings(
        "reversal",
        reversals,
        options=options,
        reasons=reasons,
        **keys,
        transaction_id=reversals["reversed"],
        phone=ours_matched["phone"].reindex(reversals.index),
        occurred_at=reversals["completed_at"],
        expected_cents=ours_matched["amount_cents"].reindex(reversals.index),
        actual_cents=reversals["amount_cents"],
        at_risk_cents=reversals["amount_cents"],
    )


def _reversed_by_us(reversals: pd.DataFrame, ours: pd.DataFrame) -> np.ndarray:
    """Whether each reversal row is one the service made: its own receipt is the receipt of a
    reversal the service made, or it undoes a collection the service reversed under that
    collection's own receipt (a Withdrawn row with the receipt)."""
    refunded = ours[ours["reversal_receipt"].notna().to_numpy()]
    own_receipt = reversals["receipt"].isin(refunded["reversal_receipt"])
    back_under_ours = reversals["reversed"].isin(refunded["receipt"]) & (
        reversals["receipt"] == reversals["reversed"]
    )
    return (own_receipt | back_under_ours).to_numpy(dtype=bool)


def _reversal_rows(frames: MatchedFrames, ours: pd.DataFrame) -> pd.DataFrame:
    """Statement rows that undo a payment, with `reversed` (the receipt undone: the linked one,
    else the row's own) and `amount_cents`: rows of the reversal role, and payment rows whose
    receipt is one of ours moving money the other way (a Paid In row with a payout's receipt,
    a Withdrawn row with a collection's)."""
    entries = frames.statement.entries
    payments, receipts = frames.statement_payments.rows, frames.statement_payments.receipts
    backwards = []
    for direction, kind in (("paid in", "payout"), ("withdrawn", "payment")):
        side = payments[(payments["direction"] == direction).to_numpy()]
        kinds = ("payment", "c2b") if kind == "payment" else (kind,)
        found = receipts[direction].keys.get_indexer(ours.loc[ours["kind"].isin(kinds), "receipt"])
        backwards.append(side.iloc[found[found >= 0]])
    undone = entries[(entries["role"] == ROLE_REVERSAL).to_numpy()]
    parts = [part for part in (undone, *backwards) if len(part)]
    rows = pd.concat(parts) if parts else entries.iloc[:0]
    rows = rows.assign(reversed=rows["linked_transaction_id"].fillna(rows["receipt"]))
    rows["amount_cents"] = rows["paid_in_cents"].where(
        rows["paid_in_cents"].fillna(0) > 0, rows["withdrawn_cents"]
    )
    return rows[rows["reversed"].notna()]


def check_duplicate_receipt(frames: Frames, *, options: Options) -> pd.DataFrame:
    """One receipt on more than one of our completed payouts and collections, or on more than
    one payment row of one direction in the statement: one movement counted twice."""
    matched = MatchedFrames.of(frames)
    ours = matched.our_records
    extra = ours[ours["repeat"].to_numpy()]
    first = ours[ours["receipt"].isin(extra["receipt"]).to_numpy() & ~ours["repeat"].to_numpy()]
    first = first.set_index("receipt")
    ours_part = OUR_RECORDS.findings(
        "duplicate_receipt",
        extra,
        [
            f"duplicate receipt: expected 1 record of {receipt} != 2 or more (also "
            f"{named(*first.loc[receipt, ['kind', 'reference', 'id']])}; "
            f"{format_cents(amount)} unconfirmed)"
            for receipt, amount in zip(extra["receipt"], extra["amount_cents"], strict=True)
        ],
        options,
        at_risk_cents=extra["amount_cents"],
    )
    parts = [part for part in (ours_part, _statement_duplicates(matched, options)) if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else empty_findings()


def _statement_duplicates(frames: MatchedFrames, options: Options) -> pd.DataFrame:
    if frames.statement is None:
        return empty_findings()
    payments = frames.statement_payments.rows
    rows = in_period(frames.statement_payments.repeats, options)
    if rows.empty:
        return empty_findings()
    first = payments[payments["receipt"].isin(rows["receipt"])]
    first = first.set_index(["receipt", "direction"])["line"]
    reasons = [
        f"duplicate receipt: expected 1 {direction} row for {receipt} != 2 or more "
        f"(also line {first.loc[(receipt, direction)]}; {format_cents(amount)} counted twice)"
        for receipt, direction, amount in zip(
            rows["receipt"], rows["direction"], rows["amount_cents"], strict=True
        )
    ]
    return statement_row_findings("duplicate_receipt", rows, reasons, options)


def check_unreadable_value(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Amounts and times in the database that recon cannot read: reported, never skipped, since
    every check that needs the value cannot vouch for its row."""
    rows = frames.unreadable
    kinds = rows["table"].map(TABLE_KINDS).astype("str")
    ids = rows["id"].astype("str")
    keys = record_keys(kinds, _references_of(frames, rows["table"], ids), ids)
    keys["subject"] = keys["subject"].where(kinds != "result", "result " + ids)
    reasons = [
        f"unreadable value: expected a readable {column} != {value!r} ({table} {id_})"
        for table, id_, column, value in zip(
            rows["table"], rows["id"], rows["column"], rows["value"], strict=True
        )
    ]
    return make_findings(
        "unreadable_value",
        rows,
        options=options,
        reasons=reasons,
        **keys,
    )


TABLE_KINDS = {"b2c_payments": "payout", "b2c_payment_callbacks": "result", "payments": "payment"}


def _references_of(frames: Frames, tables: pd.Series, ids: pd.Series) -> pd.Series:
    """The reference (record_keys') of each row named by table and internal id; missing for
    results and for rows without one."""
    references = pd.Series(None, index=ids.index, dtype="str")
    named_by = {
        "b2c_payments": (frames.payouts["id"], frames.payouts["reference_id"]),
        "payments": (frames.stk["id"], collection_references(frames.stk)),
    }
    for table, (keys, values) in named_by.items():
        mine = (tables == table).to_numpy()
        by_id = pd.Series(values.to_numpy(), index=keys.astype("str").to_numpy(), dtype="str")
        by_id = by_id[~by_id.index.duplicated()]
        references[mine] = lookup_values(ids[mine], by_id).to_numpy()
    return references


def check_statement_coverage(frames: Frames, *, options: Options) -> pd.DataFrame:
    """The period checked is not wholly inside the statement's Time Period (or the statement
    states none): statement checks say nothing about the rest, so this is never clean."""
    if frames.statement is None:
        return empty_findings()
    gaps = coverage_gaps(frames.statement, options.since, options.until)
    if not gaps:
        return empty_findings()
    reason = (
        f"statement coverage: expected {_moment(options.since)} to {_moment(options.until)} "
        f"covered != not covered: {'; '.join(gaps)} (not checked)"
    )
    return make_findings(
        "statement_coverage",
        pd.DataFrame({"gaps": [reason]}),
        options=options,
        subject=pd.Series(["statement"]),
        reasons=[reason],
    )


def coverage_gaps(statement, since, until) -> list[str]:
    """What of [since, until) the statements' Time Periods do not cover, in words: each
    uncovered stretch, and each file without a Time Period."""
    gaps = [
        f"{source} states no Time Period (rows from {_moment(first)} to {_moment(last)})"
        for source, (first, last) in _headerless(statement)
    ]
    if statement.time_periods or not gaps:
        gaps += [
            f"{_moment(start)} to {_moment(stop)}"
            for start, stop in uncovered(since, until, statement.time_periods)
        ]
    return gaps


def uncovered(since, until, periods) -> list[tuple]:
    """The stretches of [since, until) (None: unbounded) outside every period (start, end
    inclusive to the second), in order."""
    stretches, cursor = [], None if since is None else pd.Timestamp(since)
    end_of_period = until if until is None else pd.Timestamp(until)
    for start, end in periods:
        stop = end + pd.Timedelta(seconds=1)
        if end_of_period is not None and start >= end_of_period:
            break
        if cursor is not None and stop <= cursor:
            continue
        if cursor is None or start > cursor:
            stretches.append((cursor, start))
        cursor = stop if cursor is None else max(cursor, stop)
    if end_of_period is None or cursor is None or cursor < end_of_period:
        stretches.append((cursor, end_of_period))
    return stretches


def _headerless(statement):
    for part in statement.files:
        if part.header.period_start is None or part.header.period_end is None:
            yield part.source, part.rows_span


def _moment(moment) -> str:
    if moment is None or pd.isna(moment):
        return "unbounded" if moment is None else "-"
    return f"{pd.Timestamp(moment):%Y-%m-%d %H:%M:%S} UTC"


def check_statement_integrity(frames: Frames, *, options: Options) -> pd.DataFrame:
    """The statement's own inconsistencies, found by the parser. They name the gap but put no
    money at risk of their own: a row missing or added moves money that missing_from_statement,
    unrecorded_statement_entry or statement_amount_mismatch counts once."""
    if frames.statement is None or not frames.statement.problems:
        return empty_findings()
    problems = pd.DataFrame([problem.__dict__ for problem in frames.statement.problems])
    where = ["statement" + (f" {name}" if name else "") for name in problems["source"]]
    subject = pd.Series(
        [
            place if pd.isna(line) else f"{place} line {int(line)}"
            for place, line in zip(where, problems["line"], strict=True)
        ]
    )
    return make_findings(
        "statement_integrity",
        problems,
        options=options,
        subject=subject,
        reasons=problems["reason"].tolist(),
        transaction_id=problems["receipt"],
        expected_cents=problems["expected_cents"],
        actual_cents=problems["actual_cents"],
    )


def check_charge_mismatch(frames: Frames, *, options: Options) -> pd.DataFrame:
    """B2C payouts on the statement whose charge rows differ from the tariff in force on their
    Nairobi day (a payout without one included), charge rows of no payment, and payouts whose
    charge the tariff does not know (not checked). A statement without any charge row says
    nothing of charges (they may be on the charges account's statement)."""
    if frames.statement is None:
        return empty_findings()
    matched = MatchedFrames.of(frames)
    charges = matched.statement_charges
    if not charges.shown:
        return empty_findings()
    payouts = in_period(expected_charges(charges.payouts, options.b2c_tariff), options)
    unknown = (payouts["expected_cents"] == UNKNOWN).to_numpy()
    gap = (payouts["charged_cents"] - payouts["expected_cents"]).abs()
    off = ~unknown & (gap > options.amount_tolerance_cents).to_numpy()
    rows = payouts[off | unknown]
    checked = ~unknown[off | unknown]
    payout_part = make_findings(
        "charge_mismatch",
        rows,
        options=options,
        reasons=[
            _charge_reason(row, known)
            for row, known in zip(rows.itertuples(), checked, strict=True)
        ],
        **_statement_payout_keys(matched, rows),
        transaction_id=rows["receipt"],
        occurred_at=rows["completed_at"],
        expected_cents=rows["expected_cents"].where(checked),
        actual_cents=rows["charged_cents"],
        at_risk_cents=(rows["charged_cents"] - rows["expected_cents"]).abs().where(checked),
    )
    orphans = in_period(charges.orphans, options)
    reasons = [
        f"charge mismatch: expected a payment with receipt {receipt} != none on the statement "
        f"({format_cents(amount)} charged for none)"
        for receipt, amount in zip(orphans["receipt"], orphans["amount_cents"], strict=True)
    ]
    orphan_part = statement_row_findings("charge_mismatch", orphans, reasons, options)
    parts = [part for part in (payout_part, orphan_part) if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else empty_findings()


def _charge_reason(row, known: bool) -> str:
    if not known:
        return (
            f"charge mismatch: expected a tariff charge for {format_cents(row.withdrawn_cents)} "
            f"on {pd.Timestamp(row.day):%Y-%m-%d} != unknown ({row.band or 'no tariff band'}; "
            f"not checked, {format_cents(row.charged_cents)} charged)"
        )
    charged = f"charged {format_cents(row.charged_cents)}" if row.charge_rows else "no charge row"
    return (
        f"charge mismatch: expected {format_cents(row.expected_cents)} ({row.band}) != "
        f"{charged} ({_cents_gap(row.expected_cents, row.charged_cents)})"
    )


def _statement_payout_keys(matched: MatchedFrames, rows: pd.DataFrame) -> dict:
    """record_keys for statement payout rows: our payout holding the receipt, else the row."""
    ours = matched.statement_matches.ours
    ours = ours[(ours["kind"] == "payout").to_numpy()].drop_duplicates("receipt")
    ours = ours.set_index("receipt")
    ids = lookup_values(rows["receipt"], ours["id"].astype("str"))
    references = lookup_values(rows["receipt"], ours["reference"].astype("str"))
    keys = record_keys("payout", references, ids)
    mine = ids.notna()
    keys["subject"] = keys["subject"].where(mine, statement_lines(rows))
    keys["payout_id"] = keys["payout_id"].where(mine)
    return keys


def charge_totals(frames: Frames, options: Options) -> pd.DataFrame | None:
    """Per Nairobi day of the period: B2C payout rows on the statement, KES charged, KES the
    tariff expected and payouts it has no charge for (recon.charges.totals_per_day); None
    without a statement."""
    if frames.statement is None:
        return None
    charges = MatchedFrames.of(frames).statement_charges
    payouts = in_period(expected_charges(charges.payouts, options.b2c_tariff), options)
    return totals_per_day(payouts, in_period(charges.orphans, options))


# -- registry and runner ------------------------------------------------------------------------

Check = Callable[..., pd.DataFrame]
CHECKS: list[Check] = [
    check_amount_mismatch,
    check_orphan_callback,
    check_failed_result,
    check_stale_pending,
    check_duplicate_callback,
    check_paid_twice,
    check_status_conflict,
    check_possible_double_payout,
    check_stk_amount_mismatch,
    check_unreadable_value,
    check_duplicate_receipt,
    check_missing_from_statement,
    check_unrecorded_statement_entry,
    check_c2b_missing_from_statement,
    check_c2b_without_confirmation,
    check_c2b_unknown_bill_ref,
    check_statement_amount_mismatch,
    check_reversal,
    check_statement_integrity,
    check_statement_coverage,
    check_charge_mismatch,
]
CHECK_NAMES = tuple(check.__name__.removeprefix("check_") for check in CHECKS)
KES_AT_RISK = (
    "money that may have left without being recorded, or been recorded without leaving, "
    "counted once per shilling across checks; a check marked 'count only' moves no money of "
    "its own (a failure, a redelivered callback, a statement that disagrees with itself)"
)
# What each check's findings put at risk (their `at_risk`); None: counted, never valued.
AT_RISK: dict[str, str | None] = {
    "amount_mismatch": "the gap",
    "orphan_callback": "a success's amount",
    "failed_result": None,
    "stale_pending": "the amount",
    "duplicate_callback": None,
    "paid_twice": "the amount per extra receipt",
    "status_conflict": "the amount",
    "possible_double_payout": "the amount",
    "stk_amount_mismatch": "the gap",
    "unreadable_value": None,
    "duplicate_receipt": "the extra record's or row's amount",
    "missing_from_statement": "the amount paid",
    "unrecorded_statement_entry": "the row's amount",
    "c2b_missing_from_statement": "the amount recorded",
    "c2b_without_confirmation": "the row's amount",
    "c2b_unknown_bill_ref": None,
    "statement_amount_mismatch": "the part not already counted",
    "reversal": "the amount returned",
    "statement_integrity": None,
    "statement_coverage": None,
    "charge_mismatch": "the difference from the tariff (a charge of no payment: its amount)",
}
COUNT_ONLY = tuple(name for name in CHECK_NAMES if AT_RISK[name] is None)
STATEMENT_CHECKS = (
    "missing_from_statement",
    "unrecorded_statement_entry",
    "c2b_missing_from_statement",
    "c2b_without_confirmation",
    "statement_amount_mismatch",
    "reversal",
    "statement_integrity",
    "statement_coverage",
    "charge_mismatch",
    "the statement side of duplicate_receipt",
)


def run_checks(frames: Frames, options: Options | None = None) -> Findings:
    """Every registered check over `frames`, findings concatenated in vocabulary order."""
    options = options or Options()
    frames = MatchedFrames.of(frames)  # one matching, shared by every check
    parts = [check(frames, options=options) for check in CHECKS]
    parts = [part for part in parts if not part.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else empty_findings()
    return Findings(
        frame=frame,
        checks=CHECK_NAMES,
        match=match_rates(frames),
        scope=scope(frames, options),
        traffic=traffic(frames, options),
        charges=charge_totals(frames, options),
    )


def traffic(frames: Frames, options: Options) -> dict[str, int]:
    """How many records of each kind the run looked at ('payout', 'callback', 'collection',
    and with a statement 'statement row' inside the period): a clean report is clean about
    these only."""
    counts = {
        "payout": len(frames.payouts),
        "callback": len(frames.results),
        "collection": len(frames.stk),
    }
    if len(frames.c2b):
        counts["C2B payment"] = len(frames.c2b)
    if frames.statement is not None:
        counts["statement row"] = len(in_period(frames.statement.entries, options))
    return counts


def scope(frames: Frames, options: Options) -> list[str]:
    """Sentences saying what this run checked beyond its period: the statement's coverage (from
    its header and its rows), and what was not checked."""
    lines = []
    statement = frames.statement
    if statement is None:
        lines.append(f"No statement given: {', '.join(STATEMENT_CHECKS)} not checked.")
        return lines
    for part in statement.files:
        start, end = part.header.period_start, part.header.period_end
        first, last = part.rows_span
        header = f"{_moment(start)} to {_moment(end)}" if start is not None else "none stated"
        lines.append(
            f"Statement {part.source}: Time Period {header}; "
            f"{len(part.entries):,} rows from {_moment(first)} to {_moment(last)}."
        )
    gaps = coverage_gaps(statement, options.since, options.until)
    lines.append(
        "Not covered by the statement, so not checked against it: " + "; ".join(gaps) + "."
        if gaps
        else "The statement covers the whole period."
    )
    charges = MatchedFrames.of(frames).statement_charges
    if not charges.shown and len(in_period(charges.payouts, options)):
        lines.append(
            "The statement shows no B2C charge rows: charge_mismatch not checked (the charges may "
            "be on the charges account's statement)."
        )
    return lines


def match_rates(frames: Frames) -> dict[str, tuple[int, int]]:
    """(matched, total) for results -> payouts, payouts -> results and, with a statement,
    statement entries -> our records."""
    frames = MatchedFrames.of(frames)
    results = frames.matched_results
    matched = results["payout_ref"].notna().to_numpy()
    answer_to = results["payout_pos"].to_numpy()[matched]
    answered = len(pd.unique(answer_to[answer_to >= 0]))
    rates = {
        "results matched to a payout": (int(matched.sum()), len(results)),
        "payouts with a result": (answered, len(frames.payouts)),
    }
    if frames.statement is not None:
        entries = frames.statement_matches.rows
        rates["statement entries recorded"] = (int(entries["recorded"].sum()), len(entries))
    return rates


def _two(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))
