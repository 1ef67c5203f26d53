"""Two service processes on one MariaDB: each status-query step happens once per payout and no
payout is sent twice, because every job claims its rows with a compare-and-set first."""

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

import service
import simulator
from mpesa_service.daraja import INVALID_TOKEN_CODES
from mpesa_service.storage import utcnow
from tests.conftest import free_port
from tests.service_support import wait_until

ROOT = Path(__file__).resolve().parent.parent
STALE, RETRYABLE = 200, 50


def seed(engine) -> None:
    """200 payouts whose outcome is unknown (Daraja never saw their attempts) and 50 failed with
    a retryable code."""
    rows, attempts = [], []
    for number in range(STALE + RETRYABLE):
        payout_id, ocid = f"p{number:04d}", f"b2c-seed-{uuid.uuid4()}"
        stale = number < STALE
        rows.append(
            dict(
                id=payout_id,
                reference_id=f"ref-{number:04d}",
                phone_number="254712345678",
                amount=100 + number,
                status="unknown" if stale else "failed",
                reason_code=None if stale else "17",
                originator_conversation_id=ocid,
                attempt_count=1,
                check_count=0,
                command_id="BusinessPayment",
                description="seed",
                next_check_at=utcnow() if stale else None,
                updated_at=sa.text("'2020-01-01'"),
            )
        )
        attempts.append(
            dict(
                id=f"a{number:04d}",
                payout_id=payout_id,
                attempt_no=1,
                originator_conversation_id=ocid,
                status="unknown" if stale else "failed",
                created_at=utcnow(),
            )
        )
    with engine.begin() as conn:
        for row in rows:
            conn.execute(service.b2c_payments.insert().values(**row))
        conn.execute(service.b2c_payout_attempts.insert(), attempts)


def start_process(database_url: str, sim_url: str, tmp_path: Path, port: int, public: str):
    environ = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MPESA_BASE_URL": sim_url,
        "PORT": str(port),
        "PUBLIC_BASE_URL": public,
        "CALLBACK_TOKEN": "multi-token",
        "CALLBACK_JOURNAL_PATH": str(tmp_path / f"journal-{port}.log"),
        "RESOLVE_INTERVAL_SECONDS": "1",
        "RESOLVE_SCHEDULE_SECONDS": "0,0",
        "RESOLVE_UNKNOWN_AFTER_SECONDS": "0",
        "STATUS_NOT_FOUND_AFTER_SECONDS": "3600",
        "RETRY_INTERVAL_SECONDS": "1",
        "RETRY_DELAY_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "service.py"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_two_processes_query_each_step_once_and_pay_nothing_twice(migrated_mariadb_url, tmp_path):
    engine = service.make_engine(migrated_mariadb_url)
    seed(engine)
    ports = [free_port(), free_port()]
    public = f"http://127.0.0.1:{ports[0]}"
    with simulator.start(config=simulator.SimulatorConfig(callback_delay_seconds=0.05)) as sim:
        processes = [
            start_process(migrated_mariadb_url, sim.base_url, tmp_path, port, public)
            for port in ports
        ]
        try:

            def finished():
                with engine.connect() as conn:
                    statuses = Counter(
                        conn.execute(sa.select(service.b2c_payments.c.status)).scalars()
                    )
                return statuses["review"] == STALE and statuses["completed"] == RETRYABLE

            wait_until(finished, timeout=180, interval=0.2)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)
        sent = sim.simulator.requests("/mpesa/b2c/v3/paymentrequest")

    with engine.connect() as conn:
        steps = conn.execute(
            sa.select(service.status_queries.c.payout_id, service.status_queries.c.step)
        ).all()
        attempts = conn.execute(sa.select(service.b2c_payout_attempts)).all()
    assert len(steps) == 2 * STALE
    assert Counter(steps).most_common(1)[0][1] == 1
    retried = [a for a in attempts if a.attempt_no == 2]
    assert len(retried) == RETRYABLE
    # Both processes may fetch a token at start; the simulator, like Daraja, revokes the first,
    # whose holder sends again once with a fresh one (a refused token proves nothing was taken).
    accepted = [request for request in sent if request["status"] == 200]
    refused = [request for request in sent if request["status"] != 200]
    assert all(request["response"]["errorCode"] in INVALID_TOKEN_CODES for request in refused)
    accepted_ocids = Counter(request["body"]["OriginatorConversationID"] for request in accepted)
    assert len(accepted) == RETRYABLE
    assert set(accepted_ocids) == {a.originator_conversation_id for a in retried}
    assert max(accepted_ocids.values()) == 1
    engine.dispose()
