"""Wiring and commands: build the Service from settings, serve, migrate, render, replay."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from mpesa_service import golive, log
from mpesa_service.api_keys import api_keys
from mpesa_service.batches import Upload, batch_detail, upload_batch
from mpesa_service.c2b import c2b_urls, pull_c2b, register_pull, register_urls
from mpesa_service.callback_auth import callback_policy, callback_token
from mpesa_service.callbacks import replay_journal
from mpesa_service.context import ApiError, Service
from mpesa_service.daraja import (
    DarajaAccount,
    DarajaClient,
    DarajaError,
    DarajaRejected,
    security_credential,
)
from mpesa_service.events import write_events_to
from mpesa_service.jobs import make_scheduler
from mpesa_service.journal import Journal
from mpesa_service.operator import resolve_payout
from mpesa_service.reversals import ReversalRequest, reverse_collection
from mpesa_service.routes import make_app
from mpesa_service.settings import DARAJA_BASE_URLS, Settings, SettingsError, load_settings
from mpesa_service.storage import (
    head_revision,
    make_engine,
    migrate,
    render_mysql_schema,
    schema_revision,
)
from mpesa_service.throughput import waitress_server
from mpesa_service.throughput.writer import callback_writer, wait_applied
from mpesa_service.token_store import DatabaseTokenStore


def daraja_account(settings: Settings) -> DarajaAccount:
    """The credentials from the settings; in the simulator, the simulator's own defaults fill
    whatever is not set."""
    defaults = {}
    if settings.environment == "simulator":
        import simulator  # here, not at the top: production never loads the stand-in

        config = simulator.SimulatorConfig()
        defaults = {
            "MPESA_CONSUMER_KEY": config.consumer_key,
            "MPESA_CONSUMER_SECRET": config.consumer_secret,
            "MPESA_SHORTCODE": config.shortcode,
            "MPESA_PASSKEY": config.passkey,
            "MPESA_B2C_SHORTCODE": config.b2c_shortcode,
            "MPESA_INITIATOR_NAME": config.initiator_name,
            # The simulator decrypts the credential with its test key, as Daraja would.
            "MPESA_INITIATOR_PASSWORD": config.initiator_password,
            "MPESA_CERT_PATH": str(simulator.TEST_CERTIFICATE),
        }

    def value(name: str) -> str:
        return settings[name] or defaults.get(name, "")

    return DarajaAccount(
        consumer_key=value("MPESA_CONSUMER_KEY"),
        consumer_secret=value("MPESA_CONSUMER_SECRET"),
        shortcode=value("MPESA_SHORTCODE"),
        passkey=value("MPESA_PASSKEY"),
        b2c_shortcode=value("MPESA_B2C_SHORTCODE") or value("MPESA_SHORTCODE"),
        initiator_name=value("MPESA_INITIATOR_NAME"),
        security_credential=value("MPESA_SECURITY_CREDENTIAL") or _computed_credential(value),
        stk_transaction_type=settings["MPESA_STK_TRANSACTION_TYPE"],
        stk_party_b=settings["MPESA_STK_PARTY_B"],
    )


def _computed_credential(value: Callable[[str], str]) -> str:
    """MPESA_INITIATOR_PASSWORD encrypted with MPESA_CERT_PATH, as `value` gives them; empty
    when either is missing."""
    password, certificate = value("MPESA_INITIATOR_PASSWORD"), value("MPESA_CERT_PATH")
    if password and certificate:
        return security_credential(password, certificate)
    return ""


def daraja_base_url(settings: Settings, simulator_url: str = "") -> str:
    return settings["MPESA_BASE_URL"] or DARAJA_BASE_URLS.get(settings.environment) or simulator_url


def public_base_url(settings: Settings) -> str:
    if settings["PUBLIC_BASE_URL"]:
        return settings["PUBLIC_BASE_URL"].rstrip("/")
    host = settings["HOST"]
    if not host or _is_unspecified(host):  # listening on every address: call back on loopback
        host = "127.0.0.1"
    return f"http://{host}:{settings['PORT']}"


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False


def build_service(settings: Settings, *, simulator_url: str = "", public_url: str = "") -> Service:
    """The service's parts wired from its settings (the database engine, the Daraja client,
    the journal, the callback policy, the API keys) and its callback writer."""
    engine = make_engine(settings["DATABASE_URL"])
    write_events_to(engine.url, on=bool(settings["EVENTS_URL"]))
    base_url, account = daraja_base_url(settings, simulator_url), daraja_account(settings)
    svc = Service(
        settings=settings,
        engine=engine,
        client=DarajaClient(
            base_url,
            account,
            timeout=settings.seconds("DARAJA_TIMEOUT_SECONDS"),
            token_store=DatabaseTokenStore(engine, base_url, account.consumer_key),
        ),
        journal=Journal(
            settings["CALLBACK_JOURNAL_PATH"], settings.integer("REFUSED_JOURNAL_PER_MINUTE")
        ),
        policy=callback_policy(settings, callback_token(settings)),
        keys=api_keys(settings),
        public_base_url=public_url or public_base_url(settings),
    )
    svc.callback_writer = callback_writer(svc)
    return svc


# Waitress would drop X-Forwarded-For from untrusted peers itself; the callback policy decides
# (TRUSTED_PROXIES), so the header is passed through.
# No request body over 1 MiB is even read (callbacks are capped lower by CALLBACK_MAX_BYTES).
WAITRESS_OPTIONS = {"clear_untrusted_proxy_headers": False, "max_request_body_size": 1 << 20}
# A callback's thread mostly waits for its group commit, and the next batch can only gather
# while the current one is written if threads are free to take requests meanwhile
# (docs/evidence.md, "Figures that left the code").
WAITRESS_THREADS = 32


def serve(settings: Settings) -> None:
    embedded = start_embedded_simulator(settings)
    svc = build_service(settings, simulator_url=embedded.base_url if embedded else "")
    require_current_schema(svc.engine)
    replayed = replay_journal(svc)
    if replayed:
        log.info("replayed %d journaled callbacks at start-up", replayed)
    scheduler = make_scheduler(svc)
    scheduler.start()
    app = make_app(svc)
    if embedded:
        app = embedded_simulator_controls(app, embedded)
    log_serving(settings, embedded is not None)
    try:
        server = waitress_server.create(
            app,
            host=settings["HOST"],
            port=settings.integer("PORT"),
            threads=WAITRESS_THREADS,
            **WAITRESS_OPTIONS,
        )
        server.print_listen("Serving on http://{}:{}")
        server.run()
    finally:
        scheduler.shutdown(wait=False)
        wait_applied(svc)  # callbacks already answered; any not applied in time are replayed


def start_embedded_simulator(settings: Settings):
    """In the simulator environment with no MPESA_BASE_URL, the Daraja simulator served in this
    process on a port of its own (a simulator.RunningSimulator); otherwise None."""
    if settings.environment != "simulator" or settings["MPESA_BASE_URL"]:
        return None
    import simulator  # here, not at the top: production never loads the stand-in

    running = simulator.start(host="127.0.0.1", port=0)
    log.info("in-process Daraja simulator: the service calls it at %s", running.base_url)
    return running


def embedded_simulator_controls(app, embedded):
    """The service's app with the embedded simulator's control routes beside it, under
    /simulator/ on the service's own port (never outside the simulator environment)."""
    import simulator  # here, not at the top: production never loads the stand-in

    return simulator.with_controls(app, embedded.simulator)


