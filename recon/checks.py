"""The reconciliation checks: pure functions of the Frames, one registry, one runner.

Each check is `check_<name>(frames, *, options) -> DataFrame` with FINDING_COLUMNS, one row per
finding and an empty frame when clean; none raises on bad data. `check` values are the fixed
vocabulary in CHECK_NAMES. Reasons are one fixed phrase per kind naming expected, actual and the
direction ("amount mismatch: requested 1,000.00 != paid 100.00 (900.00 short)").

A result is matched to its payout by OriginatorConversationID (the payout's or any of its
attempts'), then ConversationID, then TransactionID (successful results only: a failed result's
TransactionID is a placeholder), then the old system's reference_id, and last by the payout_id
the service recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from recon.codes import meaning
from recon.frames import Frames, flags_per_unique
from recon.money import decimal_from_cents, format_cents

FINDING_COLUMNS = [
    "check",
    "subject",
    "reference_id",
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
COMPLETED_STATUSES = frozenset({"completed", "success", "successful", "paid"})
FAILED_STATUSES = frozenset({"failed"})
# `submitting` too: a payout left mid-send (the process died) is as open as one awaiting its result.
OPEN_STATUSES = frozenset({"submitting", "pending", "unknown"})
INTERNAL_TRANSFER = r"settlement|transfer of funds|funds transfer"
DIRECTIONS = ("withdrawn", "paid in")


@dataclass(frozen=True)
class Options:
    """Parameters of one run. Tolerances are explicit and default to zero."""

    as_of: datetime | None = None  # naive UTC; None means now
    stale_after_minutes: int = 30
    double_payout_window_hours: float = 24
    amount_tolerance_cents: int = 0
    since: datetime | None = None  # the period checked, naive UTC; None means unbounded
    until: datetime | None = None

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
        """Per check in vocabulary order: count and KES at risk (Decimal)."""
        rows = []
        for name in self.checks:
            found = self.of(name)
            at_risk = sum((value for value in found["at_risk"] if value is not None), Decimal(0))
            rows.append({"check": name, "count": len(found), "kes_at_risk": _two(at_risk)})
        return pd.DataFrame(rows, columns=["check", "count", "kes_at_risk"])


# -- shared derivations -------------------------------------------------------------------------
#
# Matching hashes each key column once (FirstRows) and then works with integer row positions:
# hashing a million strings costs what all the integer work after it costs together.


@dataclass(frozen=True)
class FirstRows:
    """Where each distinct value of a key column first occurs: hashed once, probed many times."""

    keys: pd.Index  # the distinct non-missing values, in order of first occurrence
    rows: np.ndarray  # the position of each one's first occurrence in the column

    @classmethod
    def of(cls, column: pd.Series) -> FirstRows:
        present = column.notna().to_numpy()
        keys, rows = pd.Index(column[present]), np.flatnonzero(present)
        if not keys.is_unique:  # the hash table built here serves every later lookup
            first = ~keys.duplicated()
            keys, rows = keys[first], rows[first]
        return cls(keys, rows)

    def find(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """The first position holding each value; -1 where absent or missing."""
        found = self.keys.get_indexer(values)
        if not len(self.rows):
            return found
        return np.where(found >= 0, self.rows[found], -1)


def payout_rows(frames: Frames) -> np.ndarray:
    """For each payout, the first payout row with its id (-1 when it has none): the row a
    result matched to that id points at."""
    if "payout_rows" in frames.cache:
        return frames.cache["payout_rows"]
    ids = frames.payouts["id"]
    first = FirstRows.of(ids)
    rows = np.full(len(ids), -1, dtype=np.int64)
    rows[first.rows] = first.rows
    repeated = np.flatnonzero((rows < 0) & ids.notna().to_numpy())
    rows[repeated] = first.find(ids.to_numpy()[repeated])
    frames.cache["payout_rows"] = rows
    frames.cache["payout_ids"] = first
    return rows


def matched_results(frames: Frames) -> pd.DataFrame:
    """Results with `payout_ref` (the matched payout's id, or missing), `matched_by`,
    `payout_pos` (the matched payout's first row, -1 for none), whether the result is a
    success, and the matched payout's amount, status, phone and receipt."""
    if "matched_results" in frames.cache:
        return frames.cache["matched_results"]
    results = frames.results.copy(deep=False)  # copy-on-write: the new columns stay here
    results["is_success"] = (results["result_code"] == "0") & (results["kind"] != "timeout")
    payout_ref = np.full(len(results), np.nan, dtype=object)
    matched_by = payout_ref.copy()
    position = np.full(len(results), -1, dtype=np.int64)
    unmatched = np.ones(len(results), dtype=bool)
    for key, pairs, usable in _match_keys(frames, results):
        todo = np.flatnonzero(unmatched & results[key].notna().to_numpy() & usable)
        if not len(todo):
            continue
        keys, payout_ids, payout_positions = pairs()
        pair = FirstRows.of(keys).find(results[key].to_numpy()[todo])
        hit = pair >= 0
        hit[hit] = pd.notna(payout_ids[pair[hit]])  # a pair without a payout id matches nothing
        todo, pair = todo[hit], pair[hit]
        payout_ref[todo] = payout_ids[pair]
        matched_by[todo] = key
        position[todo] = payout_positions[pair]
        unmatched[todo] = False
    results["payout_ref"] = pd.Series(payout_ref, index=results.index, dtype="str")
    results["matched_by"] = pd.Series(matched_by, index=results.index, dtype="str")
    results["payout_pos"] = position
    for column in ("amount_cents", "status", "phone", "transaction_id", "initiated_at"):
        taken = frames.payouts[column].array.take(position, allow_fill=True)
        results[f"payout_{column}"] = pd.Series(taken, index=results.index)
    frames.cache["matched_results"] = results
    return results


def _match_keys(frames: Frames, results: pd.DataFrame):
    """(key, a function building its pairs, which results may use it) in matching order. The
    pairs are three aligned columns: key value, payout id and that payout's first row. They are
    built only when some result still needs the key."""
    payouts, attempts = frames.payouts, frames.attempts
    everywhere = np.ones(len(results), dtype=bool)

    def own(key):
        return lambda: (payouts[key], payouts["id"].to_numpy(), payout_rows(frames))

    def with_attempts(key):
        if not len(attempts):
            return own(key)

        def pairs():
            attempt_rows = _payout_ids(frames).find(attempts["payout_id"].to_numpy())
            return (
                pd.concat([payouts[key], attempts[key]], ignore_index=True),
                np.concatenate([payouts["id"].to_numpy(), attempts["payout_id"].to_numpy()]),
                np.concatenate([payout_rows(frames), attempt_rows]),
            )

        return pairs

    yield "ocid", with_attempts("ocid"), everywhere
    yield "conversation_id", with_attempts("conversation_id"), everywhere
    yield "transaction_id", own("transaction_id"), results["is_success"].to_numpy()
    yield "reference_id", own("reference_id"), everywhere
    yield "payout_id", own("id"), everywhere


def _payout_ids(frames: Frames) -> FirstRows:
    payout_rows(frames)
    return frames.cache["payout_ids"]


def lookup_values(keys: pd.Series, mapping: pd.Series) -> pd.Series:
    """mapping[key] for each key (missing where absent), keeping `mapping`'s dtype even when
    either side is empty (Series.map turns an empty mapping into float64)."""
    values = mapping.reindex(keys.to_numpy()).to_numpy()
    return pd.Series(values, index=keys.index, dtype=mapping.dtype)


def pointing_at(positions: np.ndarray, targets: np.ndarray, size: int) -> np.ndarray:
    """Whether each of `positions` (rows of a `size`-row frame, -1 for none) is one of
    `targets`; -1 never is."""
    hit = np.zeros(size + 1, dtype=bool)  # the extra last slot is the one -1 points at
    hit[targets[targets >= 0]] = True
    return hit[positions]


def payouts_at(frames: Frames, targets: np.ndarray) -> np.ndarray:
    """Per payout: whether its first row (the one results point at) is one of `targets`."""
    return pointing_at(payout_rows(frames), targets, len(frames.payouts))


def _answers(results: pd.DataFrame) -> np.ndarray:
    """Matched results that answer their payout (not timeouts)."""
    return (results["payout_ref"].notna() & (results["kind"] != "timeout")).to_numpy()


def payout_receipts(frames: Frames) -> pd.DataFrame:
    """Completed payouts with their receipt (the payout's transaction_id, else its successful
    result's), amount and completion time."""
    if "payout_receipts" in frames.cache:
        return frames.cache["payout_receipts"]
    completed = frames.payouts["status"].isin(COMPLETED_STATUSES).to_numpy()
    columns = ["id", "transaction_id", "amount_cents", "phone", "completed_at", "initiated_at"]
    payouts = frames.payouts.loc[completed, columns]
    receipts = payouts["transaction_id"]
    without = receipts.isna().to_numpy()
    if without.any():
        rows = np.flatnonzero(completed)[without]
        receipts = receipts.fillna(_result_receipts(frames, rows, payouts.index[without]))
    frame = pd.DataFrame(
        {
            "id": payouts["id"],
            "receipt": receipts,
            "amount_cents": payouts["amount_cents"],
            "phone": payouts["phone"],
            "occurred_at": payouts["completed_at"].fillna(payouts["initiated_at"]),
        }
    )
    frames.cache["payout_receipts"] = frame
    return frame


def _result_receipts(frames: Frames, rows: np.ndarray, index: pd.Index) -> pd.Series:
    """The receipt of the first successful result matched to each payout row in `rows`."""
    results = matched_results(frames)
    wanted = payout_rows(frames)[rows]
    answer_to = results["payout_pos"].to_numpy()
    useful = results["is_success"].to_numpy() & pointing_at(answer_to, wanted, len(frames.payouts))
    first = results.loc[useful, ["payout_pos", "transaction_id"]].drop_duplicates("payout_pos")
    receipt = first.set_index("payout_pos")["transaction_id"]
    return lookup_values(pd.Series(wanted, index=index), receipt)


def collection_receipts(frames: Frames) -> pd.DataFrame:
    """Completed STK collections with their receipt, amount paid and completion time."""
    stk = frames.stk
    completed = stk["status"].isin(COMPLETED_STATUSES) | (stk["result_code"] == "0")
    stk = stk[completed]
    return pd.DataFrame(
        {
            "id": stk["id"],
            "receipt": stk["receipt"],
            "amount_cents": stk["paid_amount_cents"].fillna(stk["amount_cents"]),
            "phone": stk["phone"],
            "occurred_at": stk["completed_at"].fillna(stk["created_at"]),
        }
    )


def statement_payments(frames: Frames) -> pd.DataFrame:
    """Statement rows that are payouts (`withdrawn_cents` > 0) or collections (`paid_in_cents`
    > 0): not charges, not internal transfers, not failed, one row per receipt and direction
    (the first), the payouts first."""
    if "statement_payments" in frames.cache:
        return frames.cache["statement_payments"]
    entries = frames.statement.entries
    usable = _usable_entries(entries)
    paid_in = (entries["paid_in_cents"].fillna(0) > 0).to_numpy()
    picked, receipts = [], {}
    for direction, side in zip(DIRECTIONS, (~paid_in, paid_in), strict=True):
        candidates = np.flatnonzero(usable & side)
        receipts[direction] = FirstRows.of(entries["receipt"].iloc[candidates])
        picked.append(candidates[receipts[direction].rows])
    rows = entries.iloc[np.concatenate(picked)]
    payouts_first = np.repeat(DIRECTIONS, [len(part) for part in picked])
    rows["direction"] = pd.Series(payouts_first, index=rows.index, dtype="str")
    rows["amount_cents"] = rows["withdrawn_cents"].where(
        rows["direction"] == "withdrawn", rows["paid_in_cents"]
    )
    frames.cache["statement_payments"] = rows
    frames.cache["statement_receipts"] = receipts
    return rows


def _usable_entries(entries: pd.DataFrame) -> np.ndarray:
    """Entries with a receipt that are not charges, internal transfers or failed."""

    def internal(texts: pd.Series) -> pd.Series:
        return texts.str.contains(INTERNAL_TRANSFER, case=False, regex=True)

    def completed(texts: pd.Series) -> pd.Series:
        return texts.str.lower() == "completed"

    transfer = flags_per_unique(entries["reason_type"], internal)
    transfer |= flags_per_unique(entries["details"], internal)
    status_ok = flags_per_unique(entries["transaction_status"], completed, missing=True)
    has_receipt = entries["receipt"].notna().to_numpy()
    return has_receipt & ~entries["is_charge"].to_numpy() & ~transfer & status_ok


def statement_matches(frames: Frames) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Our completed payouts and collections with `statement_cents` (the amount of the
    statement row with their receipt and direction, missing when none), and the statement's
    payment rows with `recorded` (whether one of those carries their receipt). One hash lookup
    per direction serves the three statement checks."""
    if "statement_matches" in frames.cache:
        return frames.cache["statement_matches"]
    statement = statement_payments(frames).copy(deep=False)
    receipts = frames.cache["statement_receipts"]
    ours = pd.concat(
        [
            payout_receipts(frames).assign(kind="payout", direction="withdrawn"),
            collection_receipts(frames).assign(kind="payment", direction="paid in"),
        ],
        ignore_index=True,
    )
    cents = np.zeros(len(ours), dtype=np.int64)
    absent = np.ones(len(ours), dtype=bool)
    recorded = np.zeros(len(statement), dtype=bool)
    for direction in DIRECTIONS:
        side = np.flatnonzero((statement["direction"] == direction).to_numpy())
        mine = (ours["direction"] == direction).to_numpy()
        position = receipts[direction].keys.get_indexer(ours["receipt"].to_numpy()[mine])
        found = position >= 0
        amounts = statement["amount_cents"].array[side].take(position, allow_fill=True)
        cents[mine] = amounts.to_numpy(dtype=np.int64, na_value=0)
        absent[mine] = amounts.isna()
        recorded[side[position[found]]] = True
    ours["statement_cents"] = pd.arrays.IntegerArray(cents, absent)
    statement["recorded"] = recorded
    frames.cache["statement_matches"] = (ours, statement)
    return ours, statement


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


def difference(expected: object, actual: object) -> str:
    """'900.00 short' / '50.00 over': how far actual is from expected."""
    gap = int(actual) - int(expected)
    return f"{format_cents(abs(gap))} {'over' if gap > 0 else 'short'}"


def _age_text(hours: float) -> str:
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _code_meaning(code: object) -> str:
    return meaning(code, "b2c")


# -- the checks ---------------------------------------------------------------------------------


def check_amount_mismatch(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Successful B2C results whose amount differs from their payout's amount."""
    results = matched_results(frames)
    gap = (results["amount_cents"] - results["payout_amount_cents"]).abs()
    differs = results["is_success"] & (gap > options.amount_tolerance_cents).fillna(False)
    rows = results[differs.to_numpy()]
    reasons = [
        f"amount mismatch: requested {format_cents(want)} != paid {format_cents(got)} "
        f"({difference(want, got)})"
        for want, got in zip(rows["payout_amount_cents"], rows["amount_cents"], strict=True)
    ]
    return make_findings(
        "amount_mismatch",
        rows,
        options=options,
        subject="payout " + rows["payout_ref"],
        reasons=reasons,
        reference_id=rows["payout_ref"],
        transaction_id=rows["transaction_id"],
        phone=rows["payout_phone"],
        result_code=rows["result_code"],
        occurred_at=rows["received_at"],
        expected_cents=rows["payout_amount_cents"],
        actual_cents=rows["amount_cents"],
        at_risk_cents=(rows["amount_cents"] - rows["payout_amount_cents"]).abs(),
    )


def check_orphan_callback(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Results (of any kind) that match no payout by any key."""
    results = matched_results(frames)
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
    """Payouts whose latest result (or, with none, whose legacy reason_code) is not 0."""
    results = matched_results(frames)
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
    answered = payouts_at(frames, answer_to[answers])
    by_answer = payouts[payouts_at(frames, latest["payout_pos"].to_numpy())]
    by_reason = payouts[
        ~answered & payouts["reason_code"].notna() & (payouts["reason_code"] != "0")
    ]
    rows = pd.concat([by_answer, by_reason]).sort_index()
    code = lookup_values(rows["id"], latest["result_code"]).fillna(rows["reason_code"])
    when = lookup_values(rows["id"], latest["received_at"]).fillna(rows["completed_at"])
    reasons = [
        f"failed result: expected result code 0 != {value} ({_code_meaning(value)})"
        for value in code
    ]
    return make_findings(
        "failed_result",
        rows,
        options=options,
        subject="payout " + rows["id"],
        reasons=reasons,
        reference_id=rows["id"],
        phone=rows["phone"],
        result_code=code,
        occurred_at=when.fillna(rows["initiated_at"]),
        expected_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"],
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
    return make_findings(
        "stale_pending",
        rows,
        options=options,
        subject="payout " + rows["id"],
        reasons=reasons,
        reference_id=rows["id"],
        phone=rows["phone"],
        occurred_at=rows["initiated_at"],
        expected_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"],
    )


def check_duplicate_callback(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts with more than one result for the same attempt (legacy rows: the same payout)."""
    results = matched_results(frames)
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
            amount_cents=("payout_amount_cents", "first"),
            phone=("payout_phone", "first"),
        )
        .reset_index()
    )
    rows = counted[counted["received"] > 1]
    extra_paid = (rows["successes"] - 1).clip(lower=0)
    reasons = [
        f"duplicate callback: expected 1 result != {received} received ({received - 1} extra)"
        for received in rows["received"]
    ]
    return make_findings(
        "duplicate_callback",
        rows,
        options=options,
        subject="payout " + rows["payout_ref"],
        reasons=reasons,
        reference_id=rows["payout_ref"],
        transaction_id=rows["receipts"].where(rows["receipts"] != ""),
        phone=rows["phone"],
        occurred_at=rows["last_at"],
        expected_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"].fillna(0) * extra_paid,
    )


def check_status_conflict(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Payouts whose final status contradicts their results: marked failed although a result
    says paid, or marked completed although every result failed."""
    results = matched_results(frames)
    answers = _answers(results)
    success = results["is_success"].to_numpy()
    paid = answers & success & results["payout_status"].isin(FAILED_STATUSES).to_numpy()
    unpaid = answers & ~success & results["payout_status"].isin(COMPLETED_STATUSES).to_numpy()
    answer_to = results["payout_pos"].to_numpy()
    in_doubt = pointing_at(answer_to, answer_to[paid | unpaid], len(frames.payouts))
    evidence = results[answers & in_doubt]
    proof = evidence.groupby("payout_ref").agg(
        paid=("is_success", "any"), last_at=("received_at", "max"), row=("payout_pos", "first")
    )
    success = evidence[evidence["is_success"]].drop_duplicates("payout_ref")
    proof["receipt"] = success.set_index("payout_ref")["transaction_id"]
    doubtful = results.loc[unpaid, "payout_ref"].unique()
    conflicting = proof.index.isin(results.loc[paid, "payout_ref"].unique()) | (
        ~proof["paid"] & proof.index.isin(doubtful)
    )
    rows = frames.payouts[payouts_at(frames, proof.loc[conflicting, "row"].to_numpy())]
    proof = proof.drop(columns="row").reindex(rows["id"]).set_index(rows.index)
    reasons = [
        f"status conflict: expected {'completed' if paid else 'failed'} (results say "
        f"{'paid' if paid else 'not paid'}) != recorded {status} "
        f"({'paid but marked failed' if paid else 'marked completed but not paid'})"
        for paid, status in zip(proof["paid"], rows["status"], strict=True)
    ]
    return make_findings(
        "status_conflict",
        rows,
        options=options,
        subject="payout " + rows["id"],
        reasons=reasons,
        reference_id=rows["id"],
        transaction_id=proof["receipt"],
        phone=rows["phone"],
        occurred_at=proof["last_at"],
        expected_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"],
    )


def check_possible_double_payout(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Completed payouts of the same amount to the same user or phone within the window."""
    completed = frames.payouts["status"].isin(COMPLETED_STATUSES).to_numpy()
    payouts = frames.payouts.loc[completed, ["id", "user_id", "phone", "amount_cents"]]
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
    return make_findings(
        "possible_double_payout",
        pairs,
        options=options,
        subject="payout " + pairs["id"],
        reasons=reasons,
        reference_id=pairs["id"],
        transaction_id=pairs["transaction_id"],
        phone=pairs["phone"],
        occurred_at=pairs["when"],
        expected_cents=pairs["amount_cents"],
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
    previous = keyed["id"].shift()
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
    reasons = [
        f"STK amount mismatch: requested {format_cents(want)} != paid {format_cents(got)} "
        f"({difference(want, got)})"
        for want, got in zip(rows["amount_cents"], rows["paid_amount_cents"], strict=True)
    ]
    return make_findings(
        "stk_amount_mismatch",
        rows,
        options=options,
        subject="payment " + rows["id"],
        reasons=reasons,
        reference_id=rows["id"],
        transaction_id=rows["receipt"],
        phone=rows["phone"],
        result_code=rows["result_code"],
        occurred_at=rows["completed_at"].fillna(rows["created_at"]),
        expected_cents=rows["amount_cents"],
        actual_cents=rows["paid_amount_cents"],
        at_risk_cents=(rows["paid_amount_cents"] - rows["amount_cents"]).abs(),
    )


def check_missing_from_statement(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Completed payouts and collections, inside the statement's period, whose receipt the
    statement does not show (or that have no receipt to look for)."""
    if frames.statement is None:
        return empty_findings()
    start, end = frames.statement.period
    if start is None:
        return empty_findings()
    ours, _ = statement_matches(frames)
    in_period = ours["occurred_at"].between(start, end)
    rows = ours[(in_period & ours["statement_cents"].isna()).to_numpy()]
    reasons = [
        f"missing from statement: expected receipt {receipt if isinstance(receipt, str) else '-'} "
        f"({direction} {format_cents(amount)}) in the statement != not found "
        f"({format_cents(amount)} unconfirmed)"
        for receipt, direction, amount in zip(
            rows["receipt"], rows["direction"], rows["amount_cents"], strict=True
        )
    ]
    return make_findings(
        "missing_from_statement",
        rows,
        options=options,
        subject=rows["kind"] + " " + rows["id"],
        reasons=reasons,
        reference_id=rows["id"],
        transaction_id=rows["receipt"],
        phone=rows["phone"],
        occurred_at=rows["occurred_at"],
        expected_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"],
    )


def check_unrecorded_statement_entry(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Statement payouts and collections (inside the period checked) with a receipt we have no
    payout, result or payment for."""
    if frames.statement is None:
        return empty_findings()
    _, rows = statement_matches(frames)
    rows = rows[~rows["recorded"]]
    if options.since is not None:
        rows = rows[rows["completed_at"] >= pd.Timestamp(options.since)]
    if options.until is not None:
        rows = rows[rows["completed_at"] < pd.Timestamp(options.until)]
    results = matched_results(frames)
    everything_we_hold = [
        frames.payouts["transaction_id"],
        results.loc[results["is_success"], "transaction_id"],
        frames.stk["receipt"],
    ]
    # Scan the large receipt lists for the few unrecorded ones (hashing the few, not the many).
    known = pd.concat([held[held.isin(rows["receipt"])] for held in everything_we_hold])
    rows = rows[~rows["receipt"].isin(known)]
    reasons = [
        f"unrecorded statement entry: expected a record of receipt {receipt} != none found "
        f"({direction} {format_cents(amount)} unaccounted)"
        for receipt, direction, amount in zip(
            rows["receipt"], rows["direction"], rows["amount_cents"], strict=True
        )
    ]
    return make_findings(
        "unrecorded_statement_entry",
        rows,
        options=options,
        subject="statement line " + rows["line"].astype("str"),
        reasons=reasons,
        transaction_id=rows["receipt"],
        occurred_at=rows["completed_at"],
        actual_cents=rows["amount_cents"],
        at_risk_cents=rows["amount_cents"],
    )


def check_statement_amount_mismatch(frames: Frames, *, options: Options) -> pd.DataFrame:
    """Receipts on both sides whose amounts differ (payout vs Withdrawn, paid vs Paid In)."""
    if frames.statement is None:
        return empty_findings()
    ours, _ = statement_matches(frames)
    gap = (ours["statement_cents"] - ours["amount_cents"]).abs()
    differs = (gap > options.amount_tolerance_cents).fillna(False).to_numpy()
    rows = ours[differs].rename(columns={"statement_cents": "amount_cents_statement"})
    reasons = [
        f"statement amount mismatch: recorded {format_cents(ours_cents)} != statement "
        f"{format_cents(theirs)} ({difference(ours_cents, theirs)})"
        for ours_cents, theirs in zip(
            rows["amount_cents"], rows["amount_cents_statement"], strict=True
        )
    ]
    return make_findings(
        "statement_amount_mismatch",
        rows,
        options=options,
        subject=rows["kind"] + " " + rows["id"],
        reasons=reasons,
        reference_id=rows["id"],
        transaction_id=rows["receipt"],
        phone=rows["phone"],
        occurred_at=rows["occurred_at"],
        expected_cents=rows["amount_cents"],
        actual_cents=rows["amount_cents_statement"],
        at_risk_cents=(rows["amount_cents_statement"] - rows["amount_cents"]).abs(),
    )


def check_statement_integrity(frames: Frames, *, options: Options) -> pd.DataFrame:
    """The statement's own inconsistencies, found by the parser."""
    if frames.statement is None or not frames.statement.problems:
        return empty_findings()
    problems = pd.DataFrame([problem.__dict__ for problem in frames.statement.problems])
    gap = (problems["actual_cents"] - problems["expected_cents"]).abs()
    subject = problems["line"].map(
        lambda line: "statement" if pd.isna(line) else f"statement line {int(line)}"
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
        at_risk_cents=gap,
    )


# -- registry and runner ------------------------------------------------------------------------

Check = Callable[..., pd.DataFrame]
CHECKS: list[Check] = [
    check_amount_mismatch,
    check_orphan_callback,
    check_failed_result,
    check_stale_pending,
    check_duplicate_callback,
    check_status_conflict,
    check_possible_double_payout,
    check_stk_amount_mismatch,
    check_missing_from_statement,
    check_unrecorded_statement_entry,
    check_statement_amount_mismatch,
    check_statement_integrity,
]
CHECK_NAMES = tuple(check.__name__.removeprefix("check_") for check in CHECKS)


def run_checks(frames: Frames, options: Options | None = None) -> Findings:
    """Every registered check over `frames`, findings concatenated in vocabulary order."""
    options = options or Options()
    parts = [check(frames, options=options) for check in CHECKS]
    parts = [part for part in parts if not part.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else empty_findings()
    return Findings(frame=frame, checks=CHECK_NAMES, match=match_rates(frames))


def match_rates(frames: Frames) -> dict[str, tuple[int, int]]:
    """(matched, total) for results -> payouts, payouts -> results and, with a statement,
    statement entries -> our records."""
    results = matched_results(frames)
    matched = results["payout_ref"].notna().to_numpy()
    answer_to = results["payout_pos"].to_numpy()[matched]
    answered = len(pd.unique(answer_to[answer_to >= 0]))
    rates = {
        "results matched to a payout": (int(matched.sum()), len(results)),
        "payouts with a result": (answered, len(frames.payouts)),
    }
    if frames.statement is not None:
        _, entries = statement_matches(frames)
        rates["statement entries recorded"] = (int(entries["recorded"].sum()), len(entries))
    return rates


def _two(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))
