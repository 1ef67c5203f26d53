"""Serve the service's WSGI app on a real loopback port for tests over HTTP, with the same
waitress server and options as `python service.py` (X-Forwarded-For is left for the service to
judge)."""

from __future__ import annotations

import contextlib

import simulator
from mpesa_service.entrypoint import WAITRESS_OPTIONS
from mpesa_service.throughput import waitress_server


@contextlib.contextmanager
def serving(app, threads: int = 8, drain_seconds: float = 3):
    """Yield the base URL of `app` served by waitress on 127.0.0.1 and a free port; on the way
    out, wait up to `drain_seconds` for the requests being answered."""
    server = simulator.BackgroundServer(
        app, threads=threads, create_server=waitress_server.create, **WAITRESS_OPTIONS
    )
    try:
        yield server.base_url
    finally:
        server.stop(drain_seconds)
