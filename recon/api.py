"""The one call the CLI, the notebooks and the service's scheduled job share: build a Report
for a period of the database, optionally against an org-portal statement."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from recon.checks import Options, run_checks
from recon.load import load_frames
from recon.report import Report
from recon.statement import parse_statements


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
) -> Report:
    """Load [since, until) (naive UTC; None is unbounded), run every check, return the Report.

    `statement_path` is one statement file or a list of them (read together, see
    recon.statement.parse_statements). With a statement and neither `since` nor `until`, the
    period is the statements' own.
    Raises StatementError / LoadError (messages name the bad input) when an input is unusable.
    """
    paths = [statement_path] if isinstance(statement_path, str | Path) else statement_path or []
    statement = parse_statements(paths) if paths else None
    if statement is not None and since is None and until is None:
        start, end = statement.period
        if start is not None:
            since, until = start.to_pydatetime(), (end + timedelta(seconds=1)).to_pydatetime()
    frames = load_frames(database_url, since=since, until=until, statement=statement)
    options = Options(
        as_of=as_of,
        stale_after_minutes=stale_after_minutes,
        double_payout_window_hours=double_payout_window_hours,
        amount_tolerance_cents=amount_tolerance_cents,
        since=since,
        until=until,
    )
    sources = {"database": sa.make_url(database_url).render_as_string(hide_password=True)}
    if paths:
        sources["statement"] = ", ".join(str(path) for path in paths)
    return Report(findings=run_checks(frames, options), options=options, sources=sources)
