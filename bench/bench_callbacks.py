"""Callback ingestion: B2C result callbacks per second and p50/p99 latency at 32 concurrent
keep-alive connections against the real app, beside an empty Bottle handler, both served by
the service's own waitress server (waitress_server.create with WAITRESS_OPTIONS and
WAITRESS_THREADS) in a child process, in the same run, on SQLite and MariaDB. The load comes
from bench/load.py's Python generator (bounded by --callbacks and --seconds) or, with --load
wrk, from wrk (bounded by --seconds; --callbacks must then cover a whole run, or the run fails
asking for more).

Every callback is a genuine success result for its own `pending` payout, so each one is
journaled (fsync), matched, applied by compare-and-set and stored. The service answers once a
callback is journaled, so latency is to that answer; its batch is applied on a second thread
while the next is journaled, and the journaling waits once a batch's worth is waiting to be
applied, so the rate covers the whole work; the run fails unless every answered result
completed its payout. Figures are medians of --runs runs; the ratio is
against the empty handler's median rate. Targets (issue 9): >= 1,000
callbacks/s on MariaDB, >= 1/3 of the empty handler, p99 < 100 ms, zero errors.

    python bench/bench_callbacks.py                        # SQLite and MariaDB, 3 runs each
    python bench/bench_callbacks.py --databases sqlite --callbacks 2000 --runs 1
    python bench/bench_callbacks.py --load wrk --callbacks 12000 --seconds 5
    python bench/bench_callbacks.py --serve app --database-url ... --port N   (child mode)

MariaDB scratch databases are made on BENCH_MARIADB_SERVER (default
mysql+pymysql://root@127.0.0.1:3306, no database), which bench_initiation.py shares.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CALLBACK_TOKEN,
    free_port,
    machine,
    median,
    migrated,
    wait_for,
)
from load import run_load, run_wrk  # noqa: E402

import service  # noqa: E402
from mpesa_service.storage import utcnow  # noqa: E402

# The MariaDB server the benchmarks make (and drop) their scratch databases on.
MARIADB_SERVER = sa.make_url(
    os.environ.get("BENCH_MARIADB_SERVER", "mysql+pymysql://root@127.0.0.1:3306")
)
RESULT_PATH = f"/hooks/b2c/result/{CALLBACK_TOKEN}"
HEADERS = {"Content-Type": "application/json"}
CONNECTIONS = 32


# --- the servers (child mode) ----------------------------------------------------------------


def empty_app():
    import bottle

    app = bottle.Bottle()

    @app.post("/hooks/b2c/result/<token>")
    def acknowledge(token):
        bottle.request.body.read()
        return {"ResultCode": 0, "ResultDesc": "Accepted"}

    return app


def service_app(database_url: str, journal: str, daraja_url: str = "", port: int = 0):
    settings = service.load_settings(
        {
            "MPESA_BASE_URL": daraja_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "DATABASE_URL": database_url,
            "CALLBACK_TOKEN": CALLBACK_TOKEN,
            "CALLBACK_JOURNAL_PATH": journal,
            "API_KEYS": "bench-key",
            "LOG_LEVEL": "WARNING",
        },
        env_file=Path("/nonexistent"),
    )
    return service.make_app(service.build_service(settings))


def serve(which: str, port: int, database_url: str, journal: str, daraja_url: str = "") -> None:
    import logging

    from mpesa_service.entrypoint import WAITRESS_OPTIONS, WAITRESS_THREADS
    from mpesa_service.throughput import waitress_server

    logging.basicConfig(level=logging.ERROR)
    app = service_app(database_url, journal, daraja_url, port) if which == "app" else empty_app()
    waitress_server.create(
        app, host="127.0.0.1", port=port, threads=WAITRESS_THREADS, **WAITRESS_OPTIONS
    ).run()


class ServedApp:
    """This script (or `script`, another tree's copy of it) in child mode serving one app;
    `peak_mib()` reads its VmHWM and `cpu_seconds()` the CPU it has used."""

    def __init__(
        self, which: str, database_url="", journal="", daraja_url="", script: str = __file__
    ):
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                script,
                "--serve",
                which,
                "--port",
                str(self.port),
                "--database-url",
                database_url,
                "--journal",
                journal,
                "--daraja-url",
                daraja_url,
            ]
        )
        wait_for(self._listening, 30)

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def peak_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User and system CPU of all its threads so far (Linux's /proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- the data ---------------------------------------------------------------------------------


def fresh_database(kind: str, workdir: Path) -> tuple[str, callable]:
    """(URL of a new migrated database, a function dropping it)."""
    if kind == "sqlite":
        return migrated(f"sqlite:///{workdir / 'bench.db'}"), lambda: None
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(MARIADB_SERVER)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")

    def drop():
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()

    return migrated(MARIADB_SERVER.set(database=name).render_as_string(False)), drop


def seed_pending_payouts(database_url: str, count: int) -> list[tuple[str, str]]:
    """`count` accepted payouts waiting for their result: [(OriginatorConversationID,
    ConversationID)]."""
    now = utcnow()
    payouts, attempts, ids = [], [], []
    for _ in range(count):
        payout_id, ocid = str(uuid.uuid4()), f"b2c-{uuid.uuid4()}"
        conversation = f"AG_bench_{uuid.uuid4().hex[:16]}"
        ids.append((ocid, conversation))
        payouts.append(
            dict(
                id=payout_id,
                user_id="bench",
                phone_number="254712345678",
                amount=1000,
                reference_id=f"payout_ref_{uuid.uuid4().hex}",
                status="pending",
                originator_conversation_id=ocid,
                conversation_id=conversation,
                attempt_count=1,
                initiated_at=now,
                updated_at=now,
            )
        )
        attempts.append(
            dict(
                id=str(uuid.uuid4()),
                payout_id=payout_id,
                attempt_no=1,
                status="accepted",
                originator_conversation_id=ocid,
                conversation_id=conversation,
                created_at=now,
                sent_at=now,
            )
        )
    engine = service.make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(service.b2c_payments.insert(), payouts)
        conn.execute(service.b2c_payout_attempts.insert(), attempts)
    engine.dispose()
    return ids


def result_callback(ocid: str, conversation: str, receipt: str) -> bytes:
    return json.dumps(
        {
            "Result": {
                "ResultType": 0,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "OriginatorConversationID": ocid,
                "ConversationID": conversation,
                "TransactionID": receipt,
                "ResultParameters": {
                    "ResultParameter": [
                        {"Key": "TransactionAmount", "Value": 1000},
                        {"Key": "TransactionReceipt", "Value": receipt},
                        {"Key": "ReceiverPartyPublicName", "Value": "254712345678 - JANE DOE"},
                        {"Key": "TransactionCompletedDateTime", "Value": "05.11.2025 14:31:07"},
                    ]
                },
                "ReferenceData": {"ReferenceItem": {"Key": "QueueTimeoutURL", "Value": "x"}},
            }
        }
    ).encode()


def callback_requests(ids: list[tuple[str, str]], first: int = 0) -> list:
    """One success result per payout, each with its own receipt (numbered from `first`, so
    that later runs do not repeat earlier runs' receipts and turn into conflicts)."""
    return [
        (RESULT_PATH, result_callback(ocid, conv, f"TK{first + index:08d}"), HEADERS)
        for index, (ocid, conv) in enumerate(ids)
    ]


def completed_payouts(database_url: str) -> int:
    engine = service.make_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(service.b2c_payments.c.status == "completed")
        ).scalar_one()
    engine.dispose()
    return count


# --- the measurement --------------------------------------------------------------------------


def measure(app: ServedApp, requests_: list, args, repeat_ok: bool = False) -> dict:
    """One run's figures; `repeat_ok` lets wrk send a body again (the empty handler's)."""
    if args.load == "wrk":
        load = run_wrk(app.port, requests_, CONNECTIONS, args.seconds, repeat_ok=repeat_ok)
    else:
        load = run_load(app.port, requests_, CONNECTIONS, processes=2, seconds=args.seconds)
    return {
        "rate": load.rate,
        "p50_ms": load.p50 * 1000,
        "p99_ms": load.p99 * 1000,
        "errors": load.errors,
        "requests": load.requests,
    }


def completions_settled(database_url: str, answered: int, timeout: float = 10) -> int:
    """Completed payouts once the last answered callbacks are applied too (the service answers
    a callback once it is journaled and applies it right after)."""
    with contextlib.suppress(TimeoutError):  # check_completed reports any shortfall
        wait_for(lambda: completed_payouts(database_url) >= answered, timeout)
    return completed_payouts(database_url)


def check_completed(kind: str, answered: int, completed: int, load: str, runs: int) -> None:
    """Every answered result completed its payout. wrk stops on time with requests still in
    flight, which the server may complete unanswered: at most one per connection per run."""
    unanswered = CONNECTIONS * runs if load == "wrk" else 0
    if not answered <= completed <= answered + unanswered:
        raise SystemExit(f"{kind}: {answered} results answered but {completed} payouts completed")


def medians(runs: list[dict]) -> dict:
    return {key: median([run[key] for run in runs]) for key in runs[0]}


def bench_empty(args) -> dict:
    app = ServedApp("empty")
    try:
        body = result_callback("b2c-x", "AG_x", "TK00000001")
        requests_ = [(RESULT_PATH, body, HEADERS)] * args.callbacks
        runs = [measure(app, requests_, args, repeat_ok=True) for _ in range(args.runs)]
        return {**medians(runs), "peak_mib": app.peak_mib()}
    finally:
        app.stop()


def bench_service(kind: str, args, workdir: Path) -> dict:
    database_url, drop = fresh_database(kind, workdir)
    try:
        ids = seed_pending_payouts(database_url, args.callbacks * args.runs)
        app = ServedApp("app", database_url, str(workdir / f"{kind}-journal.log"))
        try:
            runs, sent = [], 0
            for run in range(args.runs):
                first = run * args.callbacks
                batch = ids[first : first + args.callbacks]
                runs.append(measure(app, callback_requests(batch, first), args))
                sent += runs[-1]["requests"]
            completed = completions_settled(database_url, sent)
            check_completed(kind, sent, completed, args.load, args.runs)
            return {**medians(runs), "peak_mib": app.peak_mib()}
        finally:
            app.stop()
    finally:
        drop()


def verdict(kind: str, figures: dict, empty_rate: float) -> str:
    ratio = figures["rate"] / empty_rate
    met = (
        figures["rate"] >= (1000 if kind == "mariadb" else 0)
        and ratio >= 1 / 3
        and figures["p99_ms"] < 100
        and figures["errors"] == 0
    )
    return f"ratio {ratio:.2f} of empty; targets {'met' if met else 'NOT met'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,mariadb")
    parser.add_argument("--callbacks", type=int, default=3000, help="per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20, help="time bound per run")
    parser.add_argument("--load", choices=["python", "wrk"], default="python")
    parser.add_argument("--serve", choices=["app", "empty"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--journal", default="")
    parser.add_argument("--daraja-url", default="")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database_url, args.journal, args.daraja_url)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    print(
        f"callback ingestion, {CONNECTIONS} connections, load from {args.load}, "
        f"medians of {args.runs} runs; {machine()}"
    )
    empty = bench_empty(args)
    print(row("empty Bottle handler", empty))
    for kind in args.databases.split(","):
        figures = bench_service(kind, args, workdir)
        print(row(f"B2C result on {kind}", figures) + "  " + verdict(kind, figures, empty["rate"]))
    return 0


def row(name: str, figures: dict) -> str:
    return (
        f"{name:<24} {figures['rate']:8.0f}/s  p50 {figures['p50_ms']:6.1f} ms  "
        f"p99 {figures['p99_ms']:6.1f} ms  errors {figures['errors']:.0f}  "
        f"server peak {figures['peak_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    if "--serve" not in sys.argv:
        print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
