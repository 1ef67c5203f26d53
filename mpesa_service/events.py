"""Outbound events: a transactional outbox of money outcomes, delivered signed, at least once.

An event is written by `emit` in the transaction of the change it tells of (so a rollback emits
nothing and a crash loses nothing), then POSTed to EVENTS_URL by the `events` job, signed with
EVENTS_SECRET, and retried on EVENTS_RETRY_SCHEDULE_SECONDS until the receiver answers 2xx or
EVENTS_GIVE_UP_HOURS pass. Each delivery is claimed by compare-and-set, so two processes never
deliver one event at once; an event waits while an older one of its subject is undelivered."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests
import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.ids import new_id
from mpesa_service.settings import Settings
from mpesa_service.storage import (
    event_deliveries,
    events,
    execute_precompiled,
    inserting,
    utcnow,
)
from recon.rules import iso_time_to_utc

# --- writing: the outbox -------------------------------------------------------------------

EVENT_TYPES = (
    "payout.completed",
    "payout.failed",
    "payout.review",
    "payout.awaiting_approval",
    "payout.rejected",
    "payout.expired",
    "payment.completed",
    "payment.failed",
    "payment.amount_mismatch",
    "payment.reversed",
    "c2b.received",
    "recon.finished",
)
EVENT_COLUMNS = ("id", "type", "subject", "created_at", "body", "state", "next_attempt_at")


def event_row(event_type: str, subject: str, data: dict) -> dict:
    """The outbox row of one event: its body is what its receiver gets, byte for byte."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"event type: one of {', '.join(EVENT_TYPES)}, not {event_type!r}")
    event_id, now = new_id(), utcnow()
    body = {"id": event_id, "type": event_type, "created": _iso(now), "data": data}
    return {
        "id": event_id,
        "type": event_type,
        "subject": subject,
        "created_at": now,
        "body": json.dumps(body, separators=(",", ":"), default=str),
        "state": "pending",
        "next_attempt_at": now,
    }


# The databases this process writes events to: a service with EVENTS_URL set turns them on for
# its database (build_service). Without it no event is built or written, so a deployment that
# does not use events pays nothing for them on the callback path.
_WRITING_TO: set[str] = set()


@functools.cache  # asked on every status move: a URL is rendered once
def _database_key(url: sa.URL) -> str:
    return url.set(query={}).render_as_string(hide_password=True)


def write_events_to(url: sa.URL, on: bool) -> None:
    key = _database_key(url)
    if on:
        _WRITING_TO.add(key)
    else:
        _WRITING_TO.discard(key)


def writes_events(conn: sa.Connection) -> bool:
    """Whether events are written to `conn`'s database (its service has EVENTS_URL set)."""
    return _database_key(conn.engine.url) in _WRITING_TO


def emit(conn: sa.Connection, event_type: str, subject: str, data: dict) -> str:
    """Write an event in `conn`'s transaction (call it where a status really moved): it is
    delivered once that transaction commits, and never if it rolls back. Returns its id."""
    row = event_row(event_type, subject, data)
    execute_precompiled(conn, inserting(events, EVENT_COLUMNS), row)
    return row["id"]


def emit_rows(conn: sa.Connection, rows: list[dict]) -> None:
    """Write several `event_row`s with one statement (the callback writer's batches)."""
    if rows:
        execute_precompiled(conn, inserting(events, EVENT_COLUMNS), rows)


def _iso(moment: datetime | None) -> str | None:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if moment else None


# --- signing ---------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Mpesa-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


# --- delivering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """Where and how events go: EVENTS_URL and its secret, timeout and retry schedule."""

    url: str
    secret: str = field(repr=False)
    timeout: float
    schedule: tuple[int, ...]
    give_up_after: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Delivery:
        return cls(
            url=settings["EVENTS_URL"],
            secret=settings["EVENTS_SECRET"],
            timeout=settings.seconds("EVENTS_TIMEOUT_SECONDS"),
            schedule=tuple(int(step) for step in settings.listing("EVENTS_RETRY_SCHEDULE_SECONDS")),
            give_up_after=timedelta(hours=settings.integer("EVENTS_GIVE_UP_HOURS")),
        )

    def wait_after(self, attempts: int) -> int:
        """Seconds to wait after the `attempts`-th failed attempt (the last step repeats)."""
        return self.schedule[min(attempts, len(self.schedule)) - 1] if self.schedule else 60


