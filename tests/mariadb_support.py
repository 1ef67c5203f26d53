"""Scratch databases on the MariaDB server TEST_DATABASE_URL names (CI sets it, and
REQUIRE_MARIADB=1 so a missing server fails instead of skipping)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

MARIADB_URL = os.environ.get("TEST_DATABASE_URL", "")
REQUIRE_MARIADB = os.environ.get("REQUIRE_MARIADB") == "1"


def mariadb_server_url() -> sa.URL:
    """The MariaDB server to make scratch databases on; skips (or fails in CI) without one."""
    if not MARIADB_URL:
        message = "TEST_DATABASE_URL is not set: MariaDB-backed tests need a server"
        if REQUIRE_MARIADB:
            pytest.fail(message)
        pytest.skip(message)
    return without_tls_over_loopback(sa.make_url(MARIADB_URL))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def without_tls_over_loopback(url: sa.URL) -> sa.URL:
    """Unless told otherwise, PyMySQL offers TLS on every connection and builds a TLS context
    for it first: 24 ms of CPU per connection here, even against a server with TLS disabled,
    and the tests open thousands. Over loopback TLS protects nothing, so it is turned off."""
    if url.host in LOOPBACK and not any(key.startswith("ssl") for key in url.query):
        return url.update_query_dict({"ssl_disabled": "true"})
    return url


def fresh_mariadb_database():
    """Create an empty scratch database; yield its URL; drop it afterwards."""
    server = mariadb_server_url()
    url = create_mariadb_database(server)
    try:
        yield url
    finally:
        drop_mariadb_database(url)


def create_mariadb_database(server: sa.URL) -> str:
    admin = sa.create_engine(server)
    try:
        with admin.connect() as connection:
            name = create_database(connection, server)
    finally:
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def drop_mariadb_database(url: str) -> None:
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database=None))
    try:
        with admin.connect() as connection:
            drop_database(connection, parsed.database)
    finally:
        admin.dispose()


def create_database(conn: sa.Connection, server: sa.URL) -> str:
    """Create a scratch database through `conn`; its name. Fails the test if the server is
    not reachable."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    except sa.exc.OperationalError as error:
        pytest.fail(f"MariaDB at {server.host}:{server.port} is not reachable: {error}")
    return name


def drop_database(conn: sa.Connection, name: str) -> None:
    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")


@dataclass(frozen=True)
class Schema:
    """What the migrations made: the tables, the rows they wrote, and the columns and indexes
    a used database must still have to be emptied for another test instead of dropped."""

    tables: list[str]  # CREATE TABLE statements
    rows: dict[str, list[dict]]  # the rows the migrations wrote, by table
    shape: list[tuple]  # every column and index, as information_schema describes them


SHAPE_QUERIES = (
    "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT,"
    " EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()",
    "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE"
    " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()",
    "SELECT 'table', TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES"
    " WHERE TABLE_SCHEMA = DATABASE()",
    "SELECT 'routine', ROUTINE_NAME FROM information_schema.ROUTINES"
    " WHERE ROUTINE_SCHEMA = DATABASE()",
    "SELECT 'trigger', TRIGGER_NAME FROM information_schema.TRIGGERS"
    " WHERE TRIGGER_SCHEMA = DATABASE()",
)


def read_schema(engine: sa.Engine) -> Schema:
    with engine.connect() as conn:
        names = list(conn.exec_driver_sql("SHOW TABLES").scalars())
        tables = [conn.exec_driver_sql(f"SHOW CREATE TABLE `{name}`").one()[1] for name in names]
        metadata = sa.MetaData()
        rows = {
            name: [
                dict(row._mapping)
                for row in conn.execute(sa.Table(name, metadata, autoload_with=conn).select())
            ]
            for name in names
        }
        return Schema(tables, rows, read_shape(conn))


def read_shape(conn: sa.Connection) -> list[tuple]:
    return sorted(
        tuple(str(value) for value in row)
        for query in SHAPE_QUERIES
        for row in conn.exec_driver_sql(query)
    )


def copy_schema(conn: sa.Connection, schema: Schema) -> None:
    """Make the template's tables and rows in the database `conn` is using."""
    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
    for create in schema.tables:
        conn.exec_driver_sql(create)
    insert_rows(conn, schema)


