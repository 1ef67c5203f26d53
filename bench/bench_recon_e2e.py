"""Reconciliation end to end: `python -m recon` against a database, as an analyst runs it.

Fills a fresh migrated database (MariaDB by default) with N payouts, one attempt and one result
each, and writes an N-row statement CSV, all from bench/bench_recon.py's generators, loaded in
bulk (LOAD DATA LOCAL INFILE on MariaDB; not timed). Then:
  command    `python -m recon ... --out DIR` as a child process, --repeat times: wall time and
             peak RSS (os.wait4), and any stage lines the command prints on stderr
  stages     the same calls in this process (parse, load, checks, and each report file),
             --repeat times: median seconds and the peak RSS each stage reached
  bare read  pandas.read_sql of the same columns of the same tables for the same period
and prints the ratio load / bare read. Targets: command <= 30 s and <= 2 GiB, load <= 2x the bare
read.

    python bench/bench_recon_e2e.py                            # 1,000,000 rows on MariaDB
    python bench/bench_recon_e2e.py --rows 2000 --database sqlite

The MariaDB scratch database is made (and dropped) on BENCH_MARIADB_SERVER (default
mysql+pymysql://root@127.0.0.1:3306).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_recon import AS_OF, make_payouts, make_results, write_statement  # noqa: E402
from common import PROJECT_DIR, machine, median, migrated  # noqa: E402

from recon.checks import Options, run_checks  # noqa: E402
from recon.cli import parse_time  # noqa: E402
from recon.load import load_frames, make_engine  # noqa: E402
from recon.report import Report  # noqa: E402
from recon.statement import parse_statements  # noqa: E402

MARIADB_SERVER = sa.make_url(
    os.environ.get("BENCH_MARIADB_SERVER", "mysql+pymysql://root@127.0.0.1:3306")
)
# November in Nairobi time, as an analyst types it; the generated traffic is in its first days.
SINCE, UNTIL, AS_OF_TEXT = "2025-11-01", "2025-12-01", f"{AS_OF:%Y-%m-%dT%H:%M}Z"
COMMAND_SECONDS, COMMAND_MIB, LOAD_RATIO = 30, 2048, 2
REPORT_FILES = ("report.html", "findings.csv", "summary.csv", "report.xlsx")
BARE_QUERIES = {
    "payouts": "SELECT id, user_id, phone_number, amount, status, reference_id, transaction_id, "
    "reason_code, originator_conversation_id, conversation_id, paid_amount, initiated_at, "
    "completed_at FROM b2c_payments WHERE initiated_at >= :since AND initiated_at < :until",
    "attempts": "SELECT a.payout_id, a.attempt_no, a.originator_conversation_id, "
    "a.conversation_id, a.status, a.receipt FROM b2c_payout_attempts a",
    "results": "SELECT id, transaction_id, originator_conversation_id, conversation_id, "
    "result_code, result_code_text, result_description, transaction_amount, receiver_phone, "
    "reference_id, received_at, kind, payout_id FROM b2c_payment_callbacks "
    "WHERE received_at >= :since AND received_at < :until",
    "stk": "SELECT id, user_id, phone_number, amount, status, result_code, created_at, "
    "completed_at, paid_amount, mpesa_receipt FROM payments WHERE method = 'mpesa' "
    "AND created_at >= :since AND created_at < :until",
}


# --- the data ---------------------------------------------------------------------------------


def table_rows(rows: int, seed: int = 7) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """({table: rows with the database's columns}, payouts in the frame's shape) from the
    recon benchmark's generators; amounts as '123.00' text, times as naive UTC."""
    rng = np.random.default_rng(seed)
    payouts = make_payouts(rows, rng)
    results = make_results(payouts, rng)
    tables = {
        "b2c_payments": _payout_rows(payouts),
        "b2c_payout_attempts": _attempt_rows(payouts),
        "b2c_payment_callbacks": _callback_rows(results),
    }
    return tables, payouts


def _payout_rows(payouts: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": payouts["id"],
            "user_id": payouts["user_id"],
            "user_type": "trainer",
            "phone_number": payouts["phone"],
            "amount": _shillings(payouts["amount_cents"]),
            "reference_id": "ref-" + payouts["id"],
            "transaction_id": payouts["transaction_id"].where(payouts["status"] == "completed"),
            "status": payouts["status"],
            "initiated_at": payouts["initiated_at"],
            "completed_at": payouts["completed_at"].where(payouts["status"] == "completed"),
            "originator_conversation_id": payouts["ocid"],
            "conversation_id": payouts["conversation_id"],
            "command_id": "BusinessPayment",
            "attempt_count": 1,
            "check_count": 0,
        }
    )


