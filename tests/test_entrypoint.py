"""`python service.py` as a user runs it: migrate, serve, refuse to start when misconfigured."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_service(*args: str, environ: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "service.py", *args],
        cwd=ROOT,
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def wait_for_health(url: str, process: subprocess.Popen, seconds: float = 60) -> requests.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def test_migrate_then_serve_answers_healthz(tmp_path):
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}", "PORT": str(free_port())}
    assert run_service("migrate", environ=environ).returncode == 0
    process, base_url = serve_until_healthy(environ)
    try:
        response = requests.get(f"{base_url}/healthz", timeout=10)
        assert response.status_code == 200
        assert response.json()["database"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_refuses_an_unmigrated_database(tmp_path):
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "PORT": str(free_port())}
    result = run_service(environ=environ)
    assert result.returncode != 0
    assert "run `python service.py migrate` first" in result.stderr


def test_production_without_credentials_exits_naming_them(tmp_path):
    environ = {"MPESA_ENVIRONMENT": "production", "MPESA_CONSUMER_KEY": "", "API_KEYS": ""}
    result = run_service("migrate", environ=environ)
    assert result.returncode == 2
    assert "MPESA_CONSUMER_KEY" in result.stderr
    assert "API_KEYS" in result.stderr


def serve_until_healthy(environ: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`python service.py` started with `environ` once it answers /healthz: (process, its URL)."""
    process = subprocess.Popen(
        [sys.executable, "service.py"],
        cwd=ROOT,
        env={**os.environ, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{environ['PORT']}"
    wait_for_health(f"{base_url}/healthz", process)
    return process, base_url


def stop_and_read_log(process: subprocess.Popen) -> str:
    process.terminate()
    return process.communicate(timeout=10)[0]


def test_simulator_control_routes_are_on_the_services_own_port(tmp_path):
    environ = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        "PORT": str(free_port()),
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "journal.log"),
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": "",
        "API_KEYS": "",
    }
    assert run_service("migrate", environ=environ).returncode == 0
    process, base_url = serve_until_healthy(environ)
    try:
        payout = requests.post(
            f"{base_url}/payouts",
            json={"user_id": "trainer-1", "phone": "0712345678", "amount": 250, "reason": "demo"},
            headers={"Authorization": "Bearer simulator-api-key", "Idempotency-Key": "demo-1"},
            timeout=30,
        )
        assert payout.status_code == 201, payout.text
        requested = requests.get(
            f"{base_url}/simulator/requests",
            params={"path": "/mpesa/b2c/v3/paymentrequest"},
            timeout=10,
        )
        assert [each["body"]["Amount"] for each in requested.json()["requests"]] == [250]
        ledger = requests.get(f"{base_url}/simulator/ledger", timeout=10).json()["ledger"]
        assert [(entry["kind"], entry["amount"]) for entry in ledger] == [("b2c", 250)]
        assert requests.get(f"{base_url}/simulator/scenarios", timeout=10).json() == {"armed": []}
        daraja_path = requests.get(f"{base_url}/oauth/v1/generate", timeout=10)
        assert daraja_path.status_code == 404  # Daraja's routes stay on the simulator's port
    finally:
        log = stop_and_read_log(process)
    assert f"simulator's control routes at {base_url}/simulator/" in log


LIVE_SETTINGS = {
    "MPESA_BASE_URL": "http://127.0.0.1:9",  # nothing listens: no request leaves the machine
    "MPESA_CONSUMER_KEY": "key",
    "MPESA_CONSUMER_SECRET": "secret",
    "MPESA_SHORTCODE": "600000",
    "MPESA_PASSKEY": "passkey",
    "MPESA_INITIATOR_NAME": "operator",
    "MPESA_SECURITY_CREDENTIAL": "credential",
    "API_KEYS": "live-key",
    "CONSOLE_SECRET": "console-secret",
    "CALLBACK_TOKEN": "callback-token",
    "PUBLIC_BASE_URL": "https://payments.example.com",
}


@pytest.mark.parametrize("environment", ["sandbox", "production"])
def test_no_simulator_routes_outside_the_simulator(tmp_path, environment):
    environ = {
        **LIVE_SETTINGS,
        "MPESA_ENVIRONMENT": environment,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        "PORT": str(free_port()),
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "journal.log"),
    }
    migrated = run_service("migrate", environ=environ)
    assert migrated.returncode == 0, migrated.stderr
    process, base_url = serve_until_healthy(environ)
    try:
        for method, path in [
            ("GET", "/simulator/requests"),
            ("GET", "/simulator/ledger"),
            ("GET", "/simulator/scenarios"),
            ("POST", "/simulator/reset"),
        ]:
            answer = requests.request(method, base_url + path, timeout=10)
            assert answer.status_code == 404, (path, answer.text)
    finally:
        log = stop_and_read_log(process)
    assert "simulator" not in log.lower()


def make_dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run on a machine with no virtualenv yet."""
    result = subprocess.run(
        ["make", "--dry-run", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def test_make_run_says_what_it_is_installing_before_each_install(tmp_path):
    lines = make_dry_run("run", tmp_path)
    installs = [number for number, line in enumerate(lines) if "pip install" in line]
    assert len(installs) == 2  # pip itself, then requirements.txt
    for number in installs:
        assert lines[number - 1].startswith("echo "), lines[number - 1]
    (runtime,) = [line for line in lines if "-r requirements.txt" in line]
    assert "--quiet" not in runtime  # pip's own progress shows


def test_make_notebooks_starts_jupyterlab_as_root_too(tmp_path):
    (lab,) = [line for line in make_dry_run("notebooks", tmp_path) if "jupyter lab" in line]
    assert ("--allow-root" in lab) == (os.geteuid() == 0)
