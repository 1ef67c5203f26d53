"""Ids: random version 4 UUIDs as text, cheap enough for every row and journal entry."""

from __future__ import annotations

import os
import threading
import uuid


def new_id() -> str:
    """A random (version 4) UUID as text, like str(uuid.uuid4()), from os.urandom bytes that
    each thread fetches 256 ids' worth at a time: every os.urandom call lets go of the GIL, and
    under load taking it back once per id is what the busy callback threads would wait on."""
    pool = _random_pool
    if pool.offset == len(pool.data):
        pool.data, pool.offset = os.urandom(16 * 256), 0
    chunk = pool.data[pool.offset : pool.offset + 16]
    pool.offset += 16
    return str(uuid.UUID(bytes=chunk, version=4))


class _RandomPool(threading.local):
    """One thread's os.urandom bytes not yet used by new_id."""

    def __init__(self):
        self.data, self.offset = b"", 0


_random_pool = _RandomPool()
# A forked child starts with its parent's unused bytes: drop them, or both would make the
# same ids.
os.register_at_fork(after_in_child=lambda: _random_pool.__init__())
