"""The benchmarks' own machinery, so that the figures in docs/evidence.md come from scripts that
still run and still check what they claim: each script end to end at a tiny size, on SQLite
and on the MariaDB server the tests are given (the figures themselves are not asserted), and
wrk driving a real server with each prepared body sent once. Nothing here is timed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import bottle
import pytest
import sqlalchemy as sa

from mpesa_service import PROJECT_DIR
from tests.http_support import serving
from tests.mariadb_support import mariadb_server_url

sys.path.insert(0, str(PROJECT_DIR / "bench"))

from load import BodiesRanOut, run_wrk  # noqa: E402

needs_wrk = pytest.mark.skipif(
    not shutil.which("wrk"), reason="needs Debian's wrk (.ci/run installs it)"
)


@pytest.fixture(params=["sqlite", "mariadb"])
def bench_database(request) -> tuple[str, dict]:
    """(the --databases value, the environment) for a run on SQLite, or on the MariaDB server
    TEST_DATABASE_URL names (the scripts make their own scratch database there)."""
    if request.param == "sqlite":
        return "sqlite", {}
    url = mariadb_server_url()
    server = sa.URL.create(url.drivername, url.username, url.password, url.host, url.port)
    return "mariadb", {"BENCH_MARIADB_SERVER": server.render_as_string(hide_password=False)}


def run_bench(script: str, *arguments: str, environment: dict | None = None) -> str:
    """Run bench/<script> and return its output; fail with that output if it fails."""
    finished = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "bench" / script), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_DIR,
        env={**os.environ, **(environment or {})},
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout


def figures_line(output: str, name: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(name)]
    return line


def test_the_callback_benchmark_checks_every_answered_result_completed_its_payout(
    bench_database,
):
    kind, environment = bench_database
    output = run_bench(
        *("bench_callbacks.py", "--databases", kind, "--callbacks", "100", "--runs", "2"),
        environment=environment,
    )
    assert "errors 0" in figures_line(output, "empty Bottle handler")
    line = figures_line(output, f"B2C result on {kind}")
    assert "errors 0" in line and "ratio" in line


def test_the_ab_benchmark_alternates_two_trees_on_one_database(bench_database):
    kind, environment = bench_database
    arguments = ("--database", kind, "--rounds", "2", "--seconds", "1", "--callbacks", "50")
    output = run_bench(
        *("ab_callbacks.py", str(PROJECT_DIR), str(PROJECT_DIR), *arguments, "--load", "python"),
        environment=environment,
    )
    rounds = [line.split(":")[0] for line in output.splitlines() if line.startswith("round")]
    assert rounds == ["round 1 A", "round 1 B", "round 2 B", "round 2 A"]
    assert "errors 0" in figures_line(output, "A (") and "errors 0" in figures_line(output, "B (")
    assert "B faster in" in figures_line(output, "B/A:")


def test_the_initiation_benchmark_runs_against_the_simulator(bench_database):
    kind, environment = bench_database
    output = run_bench(
        *("bench_initiation.py", "--databases", kind, "--payouts", "60", "--runs", "1"),
        environment=environment,
    )
    assert "errors 0" in figures_line(output, "simulator B2C, direct")
    assert "errors 0" in figures_line(output, f"POST /payouts on {kind}")


def test_the_reconciliation_benchmark_finds_every_planted_kind_of_finding():
    output = run_bench("bench_recon.py", "--rows", "5000", "--repeat", "1")
    findings = figures_line(output, "findings:")
    for check in (
        "amount_mismatch",
        "orphan_callback",
        "failed_result",
        "stale_pending",
        "missing_from_statement",
        "unrecorded_statement_entry",
        "statement_amount_mismatch",
    ):
        assert f"{check} " in findings


def test_the_end_to_end_reconciliation_benchmark_runs_the_command_on_a_database(bench_database):
    kind, environment = bench_database
    output = run_bench(
        *("bench_recon_e2e.py", "--database", kind, "--rows", "2000", "--repeat", "1"),
        environment=environment,
    )
    assert "exit 1" in figures_line(output, "command:")  # findings were planted
    assert "x  (target <= 2)" in figures_line(output, "load / bare:")
    for stage in ("parse statement", "load database", "checks", "report xlsx"):
        assert "peak RSS" in figures_line(output, f"  {stage} ")
    reports = figures_line(output, "reports:")
    assert "report.html" in reports and "report.xlsx" in reports and "findings.csv" in reports
    assert "summary.csv equals the in-process one" in reports
    findings = figures_line(output, "findings:")
    for check in ("amount_mismatch", "orphan_callback", "missing_from_statement"):
        assert f"{check} " in findings


@pytest.fixture
def recording_server():
    """A real server keeping every body POSTed to /hook: (base URL's port, bodies)."""
    received, lock = [], threading.Lock()
    app = bottle.Bottle()

    @app.post("/hook")
    def hook():
        body = bottle.request.body.read()
        with lock:
            received.append(body)
        return {"ResultCode": 0}

    with serving(app, threads=4) as base_url:
        yield int(base_url.rsplit(":", 1)[1]), received


def prepared(count: int) -> list:
    headers = {"Content-Type": "application/json"}
    return [("/hook", b'{"n": %d}' % number, headers) for number in range(count)]


@needs_wrk
def test_wrk_sends_each_prepared_body_once(recording_server):
    port, received = recording_server
    result = run_wrk(port, prepared(50_000), connections=4, seconds=1)
    assert result.requests > 0 and result.errors == 0
    assert result.p50 <= result.p99
    assert len(received) >= result.requests
    assert len(set(received)) == len(received)  # not one body twice


@needs_wrk
def test_wrk_says_when_it_ran_out_of_bodies_unless_repeating_is_allowed(recording_server):
    port, received = recording_server
    with pytest.raises(BodiesRanOut, match="raise --callbacks"):
        run_wrk(port, prepared(20), connections=2, seconds=1)
    assert len(received) > 20  # it did start over
    repeated = run_wrk(port, prepared(20), connections=2, seconds=1, repeat_ok=True)
    assert repeated.requests > 20 and repeated.errors == 0


@needs_wrk
def test_the_callback_benchmark_runs_under_wrk():
    output = run_bench(
        "bench_callbacks.py",
        *("--databases", "sqlite", "--load", "wrk", "--callbacks", "8000"),
        *("--seconds", "1", "--runs", "1"),
    )
    assert "errors 0" in figures_line(output, "B2C result on sqlite")