def _attempt_rows(payouts: pd.DataFrame) -> pd.DataFrame:
    completed = payouts["status"] == "completed"
    return pd.DataFrame(
        {
            "id": "a" + payouts["id"],
            "payout_id": payouts["id"],
            "attempt_no": 1,
            "originator_conversation_id": payouts["ocid"],
            "conversation_id": payouts["conversation_id"],
            "status": payouts["status"].replace({"pending": "accepted"}),
            "response_code": "0",
            "created_at": payouts["initiated_at"],
            "sent_at": payouts["initiated_at"],
            "answered_at": payouts["completed_at"],
            "receipt": payouts["transaction_id"].where(completed),
        }
    )


def _callback_rows(results: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": results["id"],
            "transaction_id": results["transaction_id"],
            "originator_conversation_id": results["ocid"],
            "result_code": results["result_code"].astype("int64"),
            "result_code_text": results["result_code"],
            "transaction_amount": _shillings(results["amount_cents"]),
            "receiver_phone": results["phone"],
            "received_at": results["received_at"],
            "result_type": "0",
            "kind": results["kind"],
            "outcome": "applied",
        }
    )


def _shillings(cents: pd.Series) -> pd.Series:
    """Exact '1234.50' text for the DECIMAL(15,2) columns (no float on the way)."""
    whole = cents.to_numpy(dtype="int64")
    return (
        pd.Series(whole // 100).astype("str")
        + "."
        + pd.Series(whole % 100).astype("str").str.zfill(2)
    )


# --- the database -----------------------------------------------------------------------------


@contextmanager
def fresh_database(kind: str, workdir: Path):
    """The URL of a new migrated database, dropped afterwards."""
    if kind == "sqlite":
        yield migrated(f"sqlite:///{workdir / 'recon.db'}")
        return
    name = f"recon_e2e_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB_SERVER)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield migrated(MARIADB_SERVER.set(database=name).render_as_string(False))
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def bulk_load(database_url: str, tables: dict[str, pd.DataFrame], workdir: Path) -> None:
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        _sqlite_load(url.database, tables)
        return
    engine = sa.create_engine(url, connect_args={"local_infile": True})
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET unique_checks = 0, foreign_key_checks = 0")
            for table, frame in tables.items():
                _load_data_infile(connection, table, frame, workdir / f"{table}.tsv")
    finally:
        engine.dispose()


def _load_data_infile(connection, table: str, frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(
        path, sep="\t", header=False, index=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S"
    )
    columns = ", ".join(frame.columns)
    # The table, path and columns are this script's own constants, never input.
    connection.exec_driver_sql(
        f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table} "  # nosec B608
        f"FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' ({columns})"
    )


def _sqlite_load(path: str, tables: dict[str, pd.DataFrame]) -> None:
    with sqlite3.connect(path) as connection:
        for table, frame in tables.items():
            text = frame.astype(object).where(frame.notna(), None)
            for column in frame.columns:
                if column.endswith("_at"):
                    text[column] = frame[column].dt.strftime("%Y-%m-%d %H:%M:%S")
                    text[column] = text[column].where(frame[column].notna(), None)
            marks = ", ".join("?" * len(frame.columns))
            connection.executemany(
                f"INSERT INTO {table} ({', '.join(frame.columns)}) VALUES ({marks})",  # nosec B608
                text.itertuples(index=False, name=None),
            )


# --- the command, as an analyst runs it -------------------------------------------------------


def cli_arguments(database_url: str, statement: Path, out: Path) -> list[str]:
    return [
        *("--database-url", database_url, "--statement", str(statement)),
        *("--since", SINCE, "--until", UNTIL, "--as-of", AS_OF_TEXT, "--out", str(out)),
    ]


def run_command(arguments: list[str], workdir: Path) -> tuple[float, float, int, list[str]]:
    """(wall seconds, peak RSS MiB, exit status, stderr lines) of `python -m recon` run once."""
    stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "recon", *arguments],
            cwd=PROJECT_DIR,
            stdout=stdout,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = stderr_path.read_text(errors="replace").splitlines()
    return seconds, usage.ru_maxrss / 1024, child.returncode, lines


# --- the same stages in this process ----------------------------------------------------------


