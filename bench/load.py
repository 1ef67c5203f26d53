"""Load for the benchmarks, two ways: a small Python generator (worker processes, each holding
keep-alive connections on threads, POSTing prepared bodies, bounded in count and time), and
wrk from Debian's packages driven by wrk_bodies.lua (bounded in time only; it costs the
server's 2-core machine far less CPU). Both report requests per second, p50/p99 latency and
errors."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import percentile


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _connection_worker(port, requests_, deadline, latencies, errors, lock):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    mine, failed = [], 0
    for path, body, headers in requests_:
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine.append(time.perf_counter() - started)
    with lock:
        latencies.extend(mine)
        errors[0] += failed


def _process_worker(port, chunks, seconds, queue):
    latencies, errors, lock = [], [0], threading.Lock()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=_connection_worker, args=(port, chunk, deadline, latencies, errors, lock)
        )
        for chunk in chunks
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((latencies, errors[0]))


def run_load(port: int, requests_: list, connections: int = 32, processes: int = 2, seconds=30.0):
    """POST every (path, body, headers) in `requests_` over `connections` keep-alive connections
    spread over `processes` worker processes; stop early after `seconds`."""
    per_connection = [requests_[index::connections] for index in range(connections)]
    per_process = [per_connection[index::processes] for index in range(processes)]
    queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_process_worker, args=(port, chunks, seconds, queue))
        for chunks in per_process
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    latencies = [latency for found, _ in results for latency in found]
    errors = sum(failed for _, failed in results)
    return LoadResult(
        len(latencies), errors, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99)
    )


WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_bodies.lua"


class BodiesRanOut(Exception):
    """wrk sent every prepared body and started over: the run needs more of them."""


def run_wrk(port: int, requests_: list, connections=32, seconds=5, threads=2, repeat_ok=False):
    """POST the bodies of `requests_` (all to the first one's path) with wrk for `seconds`
    over `connections` keep-alive connections. Unless `repeat_ok`, raises BodiesRanOut if wrk
    used them all (and so sent some twice)."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); use --load python")
    path = requests_[0][0]
    with tempfile.NamedTemporaryFile("wb", suffix=".bodies") as bodies:
        bodies.write(b"\n".join(body for _, body, _ in requests_) + b"\n")
        bodies.flush()
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s"]
        command += ["-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}"]
        command += ["--", bodies.name, path, str(threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    if figures["exhausted_threads"] and not repeat_ok:
        raise BodiesRanOut(
            f"wrk sent all {len(requests_)} bodies within {seconds} s: "
            "raise --callbacks or lower --seconds"
        )
    return LoadResult(
        figures["requests"],
        figures["errors"],
        figures["duration_us"] / 1e6,
        figures["p50_us"] / 1e6,
        figures["p99_us"] / 1e6,
    )
