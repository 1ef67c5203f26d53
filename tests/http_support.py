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
    sockets: dict = {}
    server = waitress.create_server(
        app, map=sockets, host="127.0.0.1", port=0, threads=threads, **WAITRESS_OPTIONS
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Close every socket from the serving loop's own thread, so the loop ends at once and
        # never polls a closed descriptor.
        server.trigger.pull_trigger(lambda: [s.close() for s in list(sockets.values())])
        thread.join(timeout=5)
        server.task_dispatcher.shutdown(timeout=5)
