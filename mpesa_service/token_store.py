"""Daraja OAuth tokens shared through the database by every process of a deployment, so that
one process fetching a token does not revoke the one the others use (daraja.TokenCache). The
store never stands in the way of a payment: when the database cannot be read or written, each
process keeps its own token, as it would without a store."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.storage import daraja_tokens, utcnow


class DatabaseTokenStore:
    """The token of one Daraja app (base URL and consumer key), in table daraja_tokens."""

    def __init__(self, engine: sa.Engine, base_url: str, consumer_key: str):
        self.engine = engine
        # The consumer key itself is not stored: the row is named by a digest of it.
        self.app = hashlib.sha256(f"{base_url.rstrip('/')} {consumer_key}".encode()).hexdigest()

    def load(self) -> tuple[str, float] | None:
        """(token, expiry as Unix seconds), or None when there is none or it cannot be read."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(daraja_tokens.c.token, daraja_tokens.c.expires_at).where(
                        daraja_tokens.c.app == self.app
                    )
                ).first()
        except sa.exc.SQLAlchemyError as error:
            log.warning("shared Daraja token not read (%s); fetching one", type(error).__name__)
            return None
        if row is None:
            return None
        return row.token, row.expires_at.replace(tzinfo=UTC).timestamp()

    def save(self, token: str, expires_at: float) -> None:
        values = {
            "token": token,
            "expires_at": datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None),
            "updated_at": utcnow(),
        }
        try:
            with self.engine.begin() as conn:
                updated = conn.execute(
                    daraja_tokens.update().where(daraja_tokens.c.app == self.app).values(values)
                ).rowcount
                if not updated:
                    conn.execute(daraja_tokens.insert().values(app=self.app, **values))
        except sa.exc.SQLAlchemyError as error:  # a concurrent first insert, or no database
            log.warning("shared Daraja token not saved (%s)", type(error).__name__)
