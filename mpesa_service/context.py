"""What the routes, jobs and commands share: the Service object, API errors, the callback
journal, callback authenticity (token, IP allowlist, proxies), API keys and flags."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import shutil
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from mpesa_service import PROJECT_DIR, log
from mpesa_service.daraja import DarajaClient, DarajaError, DarajaRejected
from mpesa_service.settings import ROLES, ApiKey, Settings, parse_api_keys
from mpesa_service.storage import (
    b2c_payments,
    callback_journal,
    execute_precompiled,
    inserting,
    payment_flags,
    payments,
    utcnow,
)


class ApiError(Exception):
    """A request the API refuses: HTTP status, a message naming what was wrong, extra fields."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def new_id() -> str:
    """A random (version 4) UUID as text, like str(uuid.uuid4()), from os.urandom bytes that
    each thread fetches 256 ids' worth at a time. Every os.urandom call lets go of the GIL,
    and under load the thread then queues to take it back: once per id, that was a third of
    the callback journal thread's time and a fifth of the applying thread's (issue 9)."""
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


# --- the callback journal ---------------------------------------------------------------------


class Journal:
    """The append-only JSON-lines file every callback is written to (and flushed to disk) before
    any database work: the old system's `b2c_callbacks.log`. A callback whose database work did
    not finish is applied later from here by `replay`.

    The file stays open between appends: opening and closing it for each batch each let go of
    the GIL, and under load each time the callback writer then queued to take it back (issue
    9: in two A/Bs under wrk, 6.5-7% less server CPU per callback, 4-6% more callbacks). If
    the path comes to name another file (the journal was rotated, moved or deleted), appends
    go to the new one from the next check, at most RECHECK_SECONDS later; the entries written
    meanwhile are in the old file, on disk. A file that ends in a torn line (a write cut short
    by a full disk or a crash) gets a newline before the next entry, so that the torn line
    does not take the next entry down with it."""

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


# --- callback authenticity ----------------------------------------------------------------------

SAFARICOM_CALLBACK_IPS = [
    "196.201.214.200",
    "196.201.214.206",
    "196.201.213.114",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.128",
    "196.201.212.129",
    "196.201.212.132",
    "196.201.212.136",
    "196.201.212.138",
    "196.201.212.69",
    "196.201.212.74",
]


def parse_networks(entries: list[str]) -> list:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def in_networks(address: str, networks: list) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str, trusted_proxies: list) -> str:
    """The caller's address: the peer, unless the peer is a trusted proxy, in which case the
    right-most X-Forwarded-For entry that is not itself a trusted proxy."""
    if not in_networks(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted_proxies):
            return hop
    return peer


@dataclass(frozen=True)
class CallbackPolicy:
    """Who may deliver callbacks: the URL token, the allowed networks, the body cap."""

    token: str
    allowed: list | None  # None: any address
    trusted_proxies: list
    max_bytes: int

    def refusal(self, token: str, peer: str, forwarded_for: str) -> tuple[int, str] | None:
        """(HTTP status, reason) when the delivery must be refused, else None."""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return 404, "wrong callback token"
        address = client_address(peer, forwarded_for, self.trusted_proxies)
        if self.allowed is not None and not in_networks(address, self.allowed):
            return 403, f"callback from {address}, which is not an allowed address"
        return None


def callback_policy(settings: Settings, token: str) -> CallbackPolicy:
    allowed_setting = settings.listing("CALLBACK_ALLOWED_IPS")
    if allowed_setting == ["*"]:
        allowed = None
    elif allowed_setting:
        allowed = parse_networks(allowed_setting)
    elif settings.environment == "production":
        allowed = parse_networks(SAFARICOM_CALLBACK_IPS)
    else:
        allowed = None
    return CallbackPolicy(
        token=token,
        allowed=allowed,
        trusted_proxies=parse_networks(settings.listing("TRUSTED_PROXIES")),
        max_bytes=settings.integer("CALLBACK_MAX_BYTES"),
    )


# REFERENCE 9.5: words Daraja rejects in a callback URL, in any case ("exec" contains "exe").
REJECTED_URL_WORDS = ("m-pesa", "mpesa", "safaricom", "exe", "cmd", "sql", "query")


def callback_token(settings: Settings) -> str:
    """CALLBACK_TOKEN, or outside production a random token kept in data/callback_token so
    callback URLs handed to Daraja stay valid across restarts."""
    return settings["CALLBACK_TOKEN"] or persisted_secret("callback_token", url_token)


def url_token() -> str:
    """A random token for a callback URL, free of the words Daraja rejects in one (about one
    random token in a hundred holds "exe", "cmd" or "sql")."""
    while True:
        token = secrets.token_urlsafe(32)
        if not any(word in token.lower() for word in REJECTED_URL_WORDS):
            return token


