"""What the soak and the benchmarks share: ports, the service as a real process, the figures
(medians, percentiles, peak memory) and a fresh migrated database."""

from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

API_KEY = "soak-api-key"
CALLBACK_TOKEN = "soak-callback-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(probe, timeout: float, interval: float = 0.1):
    """Call `probe` until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not ready within {timeout} s")
        time.sleep(interval)


def is_healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def migrated(database_url: str) -> str:
    import service

    engine = service.make_engine(database_url)
    service.migrate(engine)
    engine.dispose()
    return database_url


class ServiceProcess:
    """`python service.py` as a child process, with settings from its environment; it can be
    killed with SIGKILL and started again on the same port."""

    def __init__(self, settings: dict[str, str], log_path: Path):
        self.settings = settings
        self.base_url = f"http://127.0.0.1:{settings['PORT']}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        environ = {**os.environ, **self.settings}
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "service.py"],
                cwd=PROJECT_DIR,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        wait_for(lambda: self._exited() or is_healthy(self.base_url), timeout)
        if self._exited():
            raise RuntimeError(f"service exited with {self.process.returncode}: {self.log_path}")

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flushing, exactly like the OOM killer or a power cut."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_memory_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def machine() -> str:
    cores = os.cpu_count()
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return f"{cores} cores, {total_kib // 1024 // 1024} GiB RAM, Python {sys.version.split()[0]}"
