"""`python -m recon`: reconcile a period, write the report files, optionally email them.

Exit status: 0 clean, 1 findings, 2 an input that cannot be used (named on stderr).

`python -m recon demo-data ...` fills a database and a statement with demo traffic instead
(recon/demo.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from recon.rules import iso_time_to_utc

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """A command-line value that cannot be used; the message names it."""


def parse_time(text: str) -> datetime:
    """A command-line time as naive UTC, by recon.rules.iso_time_to_utc (Nairobi unless an
    offset is given)."""
    try:
        return iso_time_to_utc(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def positive_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of minutes, not {text!r}")
    return int(text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recon",
        description="Reconcile M-Pesa payouts, callbacks, STK collections and the statement.",
        epilog="`python -m recon demo-data --help`: generate a demo database and statement.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="SQLAlchemy URL (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--statement",
        action="append",
        help="org-portal statement export, CSV or XLSX; repeat it for several periods",
    )
    parser.add_argument(
        "--since",
        type=parse_time,
        help="period start, ISO 8601 (Nairobi time unless it has an offset)",
    )
    parser.add_argument(
        "--until",
        type=parse_time,
        help="period end (exclusive), ISO 8601 (Nairobi time unless it has an offset)",
    )
    parser.add_argument("--as-of", type=parse_time, help="the 'now' that ages are measured at")
    parser.add_argument(
        "--stale-after",
        type=positive_int,
        default=30,
        metavar="MIN",
        help="minutes after which pending/unknown payouts are stale (30)",
    )
    parser.add_argument(
        "--double-payout-window",
        type=float,
        default=24,
        metavar="HOURS",
        help="window for possible double payouts (24)",
    )
    parser.add_argument(
        "--tariff",
        metavar="FILE",
        help="B2C tariff CSV that payout charges are checked against "
        "(default: the shipped recon/tariffs/b2c.csv)",
    )
    parser.add_argument(
        "--bill-ref-query",
        default=os.environ.get("C2B_BILL_REF_QUERY", ""),
        metavar="SQL",
        help="SQL finding the booking or user a C2B bill reference names, by :bill_ref; "
        "turns on c2b_unknown_bill_ref (default: $C2B_BILL_REF_QUERY)",
    )
    parser.add_argument("--out", required=True, help="directory for the report files")
    parser.add_argument(
        "--email",
        metavar="TO",
        help="comma-separated recipients; SMTP settings from SMTP_* variables",
    )
    return parser


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo-data"]:
        from recon.demo import main as demo_main

        return demo_main(argv[1:])
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return EXIT_ERROR if stop.code else EXIT_CLEAN
    progress = StagePrinter(sys.stderr)
    try:
        report = _reconcile(args, progress)
        written = report.write(args.out, progress)
        emailed = _email(report, args.email, environ, progress) if args.email else None
    except UsageError as error:
        print(f"recon: {one_line(str(error))}", file=sys.stderr)
        return EXIT_ERROR
    print(report.render(), end="")
    print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    if emailed:
        print(emailed, file=sys.stderr)
    return report.exit_code


class StagePrinter:
    """Prints each stage of a run on `stream` when it is done, with its duration
    ("recon: loading the database: 1.20 s"); on a terminal the stage under way shows in place
    until then."""

    def __init__(self, stream):
        self.stream = stream
        self.live = stream.isatty()

    def __call__(self, stage) -> None:
        if stage.seconds is None:
            if self.live:
                self.stream.write(f"recon: {stage.name}...")
                self.stream.flush()
            return
        back = "\r\x1b[K" if self.live else ""  # to the line's start, then clear it
        self.stream.write(f"{back}recon: {stage.name}: {stage.seconds:.2f} s\n")
        self.stream.flush()


def one_line(message: str) -> str:
    """A message as one line: cron mails and log scanners read the first line only."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _reconcile(args, progress):
    from recon.api import build_report
    from recon.load import LoadError
    from recon.statement import StatementError
    from recon.tariff import TariffError

    if not args.database_url:
        raise UsageError("no database: give --database-url or set DATABASE_URL")
    if args.since and args.until and args.since >= args.until:
        raise UsageError(f"--since {args.since} is not before --until {args.until}")
    try:
        return build_report(
            args.database_url,
            since=args.since,
            until=args.until,
            as_of=args.as_of,
            stale_after_minutes=args.stale_after,
            statement_path=args.statement,
            double_payout_window_hours=args.double_payout_window,
            tariff_path=args.tariff,
            progress=progress,
            bill_ref_query=args.bill_ref_query,
        )
    except (StatementError, LoadError, TariffError) as error:
        raise UsageError(str(error)) from None


def _email(report, to: str, environ: dict[str, str], progress) -> str:
    """Send the report; the line saying to whom, through which server and with what."""
    from recon.mail import MailError, SmtpSettings, send_report
    from recon.progress import stage

    try:
        smtp = SmtpSettings.from_environ(environ)
        with stage(progress, "emailing the report"):
            message = send_report(report, to=to, smtp=smtp)
    except MailError as error:
        raise UsageError(str(error)) from None
    attached = ", ".join(part.get_filename() for part in message.iter_attachments())
    return f"emailed the report to {message['To']} via {smtp.host} with {attached} attached"
