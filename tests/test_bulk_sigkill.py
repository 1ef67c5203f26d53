"""A bulk batch sent by the real service process, SIGKILLed mid-batch and started again: every
row is paid exactly once, as the simulator's ledger (which outlives the service) says. On SQLite
and MariaDB."""

import signal
from collections import Counter

import requests
import sqlalchemy as sa

import service
import simulator
from mpesa_service.storage import b2c_payments, b2c_payout_attempts, payout_batches
from tests.conftest import free_port
from tests.service_support import FAST_SIMULATOR, wait_until
from tests.test_bulk import CHECKER, MAKER, csv_bytes, good_rows
from tests.test_entrypoint import serve_until_healthy

ROWS = 40


def settings(database_url: str, tmp_path, sim_url: str) -> dict:
    return {
        "DATABASE_URL": database_url,
        "PORT": str(free_port()),
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "journal.log"),
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": sim_url,  # outside the service: its ledger survives the kill
        "API_KEYS": f"maker:initiate+operator+read:{MAKER},checker:operator+read:{CHECKER}",
        # 40 rows take 4 s at this rate, so the kill after 10 lands with 3 s of rows to go (the
        # test asserts that it did), and still in the 0.1 s gap before the next row is written:
        # a row killed after it is written but before it is sent can end in review, unpaid.
        "BULK_PAYOUTS_PER_SECOND": "10",
        "DARAJA_TIMEOUT_SECONDS": "2",
        "SUBMITTING_STUCK_AFTER_SECONDS": "3",
        "RESOLVE_INTERVAL_SECONDS": "1",
        "RESOLVE_PENDING_AFTER_SECONDS": "2",
        "RESOLVE_UNKNOWN_AFTER_SECONDS": "0",
        "RESOLVE_SCHEDULE_SECONDS": "0,1,2",
        "STATUS_NOT_FOUND_AFTER_SECONDS": "0",
    }


def as_key(secret):
    return {"Authorization": f"Bearer {secret}"}


def time_passes_while_down(engine: sa.Engine) -> None:
    """The killed process's lease on the batch runs out while the service is down."""
    with engine.begin() as conn:
        conn.execute(sa.update(payout_batches).values(claimed_until=None))


def paid_references(engine: sa.Engine, ledger: list[dict]) -> Counter:
    """How many times the simulator paid each payout reference, through its attempts' ids."""
    with engine.connect() as conn:
        reference_of = dict(
            conn.execute(
                sa.select(
                    b2c_payout_attempts.c.originator_conversation_id, b2c_payments.c.reference_id
                ).join(b2c_payments, b2c_payments.c.id == b2c_payout_attempts.c.payout_id)
            ).all()
        )
    return Counter(reference_of[entry["originator_conversation_id"]] for entry in ledger)


def test_a_batch_interrupted_by_sigkill_pays_every_row_once_after_the_restart(
    database_url, tmp_path
):
    running = simulator.start(config=simulator.SimulatorConfig(**FAST_SIMULATOR))
    engine = service.make_engine(database_url)
    environ = settings(database_url, tmp_path, running.base_url)
    b2c = "/mpesa/b2c/v3/paymentrequest"
    try:
        process, base_url = serve_until_healthy(environ)
        try:
            created = requests.post(
                f"{base_url}/payouts/batches",
                data=csv_bytes(good_rows(ROWS, "kill")),
                headers={**as_key(MAKER), "Content-Type": "text/csv"},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            batch_id = created.json()["batch_id"]
            approve = f"{base_url}/payouts/batches/{batch_id}/approve"
            assert requests.post(approve, json={}, headers=as_key(CHECKER), timeout=30).ok
            wait_until(lambda: len(running.simulator.requests(b2c)) >= 10, 30, interval=0.005)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        sent_before = len(running.simulator.requests(b2c))
        assert sent_before < ROWS, "the batch was finished before the kill"
        time_passes_while_down(engine)

        process, base_url = serve_until_healthy(environ)
        try:
            detail = f"{base_url}/payouts/batches/{batch_id}"

            def finished():
                answer = requests.get(detail, headers=as_key(CHECKER), timeout=30).json()
                return answer["status"] == "finished" and answer

            done = wait_until(finished, timeout=120, interval=0.2)
        finally:
            process.terminate()
            process.communicate(timeout=10)
        ledger = [entry for entry in running.simulator.ledger() if entry["kind"] == "b2c"]
        paid = paid_references(engine, ledger)
        failing = {row["reference_id"] for row in done["rows"] if row["status"] == "failed"}
        assert len(failing) == 2  # the two rows to the simulator's failing phones
        expected = {row["reference_id"] for row in done["rows"]} - failing
        assert set(paid) == expected and set(paid.values()) == {1}, paid
        assert done["counts"] == {"completed": ROWS - 2, "failed": 2}
        with engine.connect() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(b2c_payments)).scalar() == ROWS
            )
    finally:
        running.stop()
        engine.dispose()
