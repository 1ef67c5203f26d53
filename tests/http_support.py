"""Serve a WSGI app on a real loopback port in a background thread, for tests over HTTP."""

from __future__ import annotations

import contextlib
import threading

import waitress

from mpesa_service.entrypoint import WAITRESS_OPTIONS


@contextlib.contextmanager
def serving(app, threads: int = 8):
    """Yield the base URL of `app` served by waitress on 127.0.0.1 and a free port, with the
    service's own waitress options (X-Forwarded-For is left for the service to judge)."""
    server = waitress.create_server(
        app, host="127.0.0.1", port=0, threads=threads, **WAITRESS_OPTIONS
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop(server, thread)


def stop(server, thread: threading.Thread) -> None:
    """Close the listener and every open connection so the serving loop ends at once (closing
    only the listener leaves keep-alive connections holding the loop open)."""
    server.close()
    for channel in list(server._map.values()):
        channel.close()
    server.task_dispatcher.shutdown()
    thread.join(timeout=5)
