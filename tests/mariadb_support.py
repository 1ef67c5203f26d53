"""Scratch databases on the MariaDB server TEST_DATABASE_URL names (CI sets it, and
REQUIRE_MARIADB=1 so a missing server fails instead of skipping)."""

from __future__ import annotations

import os
import uuid

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
    return sa.make_url(MARIADB_URL)


def fresh_mariadb_database():
    """Create an empty scratch database; yield its URL; drop it afterwards."""
    server = mariadb_server_url()
    url = create_mariadb_database(server)
    try:
        yield url
    finally:
        drop_mariadb_database(url)


def create_mariadb_database(server: sa.URL) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    except sa.exc.OperationalError as error:
        pytest.fail(f"MariaDB at {server.host}:{server.port} is not reachable: {error}")
    finally:
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def drop_mariadb_database(url: str) -> None:
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database=None))
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {parsed.database}")
    finally:
        admin.dispose()
