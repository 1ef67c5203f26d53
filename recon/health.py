"""Payout and collection health: pure functions of the Frames that the analyst notebooks show
(02-payouts-health, 03-collections, and the findings-per-day view of 01-reconciliation).

Every function takes frames (as `recon.frames` normalises them: amounts in int64 cents, times
naive UTC, codes as strings) and returns a DataFrame or plain values; none reads the database
except `load_health`, which goes through the named queries like `recon.load`. Days are
Africa/Nairobi calendar days (recon.rules.NAIROBI), the days the business and the
statement use. KES amounts leave as two-place Decimals; rates are floats in [0, 1].

Definitions (the notebooks' text repeats them):
- success rate: completed / (completed + failed) payouts; open and `review` payouts are not
  counted either way.
- failures by code: result and status callbacks whose result code is not 0, per code, with the
  catalogue's meaning (`recon.codes`) and the number of distinct payouts they answer.
- time to result: from a payout's initiation to its first result callback (kind `result`).
- stale: a `submitting`, `pending` or `unknown` payout older than the threshold at `as_of`
  (recon's `stale_pending` check counts `pending` and `unknown` only); `review` payouts are
  listed with them: automation has given up and a person decides.
- retries: payouts with more than one attempt, by final status.
- STK outcome: 0 paid; 1032 cancelled; 1037 (phone unreachable), 1019 (expired) and failed
  without any answer (expired by the sweep) timeout; `pending`/`unknown` open; other codes failed.
- underpayment: an STK collection paid less than it asked for.
- time to callback: from an STK request to its first callback.
- C2B: paybill and till payments customers made themselves, per Nairobi day they were paid;
  `pulled` are those whose confirmation never came and Pull Transactions found.
- reversed: collections the service reversed (refunded): STK collections in status `reversed`
  and C2B payments with a reversal receipt, with the KES paid (and paid back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from recon.codes import lookup, meaning
from recon.frames import Frames, normalise
from recon.load import LoadError, load_frames, make_engine
from recon.matching import MatchedFrames
from recon.money import decimal_from_cents
from recon.queries import load_queries
from recon.rules import NAIROBI, iso_time_to_utc

PAYOUT_STATUSES = (
    "awaiting_approval",
    "submitting",
    "pending",
    "unknown",
    "completed",
    "failed",
    "review",
    "rejected",
    "expired",
)
OPEN_PAYOUT_STATUSES = frozenset({"submitting", "pending", "unknown"})
STK_STATUSES = ("pending", "unknown", "completed", "amount_mismatch", "failed", "reversed")
STK_OUTCOMES = ("paid", "cancelled", "timeout", "failed", "open")
STK_CANCELLED_CODES = frozenset({"1032"})
STK_TIMEOUT_CODES = frozenset({"1037", "1019"})
STK_CALLBACK_COLUMNS = {
    "id": "id",
    "payment_id": "payment_id",
    "result_code": "result_code",
    "amount_cents": "amount",
    "receipt": "mpesa_receipt",
    "received_at": "received_at",
}


@dataclass
class HealthData:
    """The reconciliation Frames of a period plus the STK callbacks of its collections."""

    frames: Frames
    stk_callbacks: pd.DataFrame


def load_health(
    database_url: str, *, since: datetime | None = None, until: datetime | None = None
) -> HealthData:
    """Frames of [since, until) (see recon.load) and the `stk_callbacks` named query."""
    frames = load_frames(database_url, since=since, until=until)
    query = load_queries()["stk_callbacks"]
    params = {name: _bound(moment) for name, moment in (("since", since), ("until", until))}
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            raw = pd.read_sql(sa.text(query.sql), connection, params=params)
    except sa.exc.SQLAlchemyError as error:
        shown = sa.make_url(database_url).render_as_string(hide_password=True)
        raise LoadError(f"cannot read the database {shown}: {type(error).__name__}") from None
    finally:
        engine.dispose()
    return HealthData(frames=frames, stk_callbacks=normalise(raw, STK_CALLBACK_COLUMNS))


def utc_time(value: str | datetime | None) -> datetime | None:
    """A notebook parameter as naive UTC: None stays None; ISO 8601 text without an offset is
    Africa/Nairobi time (recon.rules.iso_time_to_utc, the CLI's rule)."""
    if value is None or isinstance(value, datetime):
        return value
    return iso_time_to_utc(value)


def write_outputs(
    out_dir: str | Path, tables: dict[str, pd.DataFrame], charts: dict[str, bytes]
) -> list[Path]:
    """`<name>.csv` per table and `<name>` per chart (PNG bytes) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
        written.append(path)
    for name, png in charts.items():
        path = out / name
        path.write_bytes(png)
        written.append(path)
    return written


def _bound(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


# -- shared ---------------------------------------------------------------------------------------


def nairobi_day(times: pd.Series) -> pd.Series:
    """'YYYY-MM-DD' of the Nairobi calendar day of each naive-UTC time (missing stays missing)."""
    return times.dt.tz_localize(UTC).dt.tz_convert(NAIROBI).dt.strftime("%Y-%m-%d")


def kes(cents) -> Decimal:
    """Two-place Decimal KES of a cents total (0.00 for nothing)."""
    total = pd.Series(cents, dtype="Int64").sum()
    return decimal_from_cents(0 if pd.isna(total) else int(total))


def rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def percent(value: float | None) -> str:
    """'87.7%' or '-' when there is nothing to divide."""
    return "-" if value is None or pd.isna(value) else f"{value:.1%}"


def percentiles(seconds: pd.Series) -> dict[str, float | int | None]:
    """count, p50 and p95 (linear interpolation, pandas' default) of durations in seconds."""
    values = pd.Series(seconds, dtype="float64").dropna()
    if values.empty:
        return {"count": 0, "p50": None, "p95": None}
    return {
        "count": len(values),
        "p50": float(values.quantile(0.5)),
        "p95": float(values.quantile(0.95)),
    }


def status_counts(frame: pd.DataFrame, statuses: tuple[str, ...]) -> pd.DataFrame:
    """status, count, kes for every status in `statuses` (zeros included), then any others."""
    extra = sorted(set(frame["status"].dropna()) - set(statuses))
    rows = []
    for status in (*statuses, *extra):
        inside = frame[frame["status"] == status]
        rows.append({"status": status, "count": len(inside), "kes": kes(inside["amount_cents"])})
    return pd.DataFrame(rows, columns=["status", "count", "kes"])


def _per_day(times: pd.Series, labels: pd.Series, order: tuple[str, ...]) -> pd.DataFrame:
    """Counts per Nairobi day (rows) and label (columns in `order`, then any others)."""
    days = nairobi_day(times)
    table = pd.crosstab(days, labels) if len(times) else pd.DataFrame()
    columns = [*order, *sorted(set(table.columns) - set(order))]
    table = table.reindex(columns=columns, fill_value=0).fillna(0).astype("int64")
    table.index.name, table.columns.name = "day", None
    return table


def to_records(frame: pd.DataFrame) -> list[dict]:
    """JSON-able rows: Decimals and times as strings, missing values as None."""

    def plain(value):
        if value is None or (not isinstance(value, str | Decimal) and pd.isna(value)):
            return None
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, pd.Timestamp | datetime):
            return f"{pd.Timestamp(value):%Y-%m-%d %H:%M:%S}"
        return value.item() if hasattr(value, "item") else value

    return [{key: plain(value) for key, value in row.items()} for row in frame.to_dict("records")]


# -- reconciliation findings over time ------------------------------------------------------------


def findings_per_day(findings: pd.DataFrame, checks: tuple[str, ...]) -> pd.DataFrame:
    """Findings per Nairobi day (rows) and check (columns, in vocabulary order); findings
    without a time (statement totals) are left out."""
    timed = findings[findings["occurred_at"].notna()]
    return _per_day(pd.to_datetime(timed["occurred_at"]), timed["check"], tuple(checks))


# -- payouts --------------------------------------------------------------------------------------


def payouts_per_day(payouts: pd.DataFrame) -> pd.DataFrame:
    """Per day of initiation: payouts and KES initiated, completed and KES completed, failed,
    and the day's success rate."""
    frame = payouts.assign(day=nairobi_day(payouts["initiated_at"]))
    rows = []
    for day, group in frame.groupby("day", sort=True):
        completed = group[group["status"] == "completed"]
        failed = int((group["status"] == "failed").sum())
        rows.append(
            {
                "day": day,
                "payouts": len(group),
                "kes_initiated": kes(group["amount_cents"]),
                "completed": len(completed),
                "kes_completed": kes(completed["amount_cents"]),
                "failed": failed,
                "success_rate": rate(len(completed), len(completed) + failed),
            }
        )
    columns = ["day", "payouts", "kes_initiated", "completed", "kes_completed", "failed"]
    return pd.DataFrame(rows, columns=[*columns, "success_rate"])


def payout_statuses_per_day(payouts: pd.DataFrame) -> pd.DataFrame:
    """Payouts per day of initiation (rows) and status (columns, state-machine order)."""
    return _per_day(payouts["initiated_at"], payouts["status"], PAYOUT_STATUSES)


def payout_statuses(payouts: pd.DataFrame) -> pd.DataFrame:
    """status, count, kes for every payout status of the service's state machine."""
    return status_counts(payouts, PAYOUT_STATUSES)


def payout_success_rate(payouts: pd.DataFrame) -> float | None:
    """completed / (completed + failed); None when neither happened."""
    completed = int((payouts["status"] == "completed").sum())
    failed = int((payouts["status"] == "failed").sum())
    return rate(completed, completed + failed)


def failures_by_code(frames: Frames) -> pd.DataFrame:
    """Failed result and status callbacks per result code, most frequent first: how many
    results, how many distinct payouts, the code's meaning and whether it may be retried."""
    results = MatchedFrames.of(frames).matched_results
    failed = results[
        (results["kind"] != "timeout")
        & results["result_code"].notna()
        & (results["result_code"] != "0")
    ]
    rows = []
    for code, group in failed.groupby("result_code", sort=False):
        entry = lookup(code, "b2c")
        rows.append(
            {
                "result_code": code,
                "meaning": meaning(code, "b2c"),
                "results": len(group),
                "payouts": int(group["payout_ref"].nunique()),
                "retryable": bool(entry and entry.retryable),
            }
        )
    frame = pd.DataFrame(
        rows, columns=["result_code", "meaning", "results", "payouts", "retryable"]
    )
    return frame.sort_values(["results", "result_code"], ascending=[False, True], ignore_index=True)


def time_to_result(frames: Frames) -> pd.DataFrame:
    """Per payout with a result callback: initiated_at, first_result_at and seconds between."""
    results = MatchedFrames.of(frames).matched_results
    answers = results[results["payout_ref"].notna() & (results["kind"] == "result")]
    first = answers.groupby("payout_ref")["received_at"].min()
    payouts = frames.payouts.drop_duplicates("id").set_index("id")
    payouts = payouts.loc[payouts.index.intersection(first.index)]
    frame = pd.DataFrame(
        {
            "reference_id": payouts["reference_id"].to_numpy(),
            "payout_id": payouts.index,
            "status": payouts["status"].to_numpy(),
            "initiated_at": payouts["initiated_at"].to_numpy(),
            "first_result_at": first.reindex(payouts.index).to_numpy(),
        }
    )
    frame["seconds"] = (frame["first_result_at"] - frame["initiated_at"]).dt.total_seconds()
    return frame.sort_values("initiated_at", ignore_index=True)


def stale_and_review(
    payouts: pd.DataFrame, *, as_of: datetime | None = None, stale_after_minutes: int = 30
) -> pd.DataFrame:
    """Open payouts older than the threshold at `as_of` (naive UTC; None: now) (why = 'stale')
    and payouts waiting for a person (why = 'review'), oldest first."""
    now = as_of or datetime.now(UTC).replace(tzinfo=None)
    age = pd.Timestamp(now) - payouts["initiated_at"]
    stale = payouts["status"].isin(OPEN_PAYOUT_STATUSES) & (
        age > pd.Timedelta(minutes=stale_after_minutes)
    )
    review = payouts["status"] == "review"
    rows = payouts[stale | review]
    frame = pd.DataFrame(
        {
            "reference_id": rows["reference_id"],
            "payout_id": rows["id"],
            "status": rows["status"],
            "why": review[rows.index].map({True: "review", False: "stale"}),
            "phone": rows["phone"],
            "amount": [decimal_from_cents(value) for value in rows["amount_cents"]],
            "initiated_at": rows["initiated_at"],
            "age_hours": (age[rows.index].dt.total_seconds() / 3600).round(1),
        }
    )
    return frame.sort_values("initiated_at", ignore_index=True)


def retries(frames: Frames) -> pd.DataFrame:
    """Payouts with more than one attempt: attempts, final status and amount."""
    attempts = frames.attempts.groupby("payout_id").size()
    retried = attempts[attempts > 1]
    payouts = frames.payouts.drop_duplicates("id")
    rows = payouts[payouts["id"].isin(retried.index)]
    return pd.DataFrame(
        {
            "reference_id": rows["reference_id"],
            "payout_id": rows["id"],
            "attempts": retried.reindex(rows["id"]).to_numpy(),
            "status": rows["status"],
            "amount": [decimal_from_cents(value) for value in rows["amount_cents"]],
            "initiated_at": rows["initiated_at"],
        }
    ).sort_values("initiated_at", ignore_index=True)


def retry_outcomes(frames: Frames) -> pd.DataFrame:
    """Retried payouts per final status: payouts and KES."""
    retried = retries(frames)
    counts = retried.groupby("status").agg(
        payouts=("payout_id", "size"), kes=("amount", lambda values: sum(values, Decimal("0.00")))
    )
    return counts.reset_index().sort_values(["payouts", "status"], ascending=[False, True])


# -- collections ----------------------------------------------------------------------------------


def stk_outcome(stk: pd.DataFrame) -> pd.Series:
    """paid / cancelled / timeout / failed / open for each STK collection."""
    code, status = stk["result_code"], stk["status"]
    outcome = pd.Series("failed", index=stk.index, dtype=object)
    outcome[code.isin(STK_TIMEOUT_CODES) | (code.isna() & (status == "failed"))] = "timeout"
    outcome[code.isin(STK_CANCELLED_CODES)] = "cancelled"
    outcome[code.isna() & status.isin(("pending", "unknown"))] = "open"
    outcome[code == "0"] = "paid"
    return outcome


def stk_per_day(stk: pd.DataFrame) -> pd.DataFrame:
    """Per day of request: requests and KES requested, paid and KES received, and the rates of
    paid, cancelled and timed-out requests."""
    frame = stk.assign(day=nairobi_day(stk["created_at"]), outcome=stk_outcome(stk))
    rows = []
    for day, group in frame.groupby("day", sort=True):
        paid = group[group["outcome"] == "paid"]
        rows.append(
            {
                "day": day,
                "requests": len(group),
                "kes_requested": kes(group["amount_cents"]),
                "paid": len(paid),
                "kes_received": kes(paid["paid_amount_cents"]),
                **{
                    f"{name}_rate": rate(int((group["outcome"] == name).sum()), len(group))
                    for name in ("paid", "cancelled", "timeout")
                },
            }
        )
    columns = ["day", "requests", "kes_requested", "paid", "kes_received"]
    return pd.DataFrame(rows, columns=[*columns, "paid_rate", "cancelled_rate", "timeout_rate"])


def stk_outcomes_per_day(stk: pd.DataFrame) -> pd.DataFrame:
    """STK requests per day (rows) and outcome (columns: paid, cancelled, timeout, ...)."""
    return _per_day(stk["created_at"], stk_outcome(stk), STK_OUTCOMES)


def stk_statuses(stk: pd.DataFrame) -> pd.DataFrame:
    """status, count, kes (requested) for every STK payment status."""
    return status_counts(stk, STK_STATUSES)


def stk_rates(stk: pd.DataFrame) -> dict[str, float | None]:
    """Share of all requests per outcome (paid, cancelled, timeout, failed, open)."""
    outcome = stk_outcome(stk)
    return {name: rate(int((outcome == name).sum()), len(stk)) for name in STK_OUTCOMES}


def stk_by_code(stk: pd.DataFrame) -> pd.DataFrame:
    """Per result code ('none' when M-Pesa never answered): outcome, meaning, requests, share."""
    frame = stk.assign(outcome=stk_outcome(stk), code=stk["result_code"].fillna("none"))
    rows = []
    for (code, outcome), group in frame.groupby(["code", "outcome"], sort=False):
        if code != "none":
            text = meaning(code, "stk")
        elif outcome == "open":
            text = "no answer yet"
        else:
            text = "no answer from M-Pesa (expired)"
        rows.append(
            {
                "result_code": code,
                "outcome": outcome,
                "meaning": text,
                "requests": len(group),
                "share": rate(len(group), len(stk)),
            }
        )
    frame = pd.DataFrame(rows, columns=["result_code", "outcome", "meaning", "requests", "share"])
    return frame.sort_values(
        ["requests", "result_code"], ascending=[False, True], ignore_index=True
    )


def underpayments(stk: pd.DataFrame) -> pd.DataFrame:
    """Collections paid less than requested: requested, paid and short (KES), oldest first."""
    rows = stk[stk["paid_amount_cents"].notna() & (stk["paid_amount_cents"] < stk["amount_cents"])]
    return pd.DataFrame(
        {
            "checkout_request_id": rows["checkout_request_id"],
            "payment_id": rows["id"],
            "phone": rows["phone"],
            "receipt": rows["receipt"],
            "requested": [decimal_from_cents(value) for value in rows["amount_cents"]],
            "paid": [decimal_from_cents(value) for value in rows["paid_amount_cents"]],
            "short": [
                decimal_from_cents(value)
                for value in rows["amount_cents"] - rows["paid_amount_cents"]
            ],
            "completed_at": rows["completed_at"],
        }
    ).sort_values("completed_at", ignore_index=True)


def time_to_callback(stk: pd.DataFrame, callbacks: pd.DataFrame) -> pd.DataFrame:
    """Per collection with a callback: outcome, created_at, first_callback_at, seconds."""
    first = callbacks.groupby("payment_id")["received_at"].min()
    answered = stk[stk["id"].isin(first.index)]
    frame = pd.DataFrame(
        {
            "checkout_request_id": answered["checkout_request_id"],
            "payment_id": answered["id"],
            "outcome": stk_outcome(stk)[answered.index],
            "created_at": answered["created_at"],
            "first_callback_at": first.reindex(answered["id"]).to_numpy(),
        }
    )
    frame["seconds"] = (frame["first_callback_at"] - frame["created_at"]).dt.total_seconds()
    return frame.sort_values("created_at", ignore_index=True)


# -- C2B ------------------------------------------------------------------------------------------


def c2b_per_day(c2b: pd.DataFrame) -> pd.DataFrame:
    """Per Nairobi day paid: C2B payments and KES received, and how many of them Pull
    Transactions found (their confirmation missed). Malformed rows (no receipt) are left out."""
    c2b = c2b[c2b["receipt"].notna().to_numpy()]
    frame = c2b.assign(day=nairobi_day(c2b["paid_at"].fillna(c2b["received_at"])))
    rows = [
        {
            "day": day,
            "payments": len(group),
            "kes_received": kes(group["amount_cents"]),
            "pulled": int((group["source"] == "pull").sum()),
        }
        for day, group in frame.groupby("day", sort=True)
    ]
    return pd.DataFrame(rows, columns=["day", "payments", "kes_received", "pulled"])


# -- reversals ------------------------------------------------------------------------------------

REVERSED_COLUMNS = ["kind", "payment_id", "receipt", "reversal_receipt", "kes", "paid_at"]


def reversed_collections(stk: pd.DataFrame, c2b: pd.DataFrame) -> pd.DataFrame:
    """Collections the service reversed, oldest payment first: kind (stk or c2b), the receipt
    undone, the reversal's receipt and the KES paid back (what was paid)."""
    stk = stk[(stk["status"] == "reversed").to_numpy()]
    c2b = c2b[c2b["reversal_receipt"].notna().to_numpy()]
    parts = [
        pd.DataFrame(
            {
                "kind": kind,
                "payment_id": rows["id"],
                "receipt": rows["receipt"],
                "reversal_receipt": rows["reversal_receipt"],
                "kes": [decimal_from_cents(value) for value in cents],
                "paid_at": paid_at,
            }
        )
        for kind, rows, cents, paid_at in (
            ("stk", stk, stk["paid_amount_cents"].fillna(stk["amount_cents"]), stk["completed_at"]),
            ("c2b", c2b, c2b["amount_cents"], c2b["paid_at"].fillna(c2b["received_at"])),
        )
        if len(rows)
    ]
    if not parts:
        return pd.DataFrame(columns=REVERSED_COLUMNS)
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values("paid_at", ignore_index=True)[REVERSED_COLUMNS]
