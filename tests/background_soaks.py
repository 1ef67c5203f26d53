"""The CI-size soaks (bench/soak.py on SQLite and, when a server is configured, on MariaDB),
started in the background as soon as the run knows it will read them, so that the minute they
spend waiting on their schedules overlaps the rest of the suite instead of holding a worker.

The process that schedules the run (pytest's own, or xdist's controller) starts them and ends
them; tests/test_soak.py, in whichever worker runs it, reads their figures from the directory
named by SOAK_DIRECTORY_VARIABLE, waiting for each soak to finish."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.mariadb_support import (
    create_mariadb_database,
    drop_mariadb_database,
    mariadb_server_url,
)

ROOT = Path(__file__).resolve().parent.parent
SOAK_MODULE = "test_soak"
SOAK_DIRECTORY_VARIABLE = "MPESA_TEST_SOAK_DIRECTORY"
DATABASES = ("sqlite", "mariadb")
CI_SIZE = [
    *("--payouts", "300", "--stk", "30", "--kills", "2", "--json"),
    *("--settle-timeout", "150", "--stk-grace", "15"),
]
PATIENCE_SECONDS = 400


class Soaks:
    """The soaks one run started: each database's process, and the scratch MariaDB database."""

    def __init__(self):
        self.processes: list[subprocess.Popen] = []
        self.waiters: list[threading.Thread] = []
        self.mariadb_url: str | None = None
        self.started = False

    def start(self, nodeids) -> None:
        """Start the soak of each database the run's soak tests (named by node ids) read."""
        wanted = {
            database
            for nodeid in nodeids
            if module_name(nodeid) == SOAK_MODULE
            for database in DATABASES
            if f"[{database}]" in nodeid
        }
        if self.started or not wanted:
            return
        self.started = True
        if "sqlite" in wanted:
            self._start_one("sqlite", f"sqlite:///{soak_directory() / 'soak.db'}")
        if "mariadb" in wanted:
            self._start_mariadb()

    def _start_mariadb(self) -> None:
        try:
            self.mariadb_url = create_mariadb_database(mariadb_server_url())
        except (pytest.skip.Exception, pytest.fail.Exception) as reason:
            outcome = "skip" if isinstance(reason, pytest.skip.Exception) else "fail"
            (soak_directory() / "mariadb.unavailable").write_text(f"{outcome}\n{reason}")
            return
        self._start_one("mariadb", self.mariadb_url)

    def _start_one(self, database: str, database_url: str) -> None:
        directory = soak_directory()
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "soak.py"),
                *CI_SIZE,
                "--database-url",
                database_url,
            ],
            cwd=ROOT,
            stdout=(directory / f"{database}.out").open("w"),
            stderr=(directory / f"{database}.stderr").open("w"),
        )
        self.processes.append(process)
        waiter = threading.Thread(target=record_exit, args=(process, directory / database))
        waiter.start()
        self.waiters.append(waiter)

    def stop(self) -> None:
        """End what still runs (a run stopped early), drop the scratch database, and remove
        the soaks' directory unless a soak failed on its own (its log is kept there)."""
        unfinished = [process for process in self.processes if process.poll() is None]
        for process in unfinished:
            process.kill()
        for waiter in self.waiters:
            waiter.join(timeout=30)
        if self.mariadb_url:
            drop_mariadb_database(self.mariadb_url)
        failed = [p for p in self.processes if p not in unfinished and p.returncode != 0]
        if not failed:
            shutil.rmtree(soak_directory(), ignore_errors=True)


def record_exit(process: subprocess.Popen, prefix: Path) -> None:
    """Write the exit status once the soak ends, under another name first, so a reader never
    sees a half-written file."""
    status = process.wait()
    draft = prefix.with_suffix(".exit.draft")
    draft.write_text(str(status))
    draft.rename(prefix.with_suffix(".exit"))


def soak_directory() -> Path:
    return Path(os.environ[SOAK_DIRECTORY_VARIABLE])


def prepare() -> None:
    """Name the run's soak directory in the environment, which xdist's workers inherit."""
    os.environ[SOAK_DIRECTORY_VARIABLE] = tempfile.mkdtemp(prefix="soaks-")


def figures(database: str) -> dict:
    """The figures the soak on `database` printed; skips or fails as its database did."""
    directory = soak_directory()
    unavailable = directory / f"{database}.unavailable"
    if unavailable.exists():
        outcome, _, reason = unavailable.read_text().partition("\n")
        (pytest.skip if outcome == "skip" else pytest.fail)(reason)
    exit_file = directory / f"{database}.exit"
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not exit_file.exists():
        assert time.monotonic() < deadline, f"the {database} soak ran over {PATIENCE_SECONDS} s"
        time.sleep(0.5)
    stderr = directory / f"{database}.stderr"
    lines = [
        line
        for line in (directory / f"{database}.out").read_text().splitlines()
        if line.startswith("{")
    ]
    assert lines, f"soak printed no figures (exit {exit_file.read_text()}): {stderr}"
    return json.loads(lines[-1])


def module_name(nodeid: str) -> str:
    return nodeid.split("::")[0].removesuffix(".py").rpartition("/")[2]
