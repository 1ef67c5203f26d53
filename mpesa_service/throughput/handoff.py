"""What crosses from a callback's request thread to the writer's threads: a Delivery, what the
request brings, and a Journaled callback, what the apply stage takes."""

from __future__ import annotations

from typing import NamedTuple


class Delivery(NamedTuple):
    """A callback as its request brings it: its kind (a key of callbacks.CALLBACK_HANDLERS),
    body, sender's address, the payment its URL named ("" if none), and whether its answer
    waits until it is applied rather than only journaled."""

    kind: str
    body: bytes
    address: str
    payment_id: str
    until_applied: bool


class Journaled(NamedTuple):
    """A callback as journaled, ready to apply: its kind, body as text, journal entry id, the
    payment its URL named ("" if none), and, if it was parsed already, json_or_problem(raw)."""

    kind: str
    raw: str
    journal_id: str
    payment_id: str = ""
    parsed: tuple | None = None
