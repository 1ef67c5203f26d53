"""The callback journal: the append-only file every callback is written to before any database
work, and the rows that say which of its entries the database has applied."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.ids import new_id
from mpesa_service.storage import callback_journal, execute_precompiled, inserting, utcnow


class Journal:
    """The append-only JSON-lines file every callback is written to (and flushed to disk) before
    any database work: the old system's `b2c_callbacks.log`. A callback whose database work did
    not finish is applied later from here by `replay`.

    The file stays open between appends, because opening and closing it for each batch lets go
    of the GIL twice on the busy callback writer (docs/evidence.md). If the path comes to name
    another file (the journal was rotated, moved or deleted), appends go to the new one from the
    next check, at most RECHECK_SECONDS later; the entries written meanwhile are in the old file,
    on disk. A file that ends in a torn line (a write cut short by a full disk or a crash) gets a
    newline before the next entry, so that the torn line does not take the next entry down with
    it."""

    RECHECK_SECONDS = 1.0

    def __init__(self, path: str | Path, refused_per_minute: int = 20):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.refusals = RefusalLimiter(refused_per_minute)
        self._lock = threading.Lock()
        self._descriptor: int | None = None
        self._close_descriptor = None  # a weakref.finalize closing it, also when collected
        self._checked_at = 0.0
        self._torn_tail = False

    def append(self, kind: str, body: bytes, remote_addr: str) -> str:
        return self.append_many([(kind, body, remote_addr, "")])[0]

    def append_many(self, deliveries: list[tuple[str, bytes, str, str]]) -> list[str]:
        """Journal (kind, body, remote address, payment id) deliveries with one write and one
        fsync; their entry ids, in order. The payment id is the one the callback's URL named
        (an STK push's own, see stk.initiate_stk), or ""."""
        received_at = datetime.now(UTC).isoformat()
        ids, lines = [], []
        for kind, body, remote_addr, payment_id in deliveries:
            ids.append(new_id())
            entry = {
                "id": ids[-1],
                "kind": kind,
                "received_at": received_at,
                "remote_addr": remote_addr,
                "state": "received",
                "reason": "",
                **({"payment_id": payment_id} if payment_id else {}),
                **_journal_body(body),
            }
            lines.append(json.dumps(entry, separators=(",", ":")) + "\n")
        self._write_durably("".join(lines).encode("utf-8"))
        return ids

    def append_refused(
        self, kind: str, body: bytes, size: int, remote_addr: str, reason: str
    ) -> str | None:
        """A bounded record of a refused delivery (`body`: what of it was read, `size` bytes
        long in all): why, from whom, its size and SHA-256 (when it was read whole), and at
        most its first REFUSED_HEAD_BYTES, never the whole body; and at most
        `refused_per_minute` records per sender (the rest are counted, and the count goes into
        that sender's next record), so that forged deliveries cannot fill the disk the
        genuine ones are journaled on. Its id, or None when the sender is over its quota."""
        allowed, suppressed = self.refusals.allow(remote_addr)
        if not allowed:
            return None
        entry = {
            "id": new_id(),
            "kind": kind,
            "received_at": datetime.now(UTC).isoformat(),
            "remote_addr": remote_addr,
            "state": "rejected",
            "reason": reason,
            "size": size,
            "sha256": hashlib.sha256(body).hexdigest() if size == len(body) else None,
            "body_head": body[:REFUSED_HEAD_BYTES].decode("utf-8", errors="replace"),
            **({"not_journaled_before": suppressed} if suppressed else {}),
        }
        self._write_durably((json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8"))
        return entry["id"]

    def free_bytes(self) -> int:
        """Free space on the journal's filesystem."""
        return shutil.disk_usage(self.path.parent).free

    def _write_durably(self, data: bytes) -> None:
        # Under the lock, which only the callback writer and the rare rejected callback take: a
        # descriptor is never replaced while another thread writes to it. One O_APPEND write
        # keeps entries whole beside other processes appending to the same file.
        with self._lock:
            try:
                descriptor = self._open_descriptor()
                if self._torn_tail:
                    data = b"\n" + data
                written = os.write(descriptor, data)
                if written != len(data):
                    raise OSError(
                        f"journal {self.path}: short write ({written} of {len(data)} bytes)"
                    )
                os.fsync(descriptor)
                self._torn_tail = False
            except OSError:
                self._forget_descriptor()  # the next append starts on a fresh one
                raise

    def _open_descriptor(self) -> int:
        now = time.monotonic()
        if self._descriptor is not None and now - self._checked_at >= self.RECHECK_SECONDS:
            self._checked_at = now
            if not self._still_at_path(self._descriptor):
                self._forget_descriptor()
        if self._descriptor is None:
            # Read and write, so that the last byte can be checked.
            descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            self._descriptor, self._checked_at = descriptor, now
            self._close_descriptor = weakref.finalize(self, os.close, descriptor)
            size = os.fstat(descriptor).st_size
            self._torn_tail = size > 0 and os.pread(descriptor, 1, size - 1) != b"\n"
        return self._descriptor

    def _still_at_path(self, descriptor: int) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(descriptor)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _forget_descriptor(self) -> None:
        close = self._close_descriptor
        self._descriptor = self._close_descriptor = None
        if close is not None:
            with contextlib.suppress(OSError):  # a descriptor gone bad may not close either
                close()

    def entries(self):
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as journal:
            for line in journal:
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    log.error("unreadable journal line skipped: %.80s", line)


REFUSED_HEAD_BYTES = 2048


class RefusalLimiter:
    """How many refused deliveries each sender may have journaled per minute."""

    WINDOW_SECONDS = 60.0
    MAX_SENDERS = 10_000

    def __init__(self, per_window: int):
        self.per_window = per_window
        self._lock = threading.Lock()
        self._senders: dict[str, list] = {}  # sender -> [window start, journaled, suppressed]

    def allow(self, sender: str) -> tuple[bool, int]:
        """(whether to journal this one, how many were not journaled before it)."""
        now = time.monotonic()
        with self._lock:
            if len(self._senders) > self.MAX_SENDERS:
                self._forget_old(now)
            window = self._senders.setdefault(sender, [now, 0, 0])
            if now - window[0] >= self.WINDOW_SECONDS:
                window[0], window[1] = now, 0
            if window[1] >= self.per_window:
                window[2] += 1
                if window[2] == 1:
                    log.warning("refused deliveries from %s are no longer journaled", sender)
                return False, 0
            window[1] += 1
            suppressed, window[2] = window[2], 0
            return True, suppressed

    def _forget_old(self, now: float) -> None:
        for sender, window in list(self._senders.items()):
            if now - window[0] >= self.WINDOW_SECONDS:
                del self._senders[sender]


def _journal_body(body: bytes) -> dict:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode()}


def journal_entry_body(entry: dict) -> bytes:
    if "body_base64" in entry:
        return base64.b64decode(entry["body_base64"])
    return entry.get("body", "").encode("utf-8")


JOURNAL_ENTRY = sa.select(callback_journal.c.id).where(
    callback_journal.c.id == sa.bindparam("journal_id")
)


def mark_journal_applied(conn: sa.Connection, journal_id: str, kind: str) -> bool:
    """Record that a journal entry reached the database; False if it already had (a replay)."""
    if conn.execute(JOURNAL_ENTRY, {"journal_id": journal_id}).first():
        return False
    mark_journal_entries_applied(conn, [(journal_id, kind)])
    return True


def mark_journal_entries_applied(conn: sa.Connection, entries: list[tuple[str, str]]) -> None:
    """Record (journal id, kind) entries journaled just now as applied, in one statement. Should
    a replay have raced one of them there, the unique key fails the transaction."""
    if entries:
        execute_precompiled(conn, *journal_entries_applied(entries))


def journal_entries_applied(entries: list[tuple[str, str]]) -> tuple[sa.Insert, list[dict]]:
    """The statement and rows of mark_journal_entries_applied, to run with others."""
    now = utcnow()
    rows = [
        dict(id=journal_id, kind=kind, state="applied", received_at=now, applied_at=now)
        for journal_id, kind in entries
    ]
    return inserting(callback_journal, tuple(rows[0])), rows