# At most this many deliveries per run of the job, so that one run never holds it for long.
RUN_LIMIT = 500
older = events.alias("older")
# Due, and unclaimed or its claim lapsed: what a claim's compare-and-set checks.
CLAIMABLE = sa.and_(
    events.c.state == "pending",
    events.c.next_attempt_at <= sa.bindparam("now"),
    sa.or_(events.c.claim_expires_at.is_(None), events.c.claim_expires_at < sa.bindparam("now")),
)
# ...and no older event of its subject still undelivered (read apart from the claim: MySQL
# refuses an UPDATE whose subquery reads the table it updates).
DUE = sa.and_(
    CLAIMABLE,
    ~sa.exists().where(
        older.c.subject == events.c.subject,
        older.c.seq < events.c.seq,
        older.c.state == "pending",
    ),
)


def claim_owner() -> str:
    """A name for one run of the job: host, process and a random part."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[:8]}"


def deliver_events(svc) -> int:
    """The `events` job: deliver what is due, oldest first; returns how many were delivered.
    An event whose delivery fails waits for its next step, and so do its subject's later ones."""
    delivery = Delivery.from_settings(svc.settings)
    if not delivery.url:
        return 0
    delivered, tried, owner = 0, set(), claim_owner()
    with requests.Session() as session:
        while len(tried) < RUN_LIMIT:
            due = _due(svc.engine, tried)
            if not due:
                break
            for seq, event_id in due:
                tried.add(seq)
                if claim_event(svc.engine, event_id, delivery.timeout, owner):
                    delivered += deliver_one(svc.engine, session, delivery, event_id, owner)
    return delivered


def _due(engine: sa.Engine, tried: set[int]) -> list[tuple[int, str]]:
    query = sa.select(events.c.seq, events.c.id).where(DUE).order_by(events.c.seq).limit(100)
    with engine.connect() as conn:
        rows = conn.execute(query, {"now": utcnow()}).all()
    return [(row.seq, row.id) for row in rows if row.seq not in tried]


def claim_event(engine: sa.Engine, event_id: str, timeout: float, owner: str) -> bool:
    """Claim the event's delivery (compare-and-set); False if another process has it."""
    now = utcnow()
    with engine.begin() as conn:
        claimed = conn.execute(
            events.update()
            .where(events.c.id == event_id, CLAIMABLE)
            .values(claim_owner=owner, claim_expires_at=now + timedelta(seconds=timeout + 60)),
            {"now": now},
        ).rowcount
    return claimed == 1


def deliver_one(engine: sa.Engine, session, delivery: Delivery, event_id: str, owner: str) -> int:
    """POST one claimed event, log the attempt and settle it; 1 if it was delivered."""
    with engine.connect() as conn:
        event = conn.execute(sa.select(events).where(events.c.id == event_id)).one()
    body = event.body.encode()
    status, error, started = None, None, time.monotonic()
    try:
        response = session.post(
            delivery.url,
            data=body,
            headers=delivery_headers(delivery.secret, event.id, body),
            timeout=delivery.timeout,
            allow_redirects=False,
        )
        status = response.status_code
    except requests.RequestException as failure:
        error = f"{type(failure).__name__}: {failure}"[:1000]
    latency = round((time.monotonic() - started) * 1000)
    ok = status is not None and 200 <= status < 300
    _settle(engine, event, owner, delivery, Attempt(ok, status, error, latency))
    return int(ok)


