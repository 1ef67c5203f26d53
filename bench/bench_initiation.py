"""Initiation: payouts per second through the real app (idempotency key looked up and stored,
payout and attempt written ahead, B2C sent to the simulator, the answer recorded), beside the
simulator's own B2C endpoint called directly with the same load in the same run (the baseline:
what the service adds on top of Daraja's answer). 32 keep-alive connections; medians of --runs
runs; the ratio is the service's median rate over the baseline's; peak memory of each server.

Both servers run as child processes under waitress: the simulator standalone
(`python simulator.py`), the service with the service's WAITRESS_OPTIONS (32 threads).

    python bench/bench_initiation.py                      # SQLite and MariaDB, 3 runs each
    python bench/bench_initiation.py --databases sqlite --payouts 500 --runs 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_callbacks import ServedApp, fresh_database, medians  # noqa: E402
from common import PROJECT_DIR, free_port, is_healthy, machine, wait_for  # noqa: E402
from load import run_load  # noqa: E402

from mpesa_service.daraja import security_credential  # noqa: E402
from simulator import SANDBOX_INITIATOR_PASSWORD, TEST_CERTIFICATE  # noqa: E402

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
PAYEE = "254708374149"


class StandaloneSimulator:
    def __init__(self):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "simulator.py", "--port", str(self.port), "--callback-delay", "0.05"],
            cwd=PROJECT_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._up, 30)

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/simulator/scenarios", timeout=1).ok
        except requests.RequestException:
            return False

    def token(self) -> str:
        answer = requests.get(
            f"{self.base_url}/oauth/v1/generate",
            params={"grant_type": "client_credentials"},
            auth=("simulator-key", "simulator-secret"),
            timeout=5,
        )
        return answer.json()["access_token"]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def direct_b2c_requests(token: str, count: int, result_url: str) -> list:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    # As the service sends it: the simulator's password under its test certificate (a wrong
    # one would be answered by the failure path, not the payment the service makes).
    credential = security_credential(SANDBOX_INITIATOR_PASSWORD, TEST_CERTIFICATE)
    return [
        (
            B2C_PATH,
            json.dumps(
                {
                    "OriginatorConversationID": f"b2c-{uuid.uuid4()}",
                    "InitiatorName": "testapi",
                    "SecurityCredential": credential,
                    "CommandID": "BusinessPayment",
                    "Amount": 1000,
                    "PartyA": "600996",
                    "PartyB": PAYEE,
                    "Remarks": "Bench payout",
                    "QueueTimeOutURL": result_url,
                    "ResultURL": result_url,
                }
            ).encode(),
            headers,
        )
        for _ in range(count)
    ]


def payout_requests(count: int) -> list:
    """One new payout per request, each to its own user (PAYOUT_USER_DAILY_LIMIT stays far)."""
    return [
        (
            "/payouts",
            json.dumps(
                {"user_id": f"bench-{uuid.uuid4().hex[:12]}", "phone": PAYEE, "amount": 1000}
            ).encode(),
            {
                "Content-Type": "application/json",
                "Authorization": "Bearer bench-key",
                "Idempotency-Key": f"bench-{uuid.uuid4()}",
            },
        )
        for _ in range(count)
    ]


def measure(port: int, requests_: list, seconds: float) -> dict:
    load = run_load(port, requests_, connections=32, processes=2, seconds=seconds)
    return {
        "rate": load.rate,
        "p50_ms": load.p50 * 1000,
        "p99_ms": load.p99 * 1000,
        "errors": load.errors,
    }


def bench_baseline(sim: StandaloneSimulator, args) -> dict:
    # Results go to a port nobody listens on: the baseline measures the answer, not callbacks.
    result_url = f"http://127.0.0.1:{free_port()}/nowhere"
    runs = [
        measure(sim.port, direct_b2c_requests(sim.token(), args.payouts, result_url), args.seconds)
        for _ in range(args.runs)
    ]
    return medians(runs)


def bench_service(kind: str, sim: StandaloneSimulator, args, workdir: Path) -> dict:
    database_url, drop = fresh_database(kind, workdir)
    try:
        app = ServedApp("app", database_url, str(workdir / f"{kind}.log"), sim.base_url)
        wait_for(lambda: is_healthy(f"http://127.0.0.1:{app.port}"), 30)
        try:
            runs = [
                measure(app.port, payout_requests(args.payouts), args.seconds)
                for _ in range(args.runs)
            ]
            return {**medians(runs), "peak_mib": app.peak_mib()}
        finally:
            app.stop()
    finally:
        drop()


def row(name: str, figures: dict) -> str:
    memory = f"  server peak {figures['peak_mib']:.0f} MiB" if "peak_mib" in figures else ""
    return (
        f"{name:<28} {figures['rate']:8.0f}/s  p50 {figures['p50_ms']:6.1f} ms  "
        f"p99 {figures['p99_ms']:6.1f} ms  errors {figures['errors']:.0f}{memory}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,mariadb")
    parser.add_argument("--payouts", type=int, default=1000, help="per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30, help="time bound per run")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-initiation-"))
    print(f"payout initiation, 32 connections, medians of {args.runs} runs; {machine()}")
    sim = StandaloneSimulator()
    try:
        baseline = bench_baseline(sim, args)
        print(row("simulator B2C, direct", baseline))
        for kind in args.databases.split(","):
            figures = bench_service(kind, sim, args, workdir)
            ratio = figures["rate"] / baseline["rate"]
            print(row(f"POST /payouts on {kind}", figures) + f"  ratio {ratio:.2f} of direct")
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
