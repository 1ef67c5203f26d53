"""Load a period of the database into Frames, only through the named queries in sql/queries.

Times are bound as naive-UTC 'YYYY-MM-DD HH:MM:SS' strings, which both SQLite (text times) and
MySQL (DATETIME/TIMESTAMP) compare correctly; MySQL sessions run in UTC so TIMESTAMP columns
read back as stored.
"""

from __future__ import annotations

import sys
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from recon.frames import Frames
from recon.queries import load_queries
from recon.statement import Statement

FRAME_QUERIES = {
    "payouts": "payouts",
    "attempts": "payout_attempts",
    "results": "b2c_results",
    "stk": "stk_payments",
}


class LoadError(Exception):
    """The database cannot be read; the message names it (without its password)."""


def make_engine(database_url: str) -> sa.Engine:
    try:
        url = sa.make_url(database_url)
    except sa.exc.ArgumentError:
        raise LoadError(f"not a database URL: {database_url!r}") from None
    if url.get_backend_name() in ("mysql", "mariadb"):
        return sa.create_engine(url, connect_args={"init_command": "SET time_zone = '+00:00'"})
    return sa.create_engine(url)


def load_frames(
    database_url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    statement: Statement | None = None,
) -> Frames:
    """Payouts, their attempts, B2C results and STK payments of [since, until) as Frames."""
    queries = load_queries()
    params = {"since": _bound_time(since), "until": _bound_time(until)}
    engine = make_engine(database_url)
    shown = sa.make_url(database_url).render_as_string(hide_password=True)
    raw: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as connection:
            for frame_name, query_name in _progress(FRAME_QUERIES.items()):
                sql = sa.text(queries[query_name].sql)
                raw[frame_name] = pd.read_sql(sql, connection, params=params)
    except sa.exc.SQLAlchemyError as error:
        raise LoadError(
            f"cannot read the database {shown}: {type(error).__name__}: "
            f"{str(error.orig if hasattr(error, 'orig') else error)[:200]}"
        ) from None
    except ModuleNotFoundError as error:
        raise LoadError(f"cannot read the database {shown}: missing driver {error.name}") from None
    finally:
        engine.dispose()
    return Frames.from_database_frames(**raw, statement=statement)


def _bound_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _progress(items):
    """tqdm on a terminal only, so CI logs and cron mails stay clean."""
    items = list(items)
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc="loading", unit="query", file=sys.stderr)
