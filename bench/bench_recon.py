"""Benchmark of the reconciliation toolkit against a bare pandas outer merge, in one run.

Generates N payouts, N results and an N-row statement (in memory and a temporary CSV, not the
database), then times, as medians of --repeat runs:
  parse    the statement CSV -> Statement (target: <= 2 s per million rows)
  checks   run_checks over the frames (target: <= 2x the bare merge)
  merge    a bare pandas outer merge of the same keys: payouts x results on
           OriginatorConversationID and payouts x statement on the receipt
and prints the ratios and the process's peak resident memory (target: <= 1.5 GB).

    python bench/bench_recon.py              # 1,000,000 rows
    python bench/bench_recon.py --rows 100000
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recon.checks import Options, run_checks  # noqa: E402
from recon.frames import Frames  # noqa: E402
from recon.statement import parse_statement  # noqa: E402

START = pd.Timestamp("2025-11-01 00:00:00")
AS_OF = pd.Timestamp("2025-11-13 00:00:00")
ANOMALY_RATE = 0.01  # share of rows given each kind of problem


def ids(prefix: str, count: int) -> pd.Series:
    return prefix + pd.Series(np.arange(count)).astype("str").str.zfill(8)


def make_payouts(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    amounts = rng.integers(10, 150_000, rows) * 100
    status = np.where(rng.random(rows) < ANOMALY_RATE, "pending", "completed")
    status = np.where(rng.random(rows) < ANOMALY_RATE, "failed", status)
    initiated = START + pd.to_timedelta(rng.integers(0, 10 * 86_400, rows), unit="s")
    return pd.DataFrame(
        {
            "id": ids("p", rows),
            "user_id": ids("u", rows),
            "phone": "2547" + pd.Series(rng.integers(10**7, 10**8, rows)).astype("str"),
            "amount_cents": pd.array(amounts, dtype="Int64"),
            "status": status,
            "reference_id": pd.Series(pd.NA, index=range(rows), dtype="str"),
            "transaction_id": ids("TK", rows),
            "reason_code": pd.Series(pd.NA, index=range(rows), dtype="str"),
            "ocid": ids("oc-", rows),
            "conversation_id": ids("AG_", rows),
            "paid_amount_cents": pd.array([pd.NA] * rows, dtype="Int64"),
            "initiated_at": initiated.astype("datetime64[us]"),
            "completed_at": (initiated + pd.Timedelta(seconds=5)).astype("datetime64[us]"),
        }
    )


def make_results(payouts: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    rows = len(payouts)
    amounts = payouts["amount_cents"].to_numpy(dtype="int64").copy()
    amounts[rng.random(rows) < ANOMALY_RATE] += 100
    ocid = payouts["ocid"].copy()
    orphan = rng.random(rows) < ANOMALY_RATE
    ocid[orphan] = "unknown-" + ocid[orphan]
    receipts = payouts["transaction_id"].copy()
    receipts[orphan] = "TR" + receipts[orphan].str[2:]
    code = np.where(payouts["status"] == "failed", "2001", "0")
    return pd.DataFrame(
        {
            "id": ids("r", rows),
            "transaction_id": receipts,
            "ocid": ocid,
            "conversation_id": pd.Series(pd.NA, index=range(rows), dtype="str"),
            "result_code": code,
            "result_description": pd.Series(pd.NA, index=range(rows), dtype="str"),
            "amount_cents": pd.array(amounts, dtype="Int64"),
            "phone": payouts["phone"],
            "reference_id": pd.Series(pd.NA, index=range(rows), dtype="str"),
            "received_at": payouts["completed_at"],
            "kind": "result",
            "payout_id": pd.Series(pd.NA, index=range(rows), dtype="str"),
        }
    )


def write_statement(payouts: pd.DataFrame, path: Path, rng: np.random.Generator) -> None:
    """One Withdrawn row per completed payout (a few amounts off, a few unknown receipts), in
    the portal's CSV layout with a consistent running balance."""
    rows = len(payouts)
    withdrawn = payouts["amount_cents"].to_numpy(dtype="int64").copy()
    withdrawn[rng.random(rows) < ANOMALY_RATE] -= 500
    receipts = payouts["transaction_id"].copy()
    unknown = rng.random(rows) < ANOMALY_RATE
    receipts[unknown] = "TX" + receipts[unknown].str[2:]
    order = np.argsort(payouts["completed_at"].to_numpy())
    withdrawn, receipts = withdrawn[order], receipts.to_numpy()[order]
    local = (payouts["completed_at"].to_numpy()[order] + np.timedelta64(3, "h")).astype(
        "datetime64[s]"
    )
    opening = int(withdrawn.sum()) + 10_000_000
    balance = opening - np.cumsum(withdrawn)
    times = pd.Series(local).dt.strftime("%d-%m-%Y %H:%M:%S")
    frame = pd.DataFrame(
        {
            "Receipt No.": receipts,
            "Completion Time": times,
            "Initiation Time": times,
            "Details": "Business Payment to 2547****000",
            "Transaction Status": "Completed",
            "Paid In": "",
            "Withdrawn": _money(-withdrawn),
            "Balance": _money(balance),
            "Balance Confirmed": "true",
            "Reason Type": "Business Payment to Customer via API",
            "Other Party Info": "",
            "Linked Transaction ID": "",
            "A/C No.": "",
        }
    )
    frame.to_csv(path, index=False)


