"""Group commit in two stages: many threads hand items to one thread, which processes whatever
has queued up as one batch and may answer each submitter early; a second thread then takes the
processed batches, while the first processes the next, and answers the rest.

Callbacks use it so that under load one fsync and one database transaction serve a whole
batch, and the database round trips run on one thread instead of on every request thread
queueing for the GIL. With no load a batch is a single item, so nothing waits for company."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mpesa_service import log

BATCH = 64  # the most tickets a stage takes at once, and the most waiting for the second
IDLE_SECONDS = 1.0  # a stage's thread exits after this long without work

Item = TypeVar("Item")
Handover = TypeVar("Handover")


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class Ticket(Generic[Item, Handover]):
    """One submitted item and, once processed, its result or the error to raise. The
    submitter waits on a lock the stages release: the cheapest hand-off there is, which
    matters when a batch wakes dozens of request threads at once. A ticket is finished at
    most once; what is set afterwards no longer reaches the submitter."""

    item: Item
    result: object = None
    error: BaseException | None = None
    finished: bool = False
    handover: Handover | None = None  # what `process` leaves for `then`
    _pending: threading.Lock = field(default_factory=_taken_lock, repr=False)

    def wait(self) -> None:
        self._pending.acquire()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._pending.release()


class GroupCommit(Generic[Item, Handover]):
    """`submit(item)` blocks until its ticket is finished, and returns its result or raises
    its error. `process(tickets)`, on one thread, handles each batch that queued up: it sets
    results and errors, and may `finish()` a ticket to answer its submitter before the batch
    is done. A ticket it leaves without an error goes on to `then(tickets)`, run on a second
    thread inside `then_context()` (to hold a connection, say) in the order processed, while
    the first processes what came next; `then` may set results and errors too, and every
    ticket is finished after it. An exception escaping either stage fails every ticket of
    its batch not yet finished. While a batch's worth waits for `then`, the first stage waits
    before handing on more, so that a slow second stage slows the first. Both threads start
    on demand and exit after IDLE_SECONDS without work, so an idle service holds none.
    `drain()` waits until everything submitted has been through both stages."""

    def __init__(
        self,
        name: str,
        process: Callable[[list[Ticket[Item, Handover]]], None],
        then: Callable[[list[Ticket[Item, Handover]]], None],
        then_context: Callable[[], AbstractContextManager],
    ):
        self._name = name
        self._process = process
        self._then = then
        self._then_context = then_context
        self._queue: list[Ticket] = []  # submitted, waiting for process
        self._handed: list[Ticket] = []  # through process, waiting for then
        lock = threading.Lock()
        self._ready = threading.Condition(lock)  # work for the first stage
        self._handed_ready = threading.Condition(lock)  # work for the second
        self._room = threading.Condition(lock)  # room among the handed
        self._settled = threading.Condition(lock)  # nothing left in flight, for drain()
        self._in_flight = 0  # submitted and not yet through both stages
        self._writing = False
        self._then_running = False
        self.batches = 0
        self.largest_batch = 0

    def submit(self, item: Item) -> object:
        ticket = Ticket(item)
        with self._ready:
            self._queue.append(ticket)
            self._in_flight += 1
            if not self._writing:
                self._start_writer()
            self._ready.notify()
        ticket.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted so far (and any submitted meanwhile) has been
        through both stages, not just answered; False if `timeout` passed first."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._in_flight, timeout)

    # --- the first stage ---------------------------------------------------------------

    def _start_writer(self) -> None:
        self._writing = True
        threading.Thread(target=self._write, name=self._name, daemon=True).start()

    def _write(self) -> None:
        try:
            while batch := self._next_batch():
                self._process_batch(batch)
        finally:
            with self._ready:
                self._writing = False
                if self._queue:  # submitted just as this thread gave up
                    self._start_writer()

    def _next_batch(self) -> list[Ticket]:
        with self._ready:
            if not self._queue:
                self._ready.wait(IDLE_SECONDS)
            batch = self._queue[:BATCH]
            del self._queue[:BATCH]
            if batch:
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(batch))
            return batch

    def _process_batch(self, batch: list[Ticket]) -> None:
        processed = self._run_stage(self._process, batch, "")
        onward = [ticket for ticket in batch if ticket.error is None] if processed else []
        self._settle([ticket for ticket in batch if ticket.error is not None or not onward])
        if onward:
            self._hand_on(onward)

    def _hand_on(self, tickets: list[Ticket]) -> None:
        with self._ready:
            while len(self._handed) >= BATCH:
                self._room.wait()
            self._handed.extend(tickets)
            if not self._then_running:
                self._start_then()
            self._handed_ready.notify()

    # --- the second stage --------------------------------------------------------------

    def _start_then(self) -> None:
        self._then_running = True
        threading.Thread(target=self._then_loop, name=f"{self._name}-then", daemon=True).start()

    def _then_loop(self) -> None:
        try:
            with self._then_context():
                while batch := self._next_handed():
                    self._run_stage(self._then, batch, " after processing")
                    self._settle(batch)
        finally:
            with self._ready:
                self._then_running = False
                if self._handed:  # handed on just as this thread gave up
                    self._start_then()

    def _next_handed(self) -> list[Ticket]:
        with self._ready:
            if not self._handed:
                self._handed_ready.wait(IDLE_SECONDS)
            batch = self._handed[:BATCH]
            del self._handed[:BATCH]
            return batch

    # --- both ----------------------------------------------------------------------------

    def _run_stage(self, stage, batch: list[Ticket], which: str) -> bool:
        """`stage(batch)`; False if it raised, its error then failing every ticket not yet
        answered or failed."""
        try:
            stage(batch)
            return True
        except BaseException as error:  # noqa: BLE001 - handed to every waiting submitter
            log.exception("%s: a batch of %d failed%s", self._name, len(batch), which)
            for ticket in batch:
                if ticket.error is None and not ticket.finished:
                    ticket.error = error
            return False

    def _settle(self, batch: list[Ticket]) -> None:
        """Finish these tickets and count them out of the work in flight."""
        for ticket in batch:
            ticket.finish()
        with self._ready:
            self._in_flight -= len(batch)
            self._room.notify_all()
            if not self._in_flight:
                self._settled.notify_all()
