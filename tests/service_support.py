"""A running service for tests: the real app over real HTTP, talking to the real simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import requests
import sqlalchemy as sa

import service
import simulator
from mpesa_service.throughput.writer import wait_applied
from tests import http_support
from tests.sim_support import poll

API_KEY = "test-key"
TOKEN = "test-callback-token"
# Every wait of the jobs zero, so that a test runs each job when it chooses.
JOBS_WITHOUT_WAITS = {
    "RESOLVE_PENDING_AFTER_SECONDS": "0",
    "RESOLVE_UNKNOWN_AFTER_SECONDS": "0",
    "RESOLVE_SCHEDULE_SECONDS": "0,0,0",
    "STATUS_NOT_FOUND_AFTER_SECONDS": "0",
    "RETRY_DELAY_SECONDS": "0",
    "STK_QUERY_AFTER_SECONDS": "0",
}
FAST_SIMULATOR = dict(
    callback_delay_seconds=0.05,
    stk_answer_delay_seconds=0.05,
    delayed_callback_seconds=1.5,
    hang_seconds=4,
)


@dataclass
class Stack:
    """The service (`svc`, served at `base_url`) wired to a simulator (`sim`)."""

    svc: object
    sim: simulator.Simulator
    base_url: str
    journal_path: Path
    sim_base_url: str = ""  # where the simulator's Daraja routes are served
    headers: dict = field(default_factory=lambda: {"Authorization": f"Bearer {API_KEY}"})

    def post(self, path: str, json=None, headers=None, **kwargs) -> requests.Response:
        merged = {**self.headers, **(headers or {})}
        return requests.post(self.base_url + path, json=json, headers=merged, timeout=30, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.base_url + path, headers=self.headers, timeout=30, **kwargs)

    def hook(self, path: str, body=None, *, token: str = TOKEN, **kwargs) -> requests.Response:
        """POST a callback the way Daraja would (no API key); return once it is applied too
        (the service answers once it is journaled)."""
        return self.post_callback(f"{path}/{token}", json=body, **kwargs)

    def post_callback(self, path: str, **kwargs) -> requests.Response:
        """POST to a callback URL as given, then wait until the service has applied it."""
        response = requests.post(f"{self.base_url}{path}", timeout=30, **kwargs)
        assert wait_applied(self.svc), "callbacks still being applied after 10 s"
        return response

    def rows(self, table: sa.Table, *conditions) -> list:
        with self.svc.engine.connect() as conn:
            return conn.execute(sa.select(table).where(*conditions)).all()

    def journal(self) -> list[dict]:
        return list(self.svc.journal.entries())

    def sim_requests(self, path: str) -> list[dict]:
        return self.sim.requests(path)


def wait_until(probe, timeout: float = 10.0, interval: float = 0.05):
    """Call `probe` until it returns something truthy; that value, or AssertionError."""
    return poll(probe, timeout=timeout, interval=interval)


def payment_completed(stack, payment_id: str, timeout: float = 10.0):
    """The STK payment's row once it is `completed` (its callback applied), or AssertionError."""

    def completed():
        (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
        return row if row.status == "completed" else None

    return wait_until(completed, timeout=timeout)


def start_stack(database_url: str, tmp_path: Path, settings: dict, sim_config: dict):
    """Start a simulator and the service against `database_url`; return (stack, stop)."""
    running = simulator.start(config=simulator.SimulatorConfig(**{**FAST_SIMULATOR, **sim_config}))
    journal_path = tmp_path / "b2c_callbacks.log"
    environ = {
        "DATABASE_URL": database_url,
        "CALLBACK_JOURNAL_PATH": str(journal_path),
        "CALLBACK_TOKEN": TOKEN,
        "API_KEYS": API_KEY,
        "DARAJA_TIMEOUT_SECONDS": "2",
        "REPORTS_DIR": str(tmp_path / "reports"),
        **settings,
    }
    loaded = service.load_settings(environ, env_file=tmp_path / "no.env")
    svc = service.build_service(loaded, simulator_url=running.base_url)
    serving = http_support.serving(service.make_app(svc), threads=16)
    base_url = serving.__enter__()
    svc.public_base_url = base_url
    stack = Stack(
        svc=svc,
        sim=running.simulator,
        base_url=base_url,
        journal_path=journal_path,
        sim_base_url=running.base_url,
    )

    def stop():
        serving.__exit__(None, None, None)
        running.stop()
        svc.engine.dispose()

    return stack, stop
