"""An STK push that Daraja accepted while the database went away: the service keeps trying to
record it instead of answering 503 (which a client would retry, prompting the customer twice),
and says "do not retry" if it cannot. The outage is real: the service reaches MariaDB through a
TCP relay that the test cuts (refusing and dropping connections) and restores."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import pytest
import sqlalchemy as sa

import service
from tests.conftest import free_port
from tests.service_support import payment_completed, start_stack, wait_until

STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
PUSH = {
    "phone": "0712345678",
    "amount": 150,
    "account_reference": "INV10023",
    "description": "Top up",
}


class CuttableRelay:
    """Relays TCP connections from a local port to `target`; `cut()` closes the port and every
    relayed connection (a database gone away), `restore()` opens the port again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, set()
        listener.close()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            client.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile: this one goes too
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relayed_mariadb(migrated_mariadb_url):
    """(relay, URL of a migrated MariaDB database reached through the relay)."""
    url = sa.make_url(migrated_mariadb_url)
    relay = CuttableRelay((url.host, url.port or 3306))
    yield relay, url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    relay.cut()


@pytest.fixture
def outage_stack(relayed_mariadb, tmp_path):
    """Start the service through the relay with extra settings; the simulator answers an STK
    push only `slow_answer_seconds` after taking it (or as `scenario` says), and the customer
    pays `pay_after` seconds after the push."""
    _, url = relayed_mariadb
    stops = []

    def start(settings: dict, scenario: str = "slow_answer", pay_after: float = 4):
        simulator = {"slow_answer_seconds": 1.0, "stk_answer_delay_seconds": pay_after}
        stack, stop = start_stack(url, tmp_path, settings, simulator)
        stops.append(stop)
        stack.sim.arm(scenario, path=STK_PUSH_PATH)
        return stack

    yield start
    for stop in stops:
        stop()


def push_during_an_outage(stack, relay, outage_seconds: float):
    """Send an STK push; once Daraja has it (and will answer a second later), cut the database
    for `outage_seconds`. Returns the service's answer."""
    answers = []
    client = threading.Thread(
        target=lambda: answers.append(stack.post("/payments/mpesa/stk-initiate", PUSH))
    )
    client.start()
    wait_until(lambda: stack.sim_requests(STK_PUSH_PATH), interval=0.01)
    relay.cut()
    try:
        time.sleep(outage_seconds)
    finally:
        relay.restore()
    client.join(30)
    return answers[0]


def test_a_push_is_recorded_when_the_database_comes_back_within_the_retry_time(
    relayed_mariadb, outage_stack
):
    relay, _ = relayed_mariadb
    # Daraja answers 1 s into the 2 s outage; the write tried again goes in by 2.75 s, and the
    # customer pays at 3.5 s.
    stack = outage_stack({"STK_RECORD_RETRY_SECONDS": "20"}, pay_after=3.5)

    answer = push_during_an_outage(stack, relay, outage_seconds=2)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "pending" and body["checkout_request_id"]
    assert len(stack.sim_requests(STK_PUSH_PATH)) == 1  # the customer was prompted once
    checkout = body["checkout_request_id"]
    paid = wait_until(
        lambda: stack.rows(
            service.payments,
            service.payments.c.checkout_request_id == checkout,
            service.payments.c.status == "completed",
        )
    )
    assert [row.id for row in paid] == [body["payment_id"]]


def test_a_push_not_recorded_in_time_is_202_saying_not_to_retry(
    relayed_mariadb, outage_stack, caplog
):
    relay, _ = relayed_mariadb
    # Daraja answers at 1 s and the service gives up recording it by 2 s, 1 s before the
    # database is back; the customer pays 1.5 s after that.
    stack = outage_stack({"STK_RECORD_RETRY_SECONDS": "1"}, pay_after=4.5)

    with caplog.at_level(logging.ERROR, logger="mpesa"):
        answer = push_during_an_outage(stack, relay, outage_seconds=3)

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["recorded"] is False
    assert "do not send it again" in body["warning"]
    assert body["checkout_request_id"]
    assert len(stack.sim_requests(STK_PUSH_PATH)) == 1
    (row,) = stack.rows(service.payments, service.payments.c.id == body["payment_id"])
    assert (row.status, row.checkout_request_id) == ("pending", None)
    assert row.next_query_at is not None  # so the sweep expires it
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        body["payment_id"] in message and body["checkout_request_id"] in message
        for message in logged
    ), logged
    # Its CallBackURL names the payment, so the callback completes it all the same.
    paid = payment_completed(stack, body["payment_id"], timeout=15)
    assert paid.checkout_request_id == body["checkout_request_id"]


def test_a_push_daraja_never_answered_is_504_not_503_when_the_database_is_down(
    relayed_mariadb, outage_stack
):
    relay, _ = relayed_mariadb
    # Daraja takes the push and never answers; the service gives up after 1 s and on
    # recording that by 2 s, 1 s before the database is back; the customer pays 1.5 s after.
    stack = outage_stack(
        {"STK_RECORD_RETRY_SECONDS": "1", "DARAJA_TIMEOUT_SECONDS": "1"},
        scenario="accepted_no_response",
        pay_after=4.5,
    )

    answer = push_during_an_outage(stack, relay, outage_seconds=3)

    assert answer.status_code == 504, answer.text  # "may or may not have been sent"
    assert len(stack.sim_requests(STK_PUSH_PATH)) == 1
    payment_id = answer.json()["payment_id"]
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    assert row.status == "pending" and row.next_query_at is not None  # the sweep expires it
    assert payment_completed(stack, payment_id, timeout=15).checkout_request_id  # unless it is paid