def insert_rows(conn: sa.Connection, schema: Schema) -> None:
    for name, rows in schema.rows.items():
        if rows:  # named columns, not reflected: reflecting costs more than the copy
            table = sa.table(name, *(sa.column(column) for column in rows[0]))
            conn.execute(table.insert(), rows)


def emptied_for_reuse(conn: sa.Connection, schema: Schema) -> bool:
    """Put a used database back to the template's rows, if nothing is connected to it and its
    tables, columns and indexes are still the template's; False (untouched) otherwise."""
    if others_connected(conn) or read_shape(conn) != schema.shape:
        return False
    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
    for name in schema.rows:
        conn.exec_driver_sql(f"DELETE FROM `{name}`")
    for create in schema.tables:
        if "AUTO_INCREMENT" in create:  # numbering starts again at 1, as in a new database
            conn.exec_driver_sql(f"ALTER TABLE `{create.split('`')[1]}` AUTO_INCREMENT = 1")
    insert_rows(conn, schema)
    return True


def still_pristine(conn: sa.Connection, schema: Schema) -> bool:
    """Nothing connected to an emptied database and nothing written to it since."""
    if others_connected(conn):
        return False
    counts = ", ".join(f"(SELECT COUNT(*) FROM `{name}`)" for name in schema.rows)
    expected = tuple(len(rows) for rows in schema.rows.values())
    return tuple(conn.exec_driver_sql(f"SELECT {counts}").one()) == expected


def others_connected(conn: sa.Connection) -> bool:
    return bool(
        conn.exec_driver_sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            " WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        ).scalar()
    )


class PreparedDatabases:
    """Migrated MariaDB databases made one test ahead on a background thread, so that the
    test before hides the time. A database a test used is emptied back to the template's rows
    (no DDL: a fraction of the time of making one) and given to a later test once it has sat
    unused for REST_SECONDS and is still untouched, so that a late write from a test that ended
    (a daemon thread finishing its work) is seen and the database dropped, never handed on. One
    whose tables a test changed, or that something is still connected to, is dropped too. All
    of it goes through one admin connection: a new connection costs more than the work."""

    REST_SECONDS = 1.0

    def __init__(self, server: sa.URL, schema: Schema):
        self.server, self.schema = server, schema
        self.admin = sa.create_engine(server, pool_size=1)  # the background thread's only
        self.resting: list[tuple[float, str]] = []  # (emptied at, name); background thread only
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepared-db")
        self.next = self.thread.submit(self._make)

    def take(self) -> str:
        name = self.next.result()
        self.next = self.thread.submit(self._make)
        return self.server.set(database=name).render_as_string(hide_password=False)

    def release(self, url: str) -> None:
        self.thread.submit(self._recycle, sa.make_url(url).database)

    def close(self) -> None:
        names = []
        with contextlib.suppress(Exception):  # an unreachable server was already reported
            names.append(self.next.result())
        self.thread.shutdown(wait=True)
        with contextlib.suppress(Exception), self.admin.begin() as conn:
            for name in names + [name for _, name in self.resting]:
                drop_database(conn, name)
        self.admin.dispose()

    def _make(self) -> str:
        while self.resting and time.monotonic() - self.resting[0][0] >= self.REST_SECONDS:
            _, name = self.resting.pop(0)
            if self._in(name, still_pristine):
                return name
            self._drop(name)
        with self.admin.begin() as conn:
            name = create_database(conn, self.server)
            conn.exec_driver_sql(f"USE `{name}`")
            copy_schema(conn, self.schema)
        return name

    def _recycle(self, name: str) -> None:
        if self._in(name, emptied_for_reuse):
            self.resting.append((time.monotonic(), name))
        else:
            self._drop(name)

    def _in(self, name: str, step) -> bool:
        """step(connection using database `name`, schema), False if the server refused it."""
        try:
            with self.admin.begin() as conn:
                conn.exec_driver_sql(f"USE `{name}`")
                return step(conn, self.schema)
        except sa.exc.SQLAlchemyError:
            return False

    def _drop(self, name: str) -> None:
        with self.admin.begin() as conn:
            drop_database(conn, name)