def log_serving(settings: Settings, with_simulator_controls: bool) -> None:
    base_url = f"http://{settings['HOST']}:{settings['PORT']}"
    log.info(
        "serving the payments service (MPESA_ENVIRONMENT %s) on %s",
        settings.environment,
        base_url,
    )
    if with_simulator_controls:
        log.info(
            "the simulator's control routes at %s/simulator/ (requests, ledger, callbacks, "
            "scenarios, reset): see docs/simulator.md",
            base_url,
        )


def require_current_schema(engine: sa.Engine) -> None:
    current, head = schema_revision(engine), head_revision()
    if current != head:
        raise SystemExit(
            f"database schema is at {current or 'nothing'}, not {head}: "
            "run `python service.py migrate` first"
        )


def resolve_from_cli(settings: Settings, args) -> int:
    """`python service.py resolve REF --outcome paid --receipt X --note WHY`: the same
    resolution as the API and the console, audited under --actor."""
    if not args.reference_id or not args.outcome:
        print("resolve needs a reference_id and --outcome", file=sys.stderr)
        return 2
    svc = build_service(settings)
    try:
        result = resolve_payout(
            svc,
            args.reference_id,
            outcome=args.outcome,
            actor=args.actor,
            receipt=args.receipt,
            note=args.note,
        )
    except ApiError as error:
        print(f"not resolved: {error.message}", file=sys.stderr)
        return 1
    print(f"payout {args.reference_id} resolved as {args.outcome}: now {result['status']}")
    return 0


