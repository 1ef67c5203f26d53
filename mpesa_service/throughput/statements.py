"""Several statements in one round trip: the callback writer's own engine, which may send them
together on MySQL, and run_together, which does."""

from __future__ import annotations

import collections
import functools
import re
import weakref
from dataclasses import dataclass

import sqlalchemy as sa

from mpesa_service.storage import MYSQL_SESSION, driver_form, execute_precompiled

MULTI_STATEMENTS = 1 << 16  # MySQL's CLIENT_MULTI_STATEMENTS capability flag
_batch_engines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def batch_engine(engine: sa.Engine) -> sa.Engine:
    """The engine for the callback writer's own long-held connection. On MySQL with PyMySQL it
    is the same database with the multi-statement capability on, so that run_together can send
    a batch's statements in one round trip; the request threads' pool keeps it off, so that
    nowhere else could a statement carry a second one (all SQL is bound either way). Its
    connections are not pooled: the writer holds one for as long as it is busy. Elsewhere it
    is `engine` itself."""
    if engine.dialect.name != "mysql" or engine.dialect.driver != "pymysql":
        return engine
    if engine not in _batch_engines:
        url = engine.url
        flags = int(url.query.get("client_flag", 0)) | MULTI_STATEMENTS
        _batch_engines[engine] = sa.create_engine(
            url.update_query_dict({"client_flag": str(flags)}),
            poolclass=sa.pool.NullPool,
            # Every batch commits or rolls back itself, and a connection given back is closed:
            # the rollback on return would only be one more round trip, and a failing one (and
            # logged as such) when the server went away while the writer was idle.
            pool_reset_on_return=None,
            **MYSQL_SESSION,
        )
    return _batch_engines[engine]


@dataclass
class Outcome:
    """What one statement of run_together did: rows matched (or changed), and rows read."""

    rowcount: int
    rows: list


def run_together(
    conn: sa.Connection, statements: list[tuple[sa.Executable, dict | list]]
) -> list[Outcome]:
    """Run (statement, params) pairs in order, in one round trip where the connection takes
    several statements at once (batch_engine's, on MySQL), one by one with execute_precompiled
    otherwise; a list of params is a multi-row INSERT. Returns an Outcome per statement. The
    server stops at the first statement that fails, raised as SQLAlchemy would raise it (the
    message names the statements, not the values)."""
    dbapi_connection = conn.connection.dbapi_connection
    forms = [driver_form(statement, conn.dialect) for statement, _ in statements]
    if not getattr(dbapi_connection, "client_flag", 0) & MULTI_STATEMENTS or None in forms:
        return [_outcome_of(execute_precompiled(conn, *pair)) for pair in statements]
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(
            ";\n".join(
                _bound(cursor, form, params)
                for form, (_, params) in zip(forms, statements, strict=True)
            )
        )
        outcomes = [_read_outcome(cursor)]
        while cursor.nextset():
            outcomes.append(_read_outcome(cursor))
        return outcomes
    except conn.dialect.loaded_dbapi.Error as error:
        raise _wrapped(conn, error, cursor, ";\n".join(sql for sql, _ in forms)) from error
    finally:
        cursor.close()


def _wrapped(conn: sa.Connection, error: Exception, cursor, sql: str) -> sa.exc.DBAPIError:
    """The DBAPI error as SQLAlchemy's own; a lost connection is invalidated, as SQLAlchemy
    does, so that it is not handed back for reuse."""
    lost = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate()
    return sa.exc.DBAPIError.instance(
        sql,
        None,
        error,
        conn.dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=conn.dialect,
    )


def _outcome_of(result: sa.CursorResult) -> Outcome:
    return Outcome(result.rowcount, result.all() if result.returns_rows else [])


def _read_outcome(cursor) -> Outcome:
    if not cursor.description:
        return Outcome(cursor.rowcount, [])
    row_type = _row_type(tuple(column[0] for column in cursor.description))
    return Outcome(cursor.rowcount, [row_type._make(row) for row in cursor.fetchall()])


@functools.cache
def _row_type(names: tuple[str, ...]):
    return collections.namedtuple("Row", names)


def _bound(cursor, form: tuple[str, dict], params: dict | list) -> str:
    """The driver's own binding of params into a statement (what cursor.execute would send),
    rows of a list into one multi-row INSERT."""
    sql, own_values = form
    if isinstance(params, dict):
        return cursor.mogrify(sql, {**own_values, **params})
    insert = _INSERT_VALUES.match(sql)
    if insert is None:
        raise ValueError(f"rows for a statement that is not an INSERT ... VALUES: {sql[:60]}")
    head, values, tail = insert.group(1, 2, 3)
    return head + ",".join(cursor.mogrify(values, {**own_values, **row}) for row in params) + tail


_INSERT_VALUES = re.compile(r"(\s*INSERT\b.+\bVALUES\s*)(\(.+\))(\s*)\Z", re.DOTALL)
