"""End to end: `python -m recon` over a seeded SQLite and MariaDB database with a known answer."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import service
from recon.cli import main
from tests.recon_support import KNOWN_ANSWER, known_answer_statement, seed_known_answer

PROJECT = Path(__file__).resolve().parent.parent
DAY = ["--since", "2025-11-05", "--until", "2025-11-06", "--as-of", "2025-11-06T00:00:00"]


PROGRESS = re.compile(r"recon: (.+): (\d+\.\d\d) s")


def complaints(stderr: str) -> list[str]:
    """stderr's lines other than progress (a stage done, with its time)."""
    return [line for line in stderr.splitlines() if not PROGRESS.fullmatch(line)]


def counts_in(out: Path) -> dict[str, int]:
    with (out / "summary.csv").open() as handle:
        return {row["check"]: int(row["count"]) for row in csv.DictReader(handle)}


def test_seeded_database_gives_the_known_answer_and_exit_1(engine, database_url, tmp_path):
    seed_known_answer(engine)
    statement = known_answer_statement(tmp_path / "statement.csv")
    out = tmp_path / "out"

    status = main(
        ["--database-url", database_url, "--statement", str(statement), "--out", str(out), *DAY]
    )

    assert status == 1
    assert counts_in(out) == KNOWN_ANSWER
    with (out / "findings.csv").open() as handle:
        findings = list(csv.DictReader(handle))
    assert len(findings) == sum(KNOWN_ANSWER.values())
    assert {row["check"] for row in findings if row["at_risk"] == ""} == {
        "failed_result",
        "duplicate_callback",
        "statement_integrity",
    }
    mismatch = next(row for row in findings if row["check"] == "amount_mismatch")
    assert (mismatch["reference_id"], mismatch["payout_id"]) == ("REF-p01", "p01")
    assert mismatch["transaction_id"] == "TKA001"
    assert (mismatch["expected_amount"], mismatch["actual_amount"]) == ("1000.00", "100.00")
    assert mismatch["reason"] == (
        "amount mismatch: requested 1,000.00 != paid 100.00 (900.00 short)"
    )


def test_findings_name_payouts_by_the_reference_the_service_answers_to(
    engine, database_url, make_stack, tmp_path
):
    seed_known_answer(engine)
    out = tmp_path / "out"
    statement = known_answer_statement(tmp_path / "statement.csv")
    main(["--database-url", database_url, "--statement", str(statement), "--out", str(out), *DAY])
    with (out / "findings.csv").open() as handle:
        findings = list(csv.DictReader(handle))
    stack = make_stack()

    about_payouts = [row for row in findings if row["payout_id"]]
    assert len(about_payouts) == 11
    with engine.connect() as connection:
        references = dict(
            connection.execute(sa.select(service.b2c_payments.c["id", "reference_id"])).all()
        )
    for row in about_payouts:
        assert row["reference_id"] == references[row["payout_id"]]
        assert row["subject"] == f"payout {row['reference_id']}"
        assert stack.get(f"/payouts/{row['reference_id']}").status_code == 200, row
    (collection,) = [row for row in findings if row["payment_id"]]
    assert (collection["reference_id"], collection["payment_id"]) == ("ws_CO_s01", "s01")
    assert collection["subject"] == "payment ws_CO_s01"
    html = (out / "report.html").read_text()
    assert "payout p0" not in html and "payout REF-p01" in html


def test_each_stage_is_a_timed_line_on_stderr_and_stdout_is_the_report(
    engine, database_url, tmp_path, capsys
):
    seed_known_answer(engine)
    statement = known_answer_statement(tmp_path / "statement.csv")
    out = tmp_path / "out"

    main(["--database-url", database_url, "--statement", str(statement), "--out", str(out), *DAY])

    said = capsys.readouterr()
    assert said.out == (out / "report.txt").read_text()
    stages = [PROGRESS.fullmatch(line) for line in said.err.splitlines()]
    assert [found[1] for found in stages if found] == [
        "checking the database",
        "reading the statement",
        "loading the database",
        "running the checks",
        *(f"writing {name}" for name in ("findings.csv", "summary.csv", "report.txt")),
        *(f"writing {name}" for name in ("report.html", "report.xlsx", "report.json")),
        *(f"writing {name}" for name in ("findings_by_check.png", "kes_at_risk_by_check.png")),
        "writing aging.png",
    ]
    assert said.err.splitlines()[-1] == f"wrote 9 files to {out}"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_stage_under_way_shows_in_place():
    from recon.cli import StagePrinter
    from recon.progress import stage

    screen = Terminal()
    with stage(StagePrinter(screen), "loading the database"):
        assert screen.getvalue() == "recon: loading the database..."

    assert re.fullmatch(
        r"recon: loading the database...\r\x1b\[Krecon: loading the database: \d\.\d\d s\n",
        screen.getvalue(),
    )