def reverse_from_cli(settings: Settings, args) -> int:
    """`python service.py reverse PAYMENT_ID --reason WHY [--retry]`: the same reversal as the
    API and the console, audited under --actor. Its result comes to the running service's
    callback URLs (PUBLIC_BASE_URL)."""
    if not args.reference_id or not args.reason:
        print("reverse needs a payment_id and --reason", file=sys.stderr)
        return 2
    svc = build_service(settings)
    body = {"reason": args.reason, "retry": args.retry}
    try:
        request = ReversalRequest.from_body(args.reference_id, body, args.actor)
        status, reversal = reverse_collection(svc, request)
    except ApiError as error:
        print(f"not reversed: {error.message}", file=sys.stderr)
        return 1
    said = "sent" if status == 201 else "already asked for"
    print(
        f"reversal of {args.reference_id} {said}: {reversal['status']} "
        f"(attempt {reversal['attempt']}, reversal_id {reversal['reversal_id']})"
    )
    return 0


def bulk_from_cli(settings: Settings, args) -> int:
    """`python service.py bulk FILE [--skip-bad-rows] [--actor NAME]`: check and upload a bulk
    payout file as POST /payouts/batches does, uploaded by --actor (who may not approve it);
    prints the report and the batch id. 1 when it is refused."""
    if not args.reference_id:
        print("bulk needs a FILE (CSV or XLSX)", file=sys.stderr)
        return 2
    path = Path(args.reference_id)
    upload = Upload(path.read_bytes(), path.name, args.actor, skip_bad_rows=args.skip_bad_rows)
    svc = build_service(settings)
    try:
        batch = upload_batch(svc, upload)
    except ApiError as error:
        print_report(error.extra.get("report"))
        print(f"refused: {error.message}", file=sys.stderr)
        return 1
    print_report(batch["report"])
    print(f"batch {batch['batch_id']}: {batch['status']}, {batch['row_count']} rows")
    return 0


def print_report(report: dict | None) -> None:
    if not report:
        return
    for bad in report["bad_rows"]:
        print(f"line {bad['line']}: {bad['reason']}")
    totals = report["totals"]
    print(
        f"{totals['count']} good rows, KES {totals['amount']:,}, largest KES {totals['largest']:,}"
    )
    for name, use in report["limits"].items():
        if "would_reach" in use and use["limit"]:
            print(
                f"{name} {use['limit']:,}: today {use['used_today']:,}, "
                f"with the batch {use['would_reach']:,}"
            )
        for user in use.get("users_over", []):
            print(f"{name}: user {user['user_id']} would reach {user['would_reach']:,}")


def bulk_status_from_cli(settings: Settings, args) -> int:
    """`python service.py bulk-status BATCH_ID`: the batch's status, progress and counts."""
    if not args.reference_id:
        print("bulk-status needs a BATCH_ID", file=sys.stderr)
        return 2
    try:
        batch = batch_detail(build_service(settings), args.reference_id)
    except ApiError as error:
        print(error.message, file=sys.stderr)
        return 1
    progress = batch["progress"]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(batch["counts"].items()))
    print(
        f"batch {batch['batch_id']}: {batch['status']}; {progress['settled']}/{progress['rows']} "
        f"settled ({progress['percent']}%), {progress['sent']} sent; {counts}"
    )
    return 0


def register_urls_command(svc: Service) -> int:
    """`python service.py register-urls`: C2B Register URL with this deployment's URLs (and
    Pull Transactions registration when C2B_PULL_NOMINATED_NUMBER is set), once the URLs pass
    the go-live check's URL rules (REFERENCE 9.5); says what was registered, or why not. The
    callback token is never printed."""
    token = svc.policy.token
    refusals = [
        f"{golive.redacted(url, token)}: {'; '.join(problems)}"
        for url in c2b_urls(svc).values()
        if (problems := golive.url_problems(url, token, svc.settings.environment))
    ]
    if refusals:
        print("not registered, nothing sent to Daraja: " + " | ".join(refusals), file=sys.stderr)
        return 1
    try:
        done = register_urls(svc)
    except DarajaError as error:
        print(f"not registered: {_daraja_refusal(error)}", file=sys.stderr)
        return 1
    print(
        f"registered C2B URLs for shortcode {done.shortcode} (ResponseType {done.response_type})"
        f":\n  confirmation {golive.redacted(done.confirmation_url, token)}\n  validation   "
        f"{golive.redacted(done.validation_url, token)}\n  Daraja said: "
        f"{done.answer.get('ResponseDescription') or done.answer}"
    )
    return _register_pull_command(svc)


def _register_pull_command(svc: Service) -> int:
    try:
        answer = register_pull(svc)
    except DarajaError as error:
        print(f"Pull Transactions not registered: {_daraja_refusal(error)}", file=sys.stderr)
        return 1
    if answer is not None:
        print(f"registered for Pull Transactions: {answer.get('ResponseDescription') or answer}")
    return 0