def delivery_headers(secret: str, event_id: str, body: bytes) -> dict:
    return {
        "Content-Type": "application/json",
        "Mpesa-Event-Id": event_id,
        "Mpesa-Signature": signature(secret, int(time.time()), body),
    }


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: 2xx or not, the receiver's status or the error, milliseconds."""

    ok: bool
    status_code: int | None
    error: str | None
    latency_ms: int


def _settle(engine, event, owner: str, delivery: Delivery, attempt: Attempt) -> None:
    """Log the attempt and record its outcome: delivered, the next step, or given up."""
    now = utcnow()
    attempts = event.attempts + 1
    values = {"attempts": attempts, "claim_owner": None, "claim_expires_at": None}
    if attempt.ok:
        values.update(state="delivered", delivered_at=now)
    elif now - event.created_at >= delivery.give_up_after:
        values.update(state="failed")
        log.warning("event %s (%s) given up after %d attempts", event.id, event.type, attempts)
    else:
        values.update(next_attempt_at=now + timedelta(seconds=delivery.wait_after(attempts)))
    with engine.begin() as conn:
        conn.execute(
            event_deliveries.insert().values(
                id=new_id(),
                event_id=event.id,
                attempted_at=now,
                status_code=attempt.status_code,
                error=attempt.error,
                latency_ms=attempt.latency_ms,
            )
        )
        conn.execute(
            events.update()
            .where(events.c.id == event.id, events.c.claim_owner == owner)
            .values(**values)
        )


@dataclass(frozen=True)
class Backlog:
    """The events waiting for delivery: how many, and when the oldest was written (naive UTC)."""

    count: int
    oldest: datetime | None


def backlog(engine: sa.Engine) -> Backlog:
    with engine.connect() as conn:
        count, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(events.c.created_at)).where(
                events.c.state == "pending"
            )
        ).one()
    return Backlog(count, oldest)


# --- reading and redelivering ----------------------------------------------------------------


class EventNotFound(LookupError):
    """No event has this id."""


def list_events(engine: sa.Engine, since: str | None, event_type: str | None, limit=500) -> list:
    """Events oldest first, after `since` (an ISO time, or an event's id), of one type if
    given, each with its delivery state. ValueError names a bad `since` or `type`."""
    query = sa.select(events).order_by(events.c.seq).limit(limit)
    if event_type:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"type: one of {', '.join(EVENT_TYPES)}, not {event_type!r}")
        query = query.where(events.c.type == event_type)
    with engine.connect() as conn:
        if since:
            query = query.where(_after(conn, since))
        return [event_view(row) for row in conn.execute(query)]


def _after(conn: sa.Connection, since: str):
    seq = conn.execute(sa.select(events.c.seq).where(events.c.id == since)).scalar()
    if seq is not None:
        return events.c.seq > seq
    try:
        moment = iso_time_to_utc(since)  # Nairobi time unless it carries an offset
    except ValueError:
        raise ValueError(f"since: an ISO time or an event id, not {since!r}") from None
    return events.c.created_at >= moment


def event_view(row) -> dict:
    return {
        "id": row.id,
        "type": row.type,
        "subject": row.subject,
        "created": _iso(row.created_at),
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at) if row.state == "pending" else None,
        "delivered_at": _iso(row.delivered_at),
        "body": json.loads(row.body),
    }


def redeliver(engine: sa.Engine, event_id: str) -> dict:
    """Make the event due now (again, if it was delivered or given up)."""
    with engine.begin() as conn:
        moved = conn.execute(
            events.update()
            .where(events.c.id == event_id)
            .values(state="pending", next_attempt_at=utcnow())
        ).rowcount
        if not moved:
            raise EventNotFound(event_id)
        return event_view(conn.execute(sa.select(events).where(events.c.id == event_id)).one())


def delivery_log(engine: sa.Engine, event_id: str) -> list:
    """The event's delivery attempts, oldest first."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(event_deliveries)
            .where(event_deliveries.c.event_id == event_id)
            .order_by(event_deliveries.c.attempted_at)
        ).all()
