"""The soak at CI size (bench/soak.py: 300 payouts, 30 STK payments, a third of the keys re-sent,
faults by magic phone and armed token expiry, the service SIGKILLed twice), on SQLite and on
MariaDB at once, and its four claims: nothing paid twice, no answered callback missing from the
database, every payout settled or in review, every completed payout agreeing with the money
the simulator moved.

Both soaks run concurrently in the background (each waits SUBMITTING_STUCK_AFTER_SECONDS, 5 s
here, before payouts left `submitting` by a kill are resolved, and STK_EXPIRY_SECONDS, 10 s,
for pushes a kill left open); each test reads the figures of its database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fresh_mariadb_database

ROOT = Path(__file__).resolve().parent.parent
SOAK = [sys.executable, str(ROOT / "bench" / "soak.py")]
CI_SIZE = [
    *("--payouts", "300", "--stk", "30", "--kills", "2", "--json"),
    *("--settle-timeout", "150", "--stk-grace", "15"),
]


class BackgroundSoak:
    """One soak process; `result()` waits for it and reads its JSON line."""

    def __init__(self, database_url: str, workdir: Path):
        self.log = workdir / "soak.stderr"
        self.process = subprocess.Popen(
            [*SOAK, *CI_SIZE, "--database-url", database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )
        self._result = None

    def result(self) -> dict:
        if self._result is None:
            out, _ = self.process.communicate(timeout=400)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert lines, f"soak printed no figures (exit {self.process.returncode}): {self.log}"
            self._result = json.loads(lines[-1])
        return self._result


@pytest.fixture(scope="module")
def soaks(tmp_path_factory):
    """Start the SQLite soak and, when a server is configured, the MariaDB soak; yield
    {database: BackgroundSoak or the reason it could not run}."""
    runs, cleanups = {}, []
    sqlite_dir = tmp_path_factory.mktemp("soak-sqlite")
    runs["sqlite"] = BackgroundSoak(f"sqlite:///{sqlite_dir / 'soak.db'}", sqlite_dir)
    mariadb = fresh_mariadb_database()
    try:
        mariadb_url = next(mariadb)
        cleanups.append(mariadb)
        runs["mariadb"] = BackgroundSoak(mariadb_url, tmp_path_factory.mktemp("soak-mariadb"))
    except (pytest.skip.Exception, pytest.fail.Exception) as reason:
        runs["mariadb"] = reason
    yield runs
    for run in runs.values():
        if isinstance(run, BackgroundSoak) and run.process.poll() is None:
            run.process.kill()
    for cleanup in cleanups:
        next(cleanup, None)


def figures(soaks, database: str) -> dict:
    run = soaks[database]
    if isinstance(run, pytest.skip.Exception):
        pytest.skip(str(run))
    if isinstance(run, pytest.fail.Exception):
        pytest.fail(str(run))
    return run.result()


DATABASES = ["sqlite", "mariadb"]


@pytest.mark.parametrize("database", DATABASES)
def test_soak_pays_no_payout_twice(soaks, database):
    result = figures(soaks, database)
    assert (result["paid_twice"], result["ledger_without_payout"]) == (0, 0)


@pytest.mark.parametrize("database", DATABASES)
def test_soak_loses_no_answered_callback(soaks, database):
    assert figures(soaks, database)["callbacks_lost"] == 0


@pytest.mark.parametrize("database", DATABASES)
def test_soak_leaves_every_payout_settled_or_in_review(soaks, database):
    result = figures(soaks, database)
    assert result["payouts_open"] == 0, result["statuses"]


@pytest.mark.parametrize("database", DATABASES)
def test_soak_completed_payouts_agree_with_the_money_moved(soaks, database):
    result = figures(soaks, database)
    assert (result["completed_disagree"], result["failed_but_paid"]) == (0, 0)


@pytest.mark.parametrize("database", DATABASES)
def test_soak_reused_keys_replay_one_payout(soaks, database):
    result = figures(soaks, database)
    assert result["replays_answered_with_another_payout"] == 0
    assert result["conflicting_bodies_not_refused"] == 0
    assert result["gave_up"] == 0


# --- what the soak found ----------------------------------------------------------------------


def test_stk_payment_written_ahead_by_a_killed_process_is_expired_by_the_sweep(make_stack):
    """The row initiate_stk commits before calling Daraja, with nothing after it (the process
    died): the sweep must still find it and expire it."""
    import sqlalchemy as sa

    import service
    from mpesa_service.stk import StkRequest, sweep_stk, write_payment_ahead

    stack = make_stack({"STK_QUERY_AFTER_SECONDS": "0", "STK_EXPIRY_SECONDS": "60"})
    request = StkRequest.from_body(
        {"phone": "0708374149", "amount": 150, "account_reference": "INV1"}
    )
    payment_id = write_payment_ahead(stack.svc, request)
    with stack.svc.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE payments SET id = 'killed-mid-push', created_at = :old WHERE id = :id"),
            {"old": "2020-01-01 00:00:00", "id": payment_id},
        )
    sweep_stk(stack.svc)
    (payment,) = stack.rows(service.payments, service.payments.c.id == "killed-mid-push")
    assert payment.status == "failed"
