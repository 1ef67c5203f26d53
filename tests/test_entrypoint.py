"""`python service.py` as a user runs it: migrate, serve, refuse to start when misconfigured."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    process = subprocess.Popen(
        [sys.executable, "service.py"],
        cwd=ROOT,
        env={**os.environ, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        response = wait_for_health(f"http://127.0.0.1:{environ['PORT']}/healthz", process)
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