def test_seeded_database_writes_every_output_file(engine, database_url, tmp_path):
    seed_known_answer(engine)
    out = tmp_path / "out"

    main(["--database-url", database_url, "--out", str(out), *DAY])

    names = {path.name for path in out.iterdir()}
    assert {"findings.csv", "summary.csv", "report.html", "report.xlsx", "report.txt"} <= names
    assert {"findings_by_check.png", "kes_at_risk_by_check.png", "aging.png"} <= names


def test_clean_database_exits_0(database_url, tmp_path):
    assert main(["--database-url", database_url, "--out", str(tmp_path / "out"), *DAY]) == 0


def test_missing_statement_file_exits_2_naming_it(database_url, tmp_path, capsys):
    missing = tmp_path / "no-such-statement.csv"

    status = main(
        [
            "--database-url",
            database_url,
            "--statement",
            str(missing),
            "--out",
            str(tmp_path / "out"),
        ]
    )

    assert status == 2
    assert str(missing) in capsys.readouterr().err


def test_unreachable_database_exits_2_naming_it(tmp_path, capsys):
    url = "mysql+pymysql://reader:secret@127.0.0.1:1/nothing"

    status = main(["--database-url", url, "--out", str(tmp_path / "out")])

    error = capsys.readouterr().err
    assert status == 2
    assert "127.0.0.1:1/nothing" in error
    assert "secret" not in error


def run_recon(*args: str) -> subprocess.CompletedProcess:
    """`python -m recon ARGS` as cron would run it."""
    return subprocess.run(
        [sys.executable, "-m", "recon", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_sqlite_file_is_one_line_exit_2_and_is_not_created(tmp_path):
    missing, out = tmp_path / "nope.db", tmp_path / "out"

    done = run_recon("--database-url", f"sqlite:///{missing}", "--out", str(out))

    assert done.returncode == 2
    assert len(complaints(done.stderr)) == 1, done.stderr
    assert str(missing) in done.stderr and "does not exist" in done.stderr
    assert done.stdout == ""
    assert not missing.exists() and not out.exists()


def test_a_database_without_the_tables_is_one_line_exit_2_naming_them(tmp_path):
    empty, out = tmp_path / "empty.db", tmp_path / "out"
    empty.write_bytes(b"")  # an empty file is a SQLite database without tables

    done = run_recon("--database-url", f"sqlite:///{empty}", "--out", str(out))

    assert done.returncode == 2
    assert len(complaints(done.stderr)) == 1, done.stderr
    assert "b2c_payments" in done.stderr and "service.py migrate" in done.stderr
    assert not out.exists()


def test_an_unreachable_server_is_one_line_exit_2(tmp_path):
    url = "mysql+pymysql://reader:secret@127.0.0.1:1/nothing"

    done = run_recon("--database-url", url, "--out", str(tmp_path / "out"))

    assert done.returncode == 2
    assert len(complaints(done.stderr)) == 1, done.stderr
    assert "127.0.0.1:1/nothing" in done.stderr and "secret" not in done.stderr


@pytest.mark.parametrize("kind", ["a folder", "not a statement"])
def test_an_unreadable_statement_is_one_line_exit_2_and_writes_nothing(
    database_url, tmp_path, kind
):
    statement = tmp_path / "statement.csv"
    if kind == "a folder":
        statement.mkdir()
    else:
        statement.write_bytes(b"\x00\xff garbage \x00")
    out = tmp_path / "out"

    done = run_recon(
        "--database-url", database_url, "--statement", str(statement), "--out", str(out)
    )

    assert done.returncode == 2
    assert len(complaints(done.stderr)) == 1, done.stderr
    assert str(statement) in done.stderr
    assert not out.exists()


def test_bad_time_exits_2(tmp_path):
    status = main(["--database-url", "sqlite://", "--since", "yesterday", "--out", str(tmp_path)])

    assert status == 2


def test_python_dash_m_recon_runs_as_a_program(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    import service

    service.migrate(service.make_engine(url))

    done = subprocess.run(
        [sys.executable, "-m", "recon", "--database-url", url, "--out", str(tmp_path / "out")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "No traffic in the period" in done.stdout