def console_secret(settings: Settings) -> str:
    """CONSOLE_SECRET, or outside production a random one kept in data/console_secret."""
    return settings["CONSOLE_SECRET"] or persisted_secret("console_secret")


def persisted_secret(name: str, make=lambda: secrets.token_urlsafe(32)) -> str:
    """A random secret (from `make`) made once and kept in data/<name> (production sets its
    secrets)."""
    path = PROJECT_DIR / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        # Created whole under another name and linked in: of two processes starting at once,
        # one makes the secret and both read that one, never a half-written file.
        draft = path.with_name(f".{name}.{os.getpid()}.{uuid.uuid4().hex}")
        draft.write_text(make())
        try:
            os.link(draft, path)
        finally:
            draft.unlink()
    return path.read_text().strip()


def api_keys(settings: Settings) -> list[ApiKey]:
    keys = parse_api_keys(settings.listing("API_KEYS"))
    if not keys and settings.environment == "simulator":
        return [ApiKey("simulator", frozenset(ROLES), SIMULATOR_API_KEY)]
    return keys


def key_for(secret: str, keys: list[ApiKey]) -> ApiKey | None:
    """The key whose secret this is. Every key is compared, always, in constant time, so timing
    says nothing about which one (or which prefix) matched."""
    found = None
    for key in keys:
        if hmac.compare_digest(secret.encode(), key.secret.encode()):
            found = key
    return found


def bearer_key(header: str, keys: list[ApiKey]) -> ApiKey | None:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return None
    return key_for(presented, keys)


SIMULATOR_API_KEY = "simulator-api-key"
# Where the scheduled reconciliation keeps its reports (the console links the newest).
ACKNOWLEDGED = {"ResultCode": 0, "ResultDesc": "Accepted"}


# --- the service context --------------------------------------------------------------------


@dataclass
class Service:
    """Everything the routes, jobs and commands share: settings, database, Daraja client,
    journal, callback policy, API keys and the callback URLs handed to Daraja."""

    settings: Settings
    engine: sa.Engine
    client: DarajaClient | None = None
    journal: Journal | None = None
    policy: CallbackPolicy | None = None
    keys: list[ApiKey] = field(default_factory=list)
    public_base_url: str = ""
    job_runs: dict = field(default_factory=dict)  # job id -> (finished at, "ok" or the error)
    callback_writer: object = None  # callbacks.callback_writer's GroupCommit, made on first use

    def hook_url(self, *parts: str) -> str:
        return "/".join([self.public_base_url.rstrip("/"), "hooks", *parts, self.policy.token])

    @property
    def b2c_result_url(self) -> str:
        return self.settings["MPESA_RESULT_URL"] or self.hook_url("b2c", "result")


def add_flag(conn: sa.Connection, subject_type: str, subject_id: str, flag: str, detail: str):
    """Record something a person should look at, and say so in the log."""
    conn.execute(
        payment_flags.insert().values(
            id=new_id(),
            subject_type=subject_type,
            subject_id=subject_id,
            flag=flag,
            detail=detail,
            created_at=utcnow(),
        )
    )
    log.warning("ALERT %s on %s: %s", flag, subject_name(conn, subject_type, subject_id), detail)


# A flag's subject as a person knows it: its name, found by its id.
SUBJECT_NAMES = {
    "payout": sa.select(b2c_payments.c.reference_id).where(
        b2c_payments.c.id == sa.bindparam("subject_id")
    ),
    "payment": sa.select(payments.c.checkout_request_id).where(
        payments.c.id == sa.bindparam("subject_id")
    ),
}


def subject_name(conn: sa.Connection, subject_type: str, subject_id: str) -> str:
    """A payout by its reference_id and a collection by its CheckoutRequestID, with the internal
    id after it ("payout ref-123 (id 8f2...)"); anything else, or a row without that name, by
    its id."""
    query = SUBJECT_NAMES.get(subject_type)
    name = query is not None and conn.execute(query, {"subject_id": subject_id}).scalar()
    return f"{subject_type} {name} (id {subject_id})" if name else f"{subject_type} {subject_id}"


def flags_of(conn: sa.Connection, subject_type: str, subject_id: str) -> list[str]:
    rows = conn.execute(
        sa.select(payment_flags.c.flag)
        .where(payment_flags.c.subject_type == subject_type)
        .where(payment_flags.c.subject_id == subject_id)
        .order_by(payment_flags.c.created_at)
    )
    return list(dict.fromkeys(rows.scalars()))


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


def daraja_error_fields(error: DarajaError) -> tuple[str, str]:
    if isinstance(error, DarajaRejected):
        return error.code, error.message
    return type(error).__name__, str(error)