def _daraja_refusal(error: DarajaError) -> str:
    if isinstance(error, DarajaRejected):
        return f"Daraja refused it ({error.code}: {error.message})"
    return f"Daraja could not be reached ({error})"


def pull_c2b_command(svc: Service, hours: int | None) -> int:
    """`python service.py pull-c2b --hours H`: the c2b_pull job, by hand."""
    try:
        stored = pull_c2b(svc, hours)
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 2
    except DarajaError as error:
        print(f"Pull Transactions failed: {_daraja_refusal(error)}", file=sys.stderr)
        return 1
    print(f"{stored} C2B payments found by Pull Transactions that no confirmation had brought")
    return 0


def check_from_cli(smoke: bool) -> int:
    """`python service.py check [--smoke]`: the go-live check's table; 1 when anything failed."""
    configure_logging("WARNING")
    report = golive.go_live_report(build_for_check, smoke=smoke)
    sys.stdout.write(report.render())
    return 1 if report.failed else 0


def build_for_check(settings: Settings) -> Service:
    """The service as `serve` builds it, with the embedded simulator it would start (left
    running until the command exits)."""
    embedded = start_embedded_simulator(settings)
    return build_service(settings, simulator_url=embedded.base_url if embedded else "")


# Libraries whose INFO lines are routine chatter, shown only at LOG_LEVEL DEBUG: APScheduler
# writes two lines for every job run, whether or not it did anything (each job logs what it did
# itself, see jobs.run_job).
QUIET_LIBRARIES = ("apscheduler", "alembic.runtime.plugins")


def configure_logging(level: str) -> None:
    """The service's log at `level` (LOG_LEVEL); QUIET_LIBRARIES say only warnings and errors
    unless that is DEBUG."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    if logging.getLevelNamesMapping()[level] > logging.DEBUG:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


def command_line_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="M-Pesa payments service")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=[*COMMANDS, "schema", "check"],
    )
    parser.add_argument(
        "reference_id",
        nargs="?",
        help="resolve: the payout's reference_id; reverse: the collection's payment_id; "
        "bulk: the FILE; bulk-status: the BATCH_ID",
    )
    parser.add_argument("--outcome", choices=["paid", "not_paid", "acknowledge"])
    parser.add_argument("--receipt", help="resolve paid: the M-Pesa receipt")
    parser.add_argument("--note", default="", help="resolve: why (kept in the audit trail)")
    parser.add_argument("--reason", default="", help="reverse: why the collection is refunded")
    parser.add_argument(
        "--retry", action="store_true", help="reverse: ask again after a failed reversal"
    )
    parser.add_argument(
        "--actor",
        default=f"cli:{getpass.getuser()}",
        help="resolve, reverse, bulk: who, for the audit trail (bulk: the maker, who may not "
        "approve it)",
    )
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="bulk: keep the good rows of a file with bad ones",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check: also send one STK push, one payout and two queries through the service",
    )
    parser.add_argument(
        "--hours", type=int, help="pull-c2b: how many hours back (1-48; C2B_PULL_HOURS)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_line_parser().parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(render_mysql_schema())
        return 0
    if args.command == "check":
        return check_from_cli(args.smoke)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging(settings["LOG_LEVEL"])
    return COMMANDS[args.command](settings, args)


def migrate_command(settings, _args) -> int:
    migrate(make_engine(settings["DATABASE_URL"]))
    log.info("database at %s", head_revision())
    return 0


def replay_command(settings, _args) -> int:
    svc = build_service(settings)
    require_current_schema(svc.engine)
    print(f"replayed {replay_journal(svc)} callbacks from {settings['CALLBACK_JOURNAL_PATH']}")
    return 0


def pull_c2b_from_cli(settings, args) -> int:
    svc = build_for_check(settings)
    require_current_schema(svc.engine)
    return pull_c2b_command(svc, args.hours)


def serve_command(settings, _args) -> int:
    serve(settings)
    return 0


# The commands that need the settings, by name (`schema` and `check` read their own).
COMMANDS = {
    "serve": serve_command,
    "migrate": migrate_command,
    "replay": replay_command,
    "resolve": resolve_from_cli,
    "reverse": reverse_from_cli,
    "bulk": bulk_from_cli,
    "bulk-status": bulk_status_from_cli,
    "register-urls": lambda settings, _args: register_urls_command(build_for_check(settings)),
    "pull-c2b": pull_c2b_from_cli,
}


if __name__ == "__main__":
    sys.exit(main())
