"""The one call the CLI, the notebooks and the service's scheduled job share: build a Report
for a period of the database, optionally against an org-portal statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa

from recon.checks import Options, run_checks
from recon.load import LoadError, load_frames, make_engine
from recon.progress import Progress, stage
from recon.report import Report
from recon.statement import parse_statements
from recon.tariff import load_tariff, shipped_tariff

# The tables the named queries in sql/queries/recon.sql read.
REQUIRED_TABLES = (
    "b2c_payments",
    "b2c_payout_attempts",
    "b2c_payment_callbacks",
    "payments",
    "stk_callbacks",
    "c2b_payments",
)


def build_report(
    database_url: str,
    *,
    since: datetime | None,
    until: datetime | None,
    as_of: datetime | None = None,
    stale_after_minutes: int = 30,
    statement_path: str | Path | list[str | Path] | None = None,
    double_payout_window_hours: float = 24,
    amount_tolerance_cents: int = 0,
    tariff_path: str | Path | None = None,
    progress: Progress | None = None,
    bill_ref_query: str = "",
) -> Report:
    """Load [since, until) (naive UTC; None is unbounded), run every check, return the Report.

    `as_of` None is default_as_of(until), the one default of the CLI and the notebooks.
    `statement_path` is one statement file or a list of them (read together, see
    recon.statement.parse_statements). With a statement and neither `since` nor `until`, the
    period is the statements' own.
    `tariff_path` is the B2C tariff file payout charges are checked against (None: the one
    shipped, recon/tariffs/b2c.csv). `bill_ref_query` (C2B_BILL_REF_QUERY) turns on the
    c2b_unknown_bill_ref check.
    Raises StatementError / LoadError / TariffError (messages name the bad input) when an input
    is unusable.
    `progress` is told each stage (recon.progress) as it starts and ends.
    """
    tariff = shipped_tariff() if tariff_path is None else load_tariff(tariff_path)
    with stage(progress, "checking the database"):
        readable_url = usable_database(database_url)
    paths = [statement_path] if isinstance(statement_path, str | Path) else statement_path or []
    statement = None
    if paths:
        with stage(progress, "reading the statement"):
            statement = parse_statements(paths)
    if statement is not None and since is None and until is None:
        start, end = statement.period
        if start is not None:
            since, until = start.to_pydatetime(), (end + timedelta(seconds=1)).to_pydatetime()
    try:
        with stage(progress, "loading the database"):
            frames = load_frames(
                readable_url,
                since=since,
                until=until,
                statement=statement,
                bill_ref_query=bill_ref_query,
            )
    except pd.errors.DatabaseError as error:  # a query pandas ran failed (a column missing)
        raise LoadError(f"cannot read the database {_shown(database_url)}: {error}") from None
    options = Options(
        as_of=as_of or default_as_of(until),
        stale_after_minutes=stale_after_minutes,
        double_payout_window_hours=double_payout_window_hours,
        amount_tolerance_cents=amount_tolerance_cents,
        tariff=tariff,
        since=since,
        until=until,
    )
    sources = {"database": _shown(database_url)}
    if paths:
        sources["statement"] = ", ".join(str(path) for path in paths)
    sources["tariff"] = tariff.source
    with stage(progress, "running the checks"):
        findings = run_checks(frames, options)
    return Report(findings=findings, options=options, sources=sources)


def default_as_of(until: datetime | None, now: datetime | None = None) -> datetime:
    """The moment ages and staleness are measured at when none is given (naive UTC): the end
    of the period once it has passed, so a report of a past period is the same whenever and
    wherever (CLI, notebook) it is run; else now."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    return now if until is None else min(until, now)


def usable_database(database_url: str) -> str:
    """The URL to read `database_url` through, once it is known to answer and to hold the
    tables recon reads; LoadError naming the database and what is wrong otherwise. A SQLite
    file is opened read-write without create (SQLite's mode=rw), so a mistyped path is
    reported, never created empty."""
    try:
        url = sa.make_url(database_url)
    except sa.exc.ArgumentError:
        raise LoadError(f"not a database URL: {database_url!r}") from None
    if url.get_backend_name() == "sqlite":
        url = _sqlite_without_create(url)
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
    except sa.exc.SQLAlchemyError as error:
        reason = getattr(error, "orig", None) or error
        raise LoadError(
            f"cannot connect to the database {_shown(database_url)}: {reason}"
        ) from None
    except ModuleNotFoundError as error:
        raise LoadError(
            f"cannot connect to {_shown(database_url)}: no driver {error.name}"
        ) from None
    finally:
        engine.dispose()
    missing = [table for table in REQUIRED_TABLES if table not in tables]
    if missing:
        raise LoadError(
            f"the database {_shown(database_url)} has no table {', '.join(missing)}: "
            "not an M-Pesa service database, or not migrated (python service.py migrate)"
        )
    return url.render_as_string(hide_password=False)


def _sqlite_without_create(url: sa.URL) -> sa.URL:
    """A SQLite file URL as a SQLite URI that opens the file only if it exists; in-memory and
    URI URLs as given. LoadError when the file does not exist."""
    name = url.database or ""
    if name in ("", ":memory:") or name.startswith("file:") or url.query.get("uri"):
        return url
    path = Path(name)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "does not exist"
        raise LoadError(f"no SQLite database at {path.resolve()}: the file {why}")
    return url.set(
        database="file:" + quote(str(path.resolve())),
        query={**url.query, "mode": "rw", "uri": "true"},
    )


def _shown(database_url: str) -> str:
    """The URL as messages and reports show it: the password hidden."""
    return sa.make_url(database_url).render_as_string(hide_password=True)
