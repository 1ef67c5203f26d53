"""The service's waitress server (mpesa_service.throughput.waitress_server): its loop leaves a
channel to the request thread answering on it, and big or slowly read answers still arrive
whole, on a kept-alive connection, past the output high watermark included."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import time

import simulator
from mpesa_service.entrypoint import WAITRESS_OPTIONS
from mpesa_service.throughput import waitress_server


def streaming_app(chunks: list[bytes]):
    def app(environ, start_response):
        length = sum(len(chunk) for chunk in chunks)
        start_response("200 OK", [("Content-Length", str(length))])
        return iter(chunks)

    return app


@contextlib.contextmanager
def served(app, **options):
    """(the background server, a keep-alive client connection to it)."""
    server = simulator.BackgroundServer(
        app, threads=4, create_server=waitress_server.create, **{**WAITRESS_OPTIONS, **options}
    )
    connection = http.client.HTTPConnection("127.0.0.1", server.server.effective_port, timeout=30)
    try:
        yield server, connection
    finally:
        connection.close()
        server.stop()


def fetch(connection: http.client.HTTPConnection, pause: float = 0.0) -> bytes:
    connection.request("GET", "/")
    time.sleep(pause)  # not reading yet: the socket buffers fill and the output queues up
    response = connection.getresponse()
    assert response.status == 200
    return response.read()


def test_the_server_makes_answering_channels():
    with served(streaming_app([b"ok"])) as (server, connection):
        assert server.server.channel_class is waitress_server.AnsweringChannel
        assert fetch(connection) == b"ok"


def test_an_answer_bigger_than_the_socket_buffers_arrives_whole_on_a_kept_alive_connection():
    chunks = [bytes([number % 251]) * 65536 for number in range(128)]  # 8 MiB
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    with served(streaming_app(chunks)) as (_, connection):
        for pause in (0.0, 0.3):
            assert hashlib.sha256(fetch(connection, pause)).hexdigest() == expected


def test_output_past_the_high_watermark_is_drained_while_the_request_thread_waits():
    # The request thread blocks until the loop has sent the buffer below the watermark: the
    # one case where the loop must write while a request is still being answered.
    chunks = [bytes([number]) * (1 << 20) for number in range(6)]
    with served(streaming_app(chunks), outbuf_high_watermark=1 << 20) as (_, connection):
        assert fetch(connection, pause=0.5) == b"".join(chunks)
        assert fetch(connection) == b"".join(chunks)


def test_a_channel_is_left_alone_only_while_its_request_is_answered():
    ours, theirs = socket.socketpair()
    with served(streaming_app([b"ok"]), outbuf_high_watermark=1000) as (server, _), theirs:
        channel = waitress_server.AnsweringChannel(
            server.server, ours, ("127.0.0.1", 0), server.server.adj, map={}
        )
        channel.total_outbufs_len = 10
        assert channel.writable()  # nothing being answered: the loop sends it
        channel.requests = ["a request being answered"]
        assert not channel.writable()  # the request thread sends its own answer
        channel.total_outbufs_len = 1001
        assert channel.writable()  # past the watermark the request thread waits for the loop
        channel.total_outbufs_len = 10
        channel.close_when_flushed = True
        assert channel.writable()  # closing: flush and close as waitress does
        channel.close()
