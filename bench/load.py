"""A small HTTP load generator for the benchmarks: worker processes, each holding keep-alive
connections (http.client) on threads, POSTing prepared bodies, bounded in count and time.
It reports requests per second, latency percentiles and errors."""

from __future__ import annotations

import http.client
import multiprocessing
import threading
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

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
    return LoadResult(len(latencies), errors, elapsed, latencies)