def _money(cents: np.ndarray) -> pd.Series:
    """'-1,234.50' strings with thousands separators, as the portal writes them."""
    sign = np.where(cents < 0, "-", "")
    whole = pd.Series(np.abs(cents) // 100).map("{:,}".format)
    part = pd.Series(np.abs(cents) % 100).astype("str").str.zfill(2)
    return sign + whole + "." + part


def bare_merge(payouts: pd.DataFrame, results: pd.DataFrame, statement) -> int:
    joined = payouts[["ocid", "amount_cents"]].merge(
        results[["ocid", "amount_cents"]], on="ocid", how="outer"
    )
    listed = statement.entries[["receipt", "withdrawn_cents"]]
    matched = payouts[["transaction_id", "amount_cents"]].merge(
        listed, left_on="transaction_id", right_on="receipt", how="outer"
    )
    return len(joined) + len(matched)


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def traced_peak_mb(path: Path, payouts: pd.DataFrame, results: pd.DataFrame) -> float:
    """Peak memory allocated while parsing the statement and running the checks; the input
    frames already exist. tracemalloc slows allocation, so this run is not timed."""
    tracemalloc.start()
    statement = parse_statement(path)
    frames = Frames.from_database_frames(statement=statement)
    frames.payouts, frames.results = payouts, results
    run_checks(frames, Options(as_of=AS_OF.to_pydatetime()))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def peak_memory_mb() -> float:
    # ru_maxrss is kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)

    payouts = make_payouts(args.rows, rng)
    results = make_results(payouts, rng)
    empty = pd.DataFrame()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "statement.csv"
        write_statement(payouts, path, rng)
        print(
            f"rows: {args.rows:,} payouts, {len(results):,} results, "
            f"{args.rows:,}-row statement ({path.stat().st_size / 1e6:.0f} MB CSV)"
        )
        base_memory = peak_memory_mb()
        parse_times, check_times, merge_times = [], [], []
        for _ in range(args.repeat):
            seconds, statement = timed(parse_statement, path)
            parse_times.append(seconds)
            frames = Frames.from_database_frames(statement=statement)
            frames.payouts, frames.results = payouts, results
            frames.attempts = Frames.from_records().attempts
            frames.stk = Frames.from_records().stk
            seconds, findings = timed(run_checks, frames, Options(as_of=AS_OF.to_pydatetime()))
            check_times.append(seconds)
            seconds, _ = timed(bare_merge, payouts, results, statement)
            merge_times.append(seconds)
            del frames, statement
        recon_peak = traced_peak_mb(path, payouts, results)
    del empty
    parse, checks, merge = (statistics.median(t) for t in (parse_times, check_times, merge_times))
    per_million = parse / (args.rows / 1e6)
    print(f"statement parse: {parse:6.2f} s  ({per_million:.2f} s per million rows; target <= 2)")
    print(f"checks:          {checks:6.2f} s")
    print(f"bare merge:      {merge:6.2f} s")
    print(f"checks / merge:  {checks / merge:6.2f} x  (target <= 2)")
    print(
        f"peak memory:     {recon_peak:6.0f} MB  allocated by parse + checks (tracemalloc, "
        "a separate untimed run; target <= 1,536)"
    )
    print(
        f"process peak:    {peak_memory_mb():6.0f} MB  RSS incl. the generated data "
        f"({base_memory:.0f} MB once it was generated)"
    )
    print("findings:", ", ".join(f"{k} {v:,}" for k, v in findings.counts().items() if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