class StagePeaks:
    """Seconds and peak RSS per stage: the kernel's high-water mark, reset before each stage."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self.peak_mib: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        _reset_peak_rss()
        started = time.perf_counter()
        yield
        self.seconds.setdefault(name, []).append(time.perf_counter() - started)
        self.peak_mib[name] = max(self.peak_mib.get(name, 0), _peak_rss_mib())


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # not Linux: peaks are then since the process started
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stages_in_process(database_url: str, statement: Path, out: Path, peaks: StagePeaks) -> Report:
    """What `python -m recon` does (recon.api.build_report, then Report.write), stage by stage."""
    since, until, as_of = parse_time(SINCE), parse_time(UNTIL), parse_time(AS_OF_TEXT)
    with peaks.stage("parse statement"):
        parsed = parse_statements([statement])
    with peaks.stage("load database"):
        frames = load_frames(database_url, since=since, until=until, statement=parsed)
    options = Options(as_of=as_of, since=since, until=until)
    with peaks.stage("checks"):
        findings = run_checks(frames, options)
    del frames
    report = Report(findings=findings, options=options, sources={"database": "bench"})
    with peaks.stage("report text"):
        report.render()
    with peaks.stage("report html"):
        report.to_html()
    with peaks.stage("report csv"):
        report.findings_csv()
    with peaks.stage("report xlsx"):
        report.xlsx_bytes()
    with peaks.stage("write all files"):
        report.write(out)
    return report


def bare_read(database_url: str, peaks: StagePeaks) -> int:
    """pandas.read_sql of the columns the named queries return, on one connection."""
    params = {
        "since": parse_time(SINCE).strftime("%Y-%m-%d %H:%M:%S"),
        "until": parse_time(UNTIL).strftime("%Y-%m-%d %H:%M:%S"),
    }
    engine = make_engine(database_url)
    rows = 0
    with peaks.stage("bare read_sql"), engine.connect() as connection:
        for sql in BARE_QUERIES.values():
            rows += len(pd.read_sql(sa.text(sql), connection, params=params))
    engine.dispose()
    return rows


# --- the figures ------------------------------------------------------------------------------


def print_command(runs: list[tuple[float, float, int, list[str]]]) -> None:
    seconds, peaks = [run[0] for run in runs], [run[1] for run in runs]
    verdict = (
        "met" if median(seconds) <= COMMAND_SECONDS and max(peaks) <= COMMAND_MIB else "MISSED"
    )
    print(
        f"command:         {median(seconds):7.2f} s  (runs {', '.join(f'{s:.1f}' for s in seconds)}"
        f"; target <= {COMMAND_SECONDS})  peak RSS {max(peaks):,.0f} MiB (target <= "
        f"{COMMAND_MIB:,})  exit {runs[-1][2]}  {verdict}"
    )
    for line in runs[-1][3]:
        print(f"  stderr: {line}")


def print_stages(peaks: StagePeaks) -> None:
    for name, seconds in peaks.seconds.items():
        print(f"  {name:<16} {median(seconds):7.2f} s  peak RSS {peaks.peak_mib[name]:6,.0f} MiB")
    ratio = median(peaks.seconds["load database"]) / median(peaks.seconds["bare read_sql"])
    verdict = "met" if ratio <= LOAD_RATIO else "MISSED"
    print(f"load / bare:     {ratio:7.2f} x  (target <= {LOAD_RATIO})  {verdict}")


def print_reports(out: Path, report: Report) -> bool:
    """Whether the command wrote the HTML, CSV and XLSX reports and its summary is the one the
    in-process pass built."""
    sizes = {name: (out / name).stat().st_size for name in REPORT_FILES if (out / name).is_file()}
    same = "summary.csv" in sizes and (out / "summary.csv").read_bytes() == report.summary_csv()
    print(
        "reports:",
        ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items()),
        f"; the command's summary.csv {'equals' if same else 'DIFFERS FROM'} the in-process one",
    )
    return len(sizes) == len(REPORT_FILES) and same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=("mariadb", "sqlite"), default="mariadb")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}, {args.database}; {datetime.now():%Y-%m-%d %H:%M}")
    with (
        tempfile.TemporaryDirectory() as scratch,
        fresh_database(args.database, Path(scratch)) as url,
    ):
        workdir = Path(scratch)
        started = time.perf_counter()
        tables, payouts = table_rows(args.rows)
        statement = workdir / "statement.csv"
        write_statement(payouts, statement, np.random.default_rng(8))
        bulk_load(url, tables, workdir)
        del tables, payouts
        loaded = time.perf_counter() - started
        print(
            f"rows: {args.rows:,} payouts, attempts and results; {args.rows:,}-row statement "
            f"({statement.stat().st_size / 1e6:.0f} MB); generated and loaded in {loaded:.0f} s"
        )
        arguments = cli_arguments(url, statement, workdir / "out")
        runs = [run_command(arguments, workdir) for _ in range(args.repeat)]
        print_command(runs)
        peaks = StagePeaks()
        print("in process (medians):")
        for _ in range(args.repeat):
            bare_read(url, peaks)
            report = stages_in_process(url, statement, workdir / "out-in-process", peaks)
        print_stages(peaks)
        counts = report.findings.counts()
        print(
            "findings:", ", ".join(f"{name} {count:,}" for name, count in counts.items() if count)
        )
        agrees = print_reports(workdir / "out", report)
    return 0 if agrees and all(run[2] in (0, 1) for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
