"""Load a period of the database into Frames, only through the named queries in sql/queries.

Times are bound as naive-UTC 'YYYY-MM-DD HH:MM:SS' strings, which both SQLite (text times) and
MySQL (DATETIME/TIMESTAMP) compare correctly; MySQL sessions run in UTC so TIMESTAMP columns
read back as stored.

A million-row period is read without a Python object per time or amount: on MySQL the driver
hands DATETIME/TIMESTAMP and DECIMAL values over as their text, and each such column is
converted at once (what does not read as a time is left as text, for `Frames.unreadable`).
"""

from __future__ import annotations

import sys
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from pymysql.constants import FIELD_TYPE
from pymysql.converters import conversions

from recon.frames import Frames
from recon.queries import load_queries
from recon.statement import Statement

FRAME_QUERIES = {
    "payouts": "payouts",
    "attempts": "payout_attempts",
    "results": "b2c_results",
    "stk": "stk_payments",
    "c2b": "c2b_payments",
}
TIME_TYPES = {FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP}
DECIMAL_TYPES = {FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL}
# PyMySQL's converters without those that build a datetime or Decimal per value.
TEXT_CONVERSIONS = {
    key: convert for key, convert in conversions.items() if key not in TIME_TYPES | DECIMAL_TYPES
}


class LoadError(Exception):
    """The database cannot be read; the message names it (without its password)."""


def make_engine(database_url: str, *, times_as_text: bool = False) -> sa.Engine:
    """An engine; on MySQL its sessions run in UTC and, with `times_as_text`, it returns times
    and DECIMALs as text (only for `read_frame`)."""
    try:
        url = sa.make_url(database_url)
    except sa.exc.ArgumentError:
        raise LoadError(f"not a database URL: {database_url!r}") from None
    if url.get_backend_name() in ("mysql", "mariadb"):
        connect_args = {"init_command": "SET time_zone = '+00:00'"}
        if times_as_text and url.get_driver_name() == "pymysql":
            connect_args["conv"] = TEXT_CONVERSIONS
        return sa.create_engine(url, connect_args=connect_args)
    return sa.create_engine(url)


def load_frames(
    database_url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    statement: Statement | None = None,
    bill_ref_query: str = "",
) -> Frames:
    """Payouts, their attempts, B2C results, STK payments and C2B payments of [since, until)
    as Frames. With `bill_ref_query` (C2B_BILL_REF_QUERY: SQL taking `:bill_ref`), each C2B
    payment's bill reference is looked up (`bill_ref_known`)."""
    queries = load_queries()
    params = {"since": _bound_time(since), "until": _bound_time(until)}
    engine = make_engine(database_url, times_as_text=True)
    shown = sa.make_url(database_url).render_as_string(hide_password=True)
    raw: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as connection:
            for frame_name, query_name in _progress(FRAME_QUERIES.items()):
                sql = sa.text(queries[query_name].sql)
                raw[frame_name] = read_frame(connection, sql, params)
            if bill_ref_query:
                raw["c2b"] = with_bill_refs_looked_up(connection, raw["c2b"], bill_ref_query)
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


def with_bill_refs_looked_up(
    connection: sa.Connection, c2b: pd.DataFrame, query: str
) -> pd.DataFrame:
    """`c2b` with `bill_ref_known`: whether `query`, run with each distinct bill reference
    bound as `:bill_ref`, returns a row (a payment without a bill reference is unknown)."""
    statement = sa.text(query)
    known = {}
    for bill_ref in c2b["bill_ref_number"].dropna().unique():
        found = connection.execute(statement, {"bill_ref": str(bill_ref)}).first()
        known[bill_ref] = found is not None
    return c2b.assign(bill_ref_known=c2b["bill_ref_number"].map(known).fillna(False))


def read_frame(connection: sa.Connection, sql: sa.TextClause, params: dict) -> pd.DataFrame:
    """The query's rows as a DataFrame, as `pandas.read_sql` gives them (Decimals as floats,
    times as datetime64), whether the driver returned those values as objects or as text."""
    cursor = connection.execute(sql, params).cursor
    names, types = zip(*[(column[0], column[1]) for column in cursor.description], strict=True)
    # The driver's own tuples: SQLAlchemy's Row objects make pandas probe each row's attributes.
    rows = cursor.fetchall()
    frame = pd.DataFrame.from_records(rows, columns=list(names), coerce_float=True)
    for position, type_code in enumerate(types):
        values = frame.iloc[:, position]
        if type_code in DECIMAL_TYPES and not pd.api.types.is_numeric_dtype(values):
            frame.isetitem(position, pd.to_numeric(values).astype("float64"))
        elif type_code in TIME_TYPES and not pd.api.types.is_datetime64_any_dtype(values):
            frame.isetitem(position, _times_if_all_read(values))
    return frame


def _times_if_all_read(values: pd.Series) -> pd.Series:
    """'YYYY-MM-DD HH:MM:SS[.ffffff]' text as datetime64; the text itself when a value (such as
    MySQL's zero date) is not a time."""
    times = pd.to_datetime(values, format="ISO8601", errors="coerce")
    return times if times.notna().sum() == values.notna().sum() else values


def _bound_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _progress(items):
    """tqdm on a terminal only, so CI logs and cron mails stay clean."""
    items = list(items)
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc="loading", unit="query", file=sys.stderr)
