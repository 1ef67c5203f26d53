"""Group commit: many threads hand items to one writer thread, which processes whatever has
queued up as one batch and wakes each submitter with its own result or error, by the end of
the batch or earlier if the work the submitter waits for is done sooner. A second stage may
follow on a thread of its own, taking processed batches while the writer processes the next.

Callbacks use it so that under load one fsync and one database transaction serve a whole
batch, and the database round trips run on one thread instead of on every request thread
queueing for the GIL. With no load a batch is a single item, so nothing waits for company."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from mpesa_service import log


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class Ticket:
    """One submitted item and, once processed, its result or the error to raise. The
    submitter waits on a lock the writer releases: the cheapest hand-off there is, which
    matters when a batch wakes dozens of request threads at once. Only the writer finishes a
    ticket, at most once; what it sets afterwards no longer reaches the submitter."""

    item: object
    result: object = None
    error: BaseException | None = None
    finished: bool = False
    handover: object = None  # what `process` leaves for `then`
    _pending: threading.Lock = field(default_factory=_taken_lock, repr=False)

    def wait(self) -> None:
        self._pending.acquire()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._pending.release()


class GroupCommit:
    """`submit(item)` blocks until `process(tickets)` has handled a batch containing it, or
    has finished its ticket early. `process` sets each ticket's result or error, and may
    `finish()` a ticket before the batch is done to answer its submitter sooner; an exception
    escaping it fails every ticket not yet finished. `drain()` waits until everything submitted
    has been processed. Up to `writers` writer threads take batches, so that while one waits on
    the disk or the database the next batch is already being written; they start on demand and
    exit after `idle_seconds` without work, so an idle service (or a test's) holds no thread.
    Each writer thread runs inside `writer_context()` for its life (to hold a connection, say);
    entering it should not fail, or the batches queued meanwhile wait for the next submit.

    With `then`, a ticket that `process` leaves without an error is not done yet: it goes on
    to `then(tickets)`, run on one further thread (inside `then_context()`, started and idle
    the same way) in batches of up to `then_max_batch`, in the order processed, while the
    writers process what came next. `then` may set results and errors as `process` does, and
    `drain()` waits for it too. A writer with a full batch's worth already waiting for `then`
    waits before handing on more, so that a slow second stage slows the first."""

    def __init__(
        self,
        process: Callable[[list[Ticket]], None],
        max_batch: int = 64,
        idle_seconds: float = 1.0,
        name: str = "group-commit",
        writers: int = 1,
        writer_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        then: Callable[[list[Ticket]], None] | None = None,
        then_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        then_max_batch: int = 64,
    ):
        self._process = process
        self._max_batch = max_batch
        self._idle_seconds = idle_seconds
        self._name = name
        self._max_writers = writers
        self._writer_context = writer_context
        self._queue: list[Ticket] = []
        lock = threading.Lock()
        self._ready = threading.Condition(lock)  # work for the writers
        self._settled = threading.Condition(lock)  # nothing left in flight, for drain()
        self._in_flight = 0  # submitted and not yet processed
        self._writers = 0
        self._idle_writers = 0
        self._then = then
        self._then_context = then_context
        self._then_max_batch = then_max_batch
        self._handed: list[Ticket] = []  # through process, waiting for then
        self._handed_ready = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._then_running = False
        self.batches = 0
        self.largest_batch = 0

    def submit(self, item: object) -> object:
        ticket = Ticket(item)
        with self._ready:
            self._queue.append(ticket)
            self._in_flight += 1
            if not self._idle_writers and self._writers < self._max_writers:
                self._start_writer()
            self._ready.notify()
        ticket.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _write(self) -> None:
        counted_out = False
        try:
            with self._writer_context():
                while batch := self._next_batch():
                    self._process_batch(batch)
                counted_out = True  # an empty batch means _next_batch counted this writer out
        finally:
            if not counted_out:
                with self._ready:
                    self._writers -= 1

    def _process_batch(self, batch: list[Ticket]) -> None:
        processed = self._run_stage(self._process, batch, "")
        onward = []
        if processed and self._then is not None:
            onward = [ticket for ticket in batch if ticket.error is None]
        self._settle([ticket for ticket in batch if ticket.error is not None or not onward])
        if onward:
            self._hand_on(onward)

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

    def _hand_on(self, tickets: list[Ticket]) -> None:
        with self._ready:
            while len(self._handed) >= self._then_max_batch:
                self._room.wait()
            self._handed.extend(tickets)
            if not self._then_running:
                self._start_then()
            self._handed_ready.notify()

    def _start_then(self) -> None:
        self._then_running = True
        threading.Thread(target=self._then_loop, name=f"{self._name}-then", daemon=True).start()

    def _then_loop(self) -> None:
        try:
            with self._then_context():
                while batch := self._next_handed():
                    self._run_then(batch)
        finally:
            with self._ready:
                self._then_running = False
                if self._handed:  # handed on just as this thread gave up
                    self._start_then()

    def _next_handed(self) -> list[Ticket]:
        with self._ready:
            if not self._handed:
                self._handed_ready.wait(self._idle_seconds)
            batch = self._handed[: self._then_max_batch]
            del self._handed[: self._then_max_batch]
            return batch

    def _run_then(self, batch: list[Ticket]) -> None:
        self._run_stage(self._then, batch, " after processing")
        self._settle(batch)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted so far (and any submitted meanwhile) has been
        processed, not just answered; False if `timeout` passed first."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._in_flight, timeout)

    def _start_writer(self) -> None:
        self._writers += 1
        threading.Thread(target=self._write, name=self._name, daemon=True).start()

    def _next_batch(self) -> list[Ticket]:
        with self._ready:
            if not self._queue:
                self._idle_writers += 1
                self._ready.wait(self._idle_seconds)
                self._idle_writers -= 1
            if not self._queue:
                self._writers -= 1
                return []
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            return batch
