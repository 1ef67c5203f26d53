"""Shared fixtures: fresh databases on real SQLite always and on real MariaDB when
TEST_DATABASE_URL names a server (CI sets it, and REQUIRE_MARIADB=1 so a missing server fails
instead of skipping)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

import service
from tests import background_soaks
from tests.background_soaks import module_name
from tests.mariadb_support import (
    PreparedDatabases,
    Schema,
    fresh_mariadb_database,
    mariadb_server_url,
    read_schema,
)


@pytest.fixture(params=["sqlite", "mariadb"])
def empty_database_url(request, tmp_path):
    """A URL of an empty database, once on SQLite and once on MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        yield from fresh_mariadb_database()


@pytest.fixture
def mariadb_url():
    """An empty MariaDB database only (for tests of MySQL-specific behaviour)."""
    yield from fresh_mariadb_database()


@pytest.fixture
def migrated_mariadb_url(prepared_mariadb_databases):
    """A database migrated to head on MariaDB only (tests of MariaDB-specific behaviour)."""
    url = prepared_mariadb_databases.take()
    yield url
    prepared_mariadb_databases.release(url)


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request, tmp_path):
    """A database migrated to head, on SQLite and on MariaDB. The migrations run once per
    test process, into a template that each test's database is copied from (a copied SQLite
    file; on MariaDB one made ahead from the template or emptied after an earlier test, see
    tests/mariadb_support.PreparedDatabases); the migrations themselves are tested from empty
    in tests/test_schema.py."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), path)
        yield f"sqlite:///{path}"
        return
    mariadb_server_url()  # skips, or fails in CI, before anything waits on a server
    yield request.getfixturevalue("migrated_mariadb_url")


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    engine = service.make_engine(f"sqlite:///{path}")
    service.migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def migrated_mariadb_schema() -> Schema:
    for url in fresh_mariadb_database():
        engine = service.make_engine(url)
        service.migrate(engine)
        schema = read_schema(engine)
        engine.dispose()
    return schema


@pytest.fixture(scope="session")
def prepared_mariadb_databases(migrated_mariadb_schema):
    prepared = PreparedDatabases(mariadb_server_url(), migrated_mariadb_schema)
    yield prepared
    prepared.close()


@pytest.fixture
def engine(database_url):
    engine = service.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def make_stack(database_url, tmp_path):
    """Start the service and a simulator on the test database, with extra settings and
    simulator options; everything started is stopped after the test."""
    from tests.service_support import start_stack

    stops = []

    def make(settings: dict | None = None, **sim_config):
        stack, stop = start_stack(database_url, tmp_path, settings or {}, sim_config)
        stops.append(stop)
        return stack

    yield make
    for stop in reversed(stops):
        stop()


@pytest.fixture
def stack(make_stack):
    """The service and a simulator with the default test settings."""
    return make_stack()


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium driven by selenium (Debian's chromium and chromium-driver), started
    once per test process: starting and quitting it costs about a second."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(shutil.which("chromedriver")), options=options)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium):
    """The process's Chromium on a blank page with no cookies: no session carries over from
    an earlier test (cookies are kept per host, not per port, and every stack is 127.0.0.1)."""
    forget_everything(chromium)
    yield chromium
    forget_everything(chromium)


def forget_everything(driver) -> None:
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # every host's, not one page's


class SmtpRecorder:
    """An aiosmtpd handler keeping every message it is sent."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on loopback: yields (recorder, port)."""
    from aiosmtpd.controller import Controller

    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


# Run in parallel (make test passes -n), a module whose tests share one costly module-scoped
# fixture keeps them on one worker, so that the fixture is built once, not once per worker.
SHARED_FIXTURE_MODULES = ("test_notebooks", "test_recon_oracle", "test_simulator")


# Modules of single tests that take 5 s to a minute, started first so that none is the last
# thing a worker runs while the other waits for it.
LONG_TEST_MODULES = (
    "test_money_model",
    "test_multiprocess",
    "test_stk_outage",
    "test_events_sigkill",
    "test_api_schema",
    "test_bench",
)


# tryfirst: xdist's worker reads the marks in its own hook, which would otherwise run before this.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if module_of(item) in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(module_of(item)))
    items.sort(key=lambda item: module_of(item) not in LONG_TEST_MODULES)


def module_of(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def pytest_configure(config):
    if not is_xdist_worker(config):
        background_soaks.prepare()


def pytest_collection_finish(session):
    """Without xdist, this process collected the run: start the soaks its soak tests read."""
    if is_xdist_worker(session.config) or session.config.option.collectonly:
        return
    SOAKS.start(item.nodeid for item in session.items)


def pytest_unconfigure(config):
    if not is_xdist_worker(config):
        SOAKS.stop()


def is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


SOAKS = background_soaks.Soaks()


def pytest_xdist_node_collection_finished(node, ids):
    """Start the soaks the run's soak tests read. Stop if xdist did not group the shared
    fixtures' modules (it names the group in each node id): the run would still pass, building
    each shared fixture on every worker, at twice the time."""
    SOAKS.start(ids)
    if node.config.getoption("dist") != "loadgroup":
        return
    ungrouped = [
        nodeid
        for nodeid in ids
        if module_name(nodeid) in SHARED_FIXTURE_MODULES and "@" not in nodeid.rpartition("]")[2]
    ]
    if ungrouped:
        message = f"--dist loadgroup left {ungrouped[0]} ungrouped (pytest-xdist#1386)"
        raise pytest.UsageError(message)
