"""Who may call the service: API keys (bearer tokens with roles), the console's secret, and
the random secrets kept in data/ outside production."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import uuid

from mpesa_service import PROJECT_DIR
from mpesa_service.settings import ROLES, ApiKey, Settings, parse_api_keys

SIMULATOR_API_KEY = "simulator-api-key"


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
