"""Idempotency keys: one caller's key, one subject (a payout or a collection), one first answer.

A key is claimed (inserted) in the same transaction that writes its subject ahead of the call
to Daraja, so the key's primary key makes concurrent requests with one key create one subject
and send one request. The same key with the same body replays the first answer; with another
body, or for another kind of request, it is a 409."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import sqlalchemy as sa

from mpesa_service.context import ApiError, Service
from mpesa_service.storage import idempotency_keys, utcnow

KEY_LIMIT = 255


def require_key(key: str) -> str:
    if not key or len(key) > KEY_LIMIT:
        raise ApiError(
            400,
            f"Idempotency-Key header: required, at most {KEY_LIMIT} characters",
            field="Idempotency-Key",
        )
    return key


def fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def claim(conn: sa.Connection, key: str, scope: str, request_hash: str, subject_id: str) -> None:
    """Record the key for `subject_id`; IntegrityError when another request holds it."""
    conn.execute(
        idempotency_keys.insert().values(
            idempotency_key=key,
            scope=scope,
            request_hash=request_hash,
            subject_id=subject_id,
            created_at=utcnow(),
        )
    )


def remember(svc: Service, key: str, status: int, answer: dict) -> None:
    """Keep the first answer given for the key, to replay it."""
    with svc.engine.begin() as conn:
        conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.idempotency_key == key)
            .values(response_status=status, response_body=json.dumps(answer))
        )


def replay(
    svc: Service,
    key: str,
    scope: str,
    request_hash: str,
    *,
    in_flight: Callable[[str], tuple[int, dict]],
    conflict_details: Callable[[str], dict] = lambda subject_id: {},
    wait: bool = False,
) -> tuple[int, dict] | None:
    """(first status, first answer) for a key seen before; None for a new key. A request that
    raced the first one (`wait`) waits for its answer rather than sending anything itself; if
    none comes in time it gets `in_flight(subject_id)`, the subject as it stands."""
    seconds = svc.settings.seconds("DARAJA_TIMEOUT_SECONDS") + 5 if wait else 0
    deadline = time.monotonic() + seconds
    while True:
        with svc.engine.connect() as conn:
            row = conn.execute(
                sa.select(idempotency_keys).where(idempotency_keys.c.idempotency_key == key)
            ).first()
        if row is None:
            return None
        if row.scope != scope:
            raise ApiError(409, f"Idempotency-Key {key!r} was already used for a {row.scope}")
        if row.request_hash != request_hash:
            raise ApiError(
                409,
                f"Idempotency-Key {key!r} was already used with a different request body",
                **conflict_details(row.subject_id),
            )
        if row.response_body:
            return row.response_status, json.loads(row.response_body)
        if time.monotonic() >= deadline:
            return in_flight(row.subject_id)
        time.sleep(0.05)
