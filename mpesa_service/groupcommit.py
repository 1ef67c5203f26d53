"""Group commit: many threads hand items to one writer thread, which processes whatever has
queued up as one batch and then wakes each submitter with its own result or error.

Callbacks use it so that under load one fsync and one database transaction serve a whole
batch, and the database round trips run on one thread instead of on every request thread
queueing for the GIL. With no load a batch is a single item, so nothing waits for company."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mpesa_service import log


@dataclass
class Ticket:
    """One submitted item and, once processed, its result or the error to raise."""

    item: object
    result: object = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class GroupCommit:
    """`submit(item)` blocks until `process(tickets)` has handled a batch containing it.
    `process` sets each ticket's result or error; an exception escaping it fails every ticket
    of the batch. Up to `writers` writer threads take batches, so that while one waits on the
    disk or the database the next batch is already being written; they start on demand and
    exit after `idle_seconds` without work, so an idle service (or a test's) holds no thread."""

    def __init__(
        self,
        process: Callable[[list[Ticket]], None],
        max_batch: int = 64,
        idle_seconds: float = 1.0,
        name: str = "group-commit",
        writers: int = 1,
    ):
        self._process = process
        self._max_batch = max_batch
        self._idle_seconds = idle_seconds
        self._name = name
        self._max_writers = writers
        self._queue: list[Ticket] = []
        self._ready = threading.Condition()
        self._writers = 0
        self._idle_writers = 0
        self.batches = 0
        self.largest_batch = 0

    def submit(self, item: object) -> object:
        ticket = Ticket(item)
        with self._ready:
            self._queue.append(ticket)
            if not self._idle_writers and self._writers < self._max_writers:
                self._writers += 1
                threading.Thread(target=self._write, name=self._name, daemon=True).start()
            self._ready.notify()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _write(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            try:
                self._process(batch)
            except BaseException as error:  # noqa: BLE001 - handed to every waiting submitter
                log.exception("%s: a batch of %d failed", self._name, len(batch))
                for ticket in batch:
                    if ticket.error is None:
                        ticket.error = error
            finally:
                for ticket in batch:
                    ticket.done.set()

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
