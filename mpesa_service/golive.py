"""The go-live check, `python service.py check [--smoke]`: each thing the configured environment
needs before real money moves (settings, database, OAuth, certificate, SecurityCredential,
callback URLs, journal, clock, callback filters) checked and reported as a table of findings,
and with --smoke one STK push, one B2C payout, a Transaction Status and an Account Balance sent
through the running service, each waited for until its callback is recorded."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from cryptography import x509

from mpesa_service.c2b import c2b_urls
from mpesa_service.callback_auth import parse_networks
from mpesa_service.context import Service
from mpesa_service.daraja import DarajaError, DarajaRejected
from mpesa_service.jobs import journal_space_problem
from mpesa_service.resolution import ask_status
from mpesa_service.settings import Settings, SettingsError, load_settings
from mpesa_service.storage import (
    b2c_payment_callbacks,
    b2c_payments,
    database_is_reachable,
    head_revision,
    schema_revision,
    status_queries,
    stk_callbacks,
)
from recon.rules import REJECTED_URL_WORDS
from recon.tariff import TariffError, load_tariff

OK, FAIL, WARN = "ok", "FAIL", "warn"
SAFARICOM_DOMAIN = "safaricom.co.ke"
CERTIFICATE_WARN_DAYS = 30
CLOCK_TOLERANCE_SECONDS = 60
# RSA ciphertexts are as long as the key: 2048-bit and 4096-bit keys.
CREDENTIAL_BYTES = (256, 512)
# REFERENCE 2.1: the sandbox's test MSISDN; the simulator pays any phone without a magic number.
TEST_MSISDN = "254708374149"
SMOKE_STK_AMOUNT = 1
SMOKE_B2C_AMOUNT = 10  # B2C's minimum (REFERENCE 4.7)
SMOKE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, ok/FAIL/warn, and what was found or how to
    fix it."""

    check: str
    result: str
    detail: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(finding.result == FAIL for finding in self.findings)

    def render(self) -> str:
        """A plain-text table: check, result, detail (how to fix, for FAIL and warn)."""
        rows = [("check", "result", "found / how to fix")]
        rows += [(f.check, f.result, f.detail) for f in self.findings]
        widths = [max(len(row[column]) for row in rows) for column in (0, 1)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows]
        verdict = "FAILED" if self.failed else "passed"
        failures = sum(f.result == FAIL for f in self.findings)
        warnings = sum(f.result == WARN for f in self.findings)
        lines.append(f"\ngo-live check {verdict}: {failures} failed, {warnings} warnings")
        return "\n".join(lines) + "\n"


# --- settings and database ------------------------------------------------------------------


def check_settings(
    environ: dict[str, str] | None = None, env_file: Path | None = None
) -> tuple[Settings | None, Finding]:
    """The settings, loaded and validated exactly as the service does (settings.load_settings
    names every missing or bad variable)."""
    try:
        settings = load_settings(environ, env_file)
    except SettingsError as error:
        return None, Finding("settings", FAIL, f"{error}: set them in the environment or .env")
    return settings, Finding(
        "settings", OK, f"complete for MPESA_ENVIRONMENT {settings.environment}"
    )


def check_database(svc: Service) -> Finding:
    shown = svc.engine.url.render_as_string(hide_password=True)
    if not database_is_reachable(svc.engine):
        return Finding(
            "database", FAIL, f"{shown} is not reachable: check DATABASE_URL and the server"
        )
    current, head = schema_revision(svc.engine), head_revision()
    if current != head:
        return Finding(
            "database",
            FAIL,
            f"schema at {current or 'nothing'}, head is {head}: run `python service.py migrate`",
        )
    return Finding("database", OK, f"{shown} reachable, schema at head {head}")


# --- Daraja: OAuth and the clock ------------------------------------------------------------


def is_safaricom(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host == SAFARICOM_DOMAIN or host.endswith("." + SAFARICOM_DOMAIN)


def check_daraja_target(svc: Service) -> Finding:
    """Which Daraja the service talks to: Safaricom's host, or (a rehearsal) another one."""
    base_url = svc.client.base_url
    environment = svc.settings.environment
    if environment == "simulator" or is_safaricom(base_url):
        return Finding("daraja base URL", OK, base_url)
    return Finding(
        "daraja base URL",
        WARN,
        f"{base_url} is not Safaricom's host in {environment}: a rehearsal (the simulator's "
        "test certificate is accepted); leave MPESA_BASE_URL empty to go live",
    )


def check_oauth(svc: Service) -> tuple[Finding, datetime | None]:
    """One token from the configured base URL, and the Date header Daraja answered with."""
    dates: list[str] = []

    def keep_date(response, *args, **kwargs):
        dates.append(response.headers.get("Date", ""))

    # The client's own session, so that the token is fetched exactly as the service fetches it.
    svc.client._session.hooks["response"].append(keep_date)
    try:
        svc.client.access_token()
    except DarajaRejected as error:
        return Finding(
            "oauth token",
            FAIL,
            f"{svc.client.base_url} refused the credentials ({error.code}: {error.message}): "
            "set MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET to this environment's app's",
        ), None
    except DarajaError as error:
        return Finding(
            "oauth token",
            FAIL,
            f"no token from {svc.client.base_url} ({error}): check MPESA_BASE_URL and the "
            "network route to Daraja",
        ), None
    finally:
        svc.client._session.hooks["response"].remove(keep_date)
    return Finding("oauth token", OK, f"obtained from {svc.client.base_url}"), _http_date(dates)


def _http_date(values: list[str]) -> datetime | None:
    for value in values:
        try:
            return parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
    return None


def check_clock(daraja_date: datetime | None, now: datetime | None = None) -> Finding:
    if daraja_date is None:
        return Finding(
            "clock", WARN, "Daraja's answer had no Date header: compare the clock with NTP"
        )
    skew = ((now or datetime.now(UTC)) - daraja_date).total_seconds()
    if abs(skew) > CLOCK_TOLERANCE_SECONDS:
        direction = "ahead of" if skew > 0 else "behind"
        return Finding(
            "clock",
            FAIL,
            f"{abs(skew):.0f} s {direction} Daraja's Date header: sync the clock (NTP); STK "
            "timestamps and token expiry depend on it",
        )
    return Finding("clock", OK, f"within {abs(skew):.0f} s of Daraja's Date header")


# --- the certificate and the SecurityCredential ---------------------------------------------


def load_certificate(path: str):
    """The X.509 certificate at `path` (PEM or DER); OSError or ValueError say why not."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def simulator_test_certificate():
    import simulator  # here, not at the top: production never loads the stand-in

    return load_certificate(str(simulator.TEST_CERTIFICATE))


def check_certificate(settings: Settings, base_url: str, now: datetime | None = None) -> Finding:
    path = settings["MPESA_CERT_PATH"]
    if not path:
        return Finding("certificate", OK, "MPESA_CERT_PATH not set (no certificate used)")
    try:
        certificate = load_certificate(path)
    except OSError as error:
        return Finding(
            "certificate", FAIL, f"MPESA_CERT_PATH {path} cannot be read ({error.strerror})"
        )
    except ValueError:
        return Finding(
            "certificate",
            FAIL,
            f"MPESA_CERT_PATH {path} is not a PEM or DER X.509 certificate: download "
            "Safaricom's certificate for this environment from the Daraja portal",
        )
    problem = certificate_environment_problem(certificate, path, settings.environment, base_url)
    if problem:
        return Finding("certificate", FAIL, problem)
    return certificate_expiry(certificate, path, now or datetime.now(UTC))


def certificate_environment_problem(
    certificate, path: str, environment: str, base_url: str
) -> str | None:
    """Why this certificate cannot work with this Daraja, when that can be told."""
    is_test = certificate == simulator_test_certificate()
    if is_test and is_safaricom(base_url):
        return (
            f"MPESA_CERT_PATH {path} is the simulator's test certificate, which Safaricom "
            f"cannot decrypt: use Safaricom's {environment} certificate from the Daraja portal"
        )
    if environment == "production" and _looks_like_sandbox(certificate, path):
        return (
            f"MPESA_CERT_PATH {path} looks like the sandbox certificate (its name or subject "
            "says sandbox): production needs ProductionCertificate.cer"
        )
    return None


def _looks_like_sandbox(certificate, path: str) -> bool:
    """REFERENCE 5: Safaricom's sandbox certificate is commonly saved as SandboxCertificate.cer;
    its name or its subject saying "sandbox" is all that tells it apart."""
    return (
        "sandbox" in Path(path).name.lower()
        or "sandbox" in certificate.subject.rfc4514_string().lower()
    )


def certificate_expiry(certificate, path: str, now: datetime) -> Finding:
    expires = certificate.not_valid_after_utc
    days = (expires - now).days
    if expires <= now:
        return Finding(
            "certificate",
            FAIL,
            f"{path} expired on {expires:%Y-%m-%d}: download the current one from the Daraja "
            "portal",
        )
    if days < CERTIFICATE_WARN_DAYS:
        return Finding(
            "certificate",
            WARN,
            f"{path} expires in {days} days ({expires:%Y-%m-%d}): get its successor now",
        )
    return Finding("certificate", OK, f"{path}, valid until {expires:%Y-%m-%d}")


def check_security_credential(svc: Service) -> Finding:
    """The SecurityCredential the service sends: decrypted and compared where the simulator's
    test key can (a rehearsal against a Daraja that is not Safaricom's), well-formed otherwise."""
    settings = svc.settings
    if settings.environment == "simulator" and not any(
        settings[name]
        for name in ("MPESA_SECURITY_CREDENTIAL", "MPESA_INITIATOR_PASSWORD", "MPESA_CERT_PATH")
    ):
        return Finding("security credential", OK, "the embedded simulator's default")
    credential = svc.client.account.security_credential
    if not credential:
        return Finding(
            "security credential",
            FAIL,
            "none: set MPESA_INITIATOR_PASSWORD with MPESA_CERT_PATH, or "
            "MPESA_SECURITY_CREDENTIAL (B2C, Transaction Status and Account Balance need it)",
        )
    shape = credential_shape_problem(credential)
    if shape:
        return Finding("security credential", FAIL, shape)
    if is_safaricom(svc.client.base_url):
        return _credential_for_safaricom(settings, credential)
    return _credential_for_simulator(settings, credential)


def credential_shape_problem(credential: str) -> str | None:
    try:
        size = len(base64.b64decode(credential, validate=True))
    except (binascii.Error, ValueError):
        return "the SecurityCredential is not base64: recompute it from the certificate"
    if size not in CREDENTIAL_BYTES:
        return (
            f"the SecurityCredential is base64 of {size} bytes, not an RSA-2048/4096 "
            "ciphertext (256/512 bytes): encrypt the initiator password with the certificate"
        )
    return None


def _decrypted(credential: str) -> str | None:
    import simulator  # here, not at the top: production never loads the stand-in

    return simulator.decrypt_security_credential(credential)


def _credential_for_simulator(settings: Settings, credential: str) -> Finding:
    password = settings["MPESA_INITIATOR_PASSWORD"]
    decrypted = _decrypted(credential)
    if not settings["MPESA_SECURITY_CREDENTIAL"]:
        if decrypted != password:
            return Finding(
                "security credential",
                FAIL,
                f"made with MPESA_CERT_PATH {settings['MPESA_CERT_PATH']}, it does not decrypt "
                "with the simulator's key: against the simulator, MPESA_CERT_PATH must be "
                "simulator_keys/simulator-test-only.cert.pem",
            )
        return Finding(
            "security credential", OK, "decrypts (simulator's key) to MPESA_INITIATOR_PASSWORD"
        )
    if decrypted is None:
        return Finding(
            "security credential",
            FAIL,
            "MPESA_SECURITY_CREDENTIAL does not decrypt with the simulator's key: make it with "
            "simulator_keys/simulator-test-only.cert.pem",
        )
    if not password:
        return Finding(
            "security credential",
            WARN,
            "MPESA_SECURITY_CREDENTIAL decrypts with the simulator's key; no "
            "MPESA_INITIATOR_PASSWORD to compare it with",
        )
    if decrypted != password:
        return Finding(
            "security credential",
            FAIL,
            "MPESA_SECURITY_CREDENTIAL does not carry MPESA_INITIATOR_PASSWORD: recompute it "
            "from the current initiator password, or correct MPESA_INITIATOR_PASSWORD",
        )
    return Finding(
        "security credential", OK, "MPESA_SECURITY_CREDENTIAL carries MPESA_INITIATOR_PASSWORD"
    )


def _credential_for_safaricom(settings: Settings, credential: str) -> Finding:
    if settings["MPESA_SECURITY_CREDENTIAL"] and _decrypted(credential) is not None:
        return Finding(
            "security credential",
            FAIL,
            "MPESA_SECURITY_CREDENTIAL decrypts with the simulator's test key: it was made "
            "with the test certificate, which Safaricom cannot decrypt; recompute it with "
            "Safaricom's certificate",
        )
    return Finding(
        "security credential",
        OK,
        "well-formed (only Safaricom can decrypt it; a wrong password shows as result 2001)",
    )


# --- callback URLs --------------------------------------------------------------------------


def callback_urls(svc: Service) -> dict[str, str]:
    """Every URL the service hands Daraja, built as the service builds them."""
    return {
        "STK CallBackURL": f"{svc.hook_url('stk')}/<payment_id>",
        "B2C ResultURL": svc.b2c_result_url,
        "B2C QueueTimeOutURL": svc.hook_url("b2c", "timeout"),
        "status ResultURL": svc.hook_url("status", "result"),
        "status QueueTimeOutURL": svc.hook_url("status", "timeout"),
        "balance ResultURL": svc.hook_url("balance", "result"),
        "balance QueueTimeOutURL": svc.hook_url("balance", "timeout"),
        "C2B ConfirmationURL": c2b_urls(svc)["confirmation"],
        "C2B ValidationURL": c2b_urls(svc)["validation"],
    }


def check_callback_urls(svc: Service) -> list[Finding]:
    token = svc.policy.token
    findings = []
    for name, url in callback_urls(svc).items():
        problems = url_problems(url, token, svc.settings.environment)
        shown = redacted(url, token)
        if problems:
            findings.append(Finding(name, FAIL, f"{shown}: {'; '.join(problems)}"))
        else:
            findings.append(Finding(name, OK, shown))
    return findings + [check_result_url_consistency(svc)]


def redacted(url: str, token: str) -> str:
    return url.replace(token, "<CALLBACK_TOKEN>") if token else url


def url_problems(url: str, token: str, environment: str) -> list[str]:
    """What keeps Daraja from delivering to `url` (REFERENCE 9.5). Host names are judged by
    name (localhost, *.local), never resolved; literal addresses by their range."""
    parts = urlsplit(url)
    problems = []
    if environment == "production" and parts.scheme != "https":
        problems.append("production needs HTTPS: set PUBLIC_BASE_URL to an https:// URL")
    elif parts.scheme not in ("http", "https"):
        problems.append(f"scheme {parts.scheme!r} is not http(s)")
    host = (parts.hostname or "").lower()
    if environment != "simulator" and not is_public_host(host):
        problems.append(
            f"host {host or '(none)'} is not public (Daraja cannot reach it): set "
            "PUBLIC_BASE_URL (and MPESA_RESULT_URL, if set) to the address Daraja calls"
        )
    if not token or token not in url:
        problems.append("it does not carry CALLBACK_TOKEN: callbacks to it would be refused")
    words = [word for word in REJECTED_URL_WORDS if word in url.lower()]
    if words:
        problems.append(
            f"contains {', '.join(repr(w) for w in words)}, which Daraja rejects in callback "
            "URLs: change PUBLIC_BASE_URL or MPESA_RESULT_URL (or CALLBACK_TOKEN) to avoid it"
        )
    return problems


def is_public_host(host: str) -> bool:
    """False for localhost, *.localhost, *.local and literal private, loopback, link-local or
    otherwise non-global addresses; names are taken as public without resolving them."""
    if not host or host == "localhost" or host.endswith((".localhost", ".local")):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:  # a name
        return True


def check_result_url_consistency(svc: Service) -> Finding:
    """MPESA_RESULT_URL, when set, must point at the same public host as PUBLIC_BASE_URL."""
    result_url = svc.settings["MPESA_RESULT_URL"]
    if not result_url:
        return Finding("MPESA_RESULT_URL", OK, "not set: B2C results go to PUBLIC_BASE_URL")
    ours, theirs = urlsplit(svc.public_base_url), urlsplit(result_url)
    if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
        return Finding(
            "MPESA_RESULT_URL",
            FAIL,
            f"points at {theirs.scheme}://{theirs.netloc}, PUBLIC_BASE_URL at "
            f"{ours.scheme}://{ours.netloc}: make them the same host, or leave "
            "MPESA_RESULT_URL empty",
        )
    return Finding("MPESA_RESULT_URL", OK, "same host as PUBLIC_BASE_URL")


# --- journal and callback filters -----------------------------------------------------------


def check_journal(svc: Service) -> Finding:
    directory = svc.journal.path.parent
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".golive-"):
            pass
    except OSError as error:
        return Finding(
            "journal",
            FAIL,
            f"cannot write in {directory} ({error.strerror}): make CALLBACK_JOURNAL_PATH's "
            "directory writable by the service",
        )
    if svc.journal.path.exists() and not os.access(svc.journal.path, os.W_OK):
        return Finding("journal", FAIL, f"{svc.journal.path} is not writable by this user")
    space = journal_space_problem(svc)
    if space:
        return Finding("journal", FAIL, f"{space}: free space or lower JOURNAL_MIN_FREE_MB")
    free = svc.journal.free_bytes() // 2**20
    return Finding("journal", OK, f"{directory} writable, {free:,} MB free")


def check_callback_filters(settings: Settings) -> list[Finding]:
    """CALLBACK_ALLOWED_IPS and TRUSTED_PROXIES as callback_auth.callback_policy reads them."""
    allowed, proxies = settings.listing("CALLBACK_ALLOWED_IPS"), settings.listing("TRUSTED_PROXIES")
    try:
        allowed_networks = parse_networks([e for e in allowed if e != "*"])
        proxy_networks = parse_networks(proxies)
    except ValueError as error:
        return [Finding("callback filters", FAIL, f"{error}: fix the address or CIDR")]
    if settings.environment != "production":
        return [Finding("callback filters", OK, "not checked outside production")]
    return [_allowed_ips_finding(allowed, allowed_networks), _proxies_finding(proxy_networks)]


def _allowed_ips_finding(allowed: list[str], networks: list) -> Finding:
    name = "CALLBACK_ALLOWED_IPS"
    if "*" in allowed or any(network.prefixlen == 0 for network in networks):
        return Finding(
            name,
            FAIL,
            "allows every sender in production: leave it empty for Safaricom's published list",
        )
    if not allowed:
        return Finding(name, OK, "empty: Safaricom's published callback addresses")
    return Finding(name, OK, f"{len(networks)} networks")


def _proxies_finding(networks: list) -> Finding:
    name = "TRUSTED_PROXIES"
    if any(network.prefixlen == 0 for network in networks):
        return Finding(
            name,
            FAIL,
            "trusts every address: anyone could forge X-Forwarded-For past the callback "
            "filter; list only your reverse proxies",
        )
    public = [str(network) for network in networks if network.is_global]
    if public:
        return Finding(
            name, WARN, f"public addresses {', '.join(public)}: make sure they are your proxies"
        )
    if not networks:
        return Finding(
            name,
            OK,
            "empty: callbacks must reach the service directly (behind a proxy, list it, or "
            "every callback is filtered on the proxy's address)",
        )
    return Finding(name, OK, f"{len(networks)} networks")


# --- reconciliation ------------------------------------------------------------------------


def check_recon_tariff(settings: Settings) -> Finding:
    """The B2C tariff the scheduled reconciliation checks charges against (RECON_TARIFF) reads,
    so a malformed file stops the go-live check, not the first report."""
    path = settings.path("RECON_TARIFF")
    try:
        tariff = load_tariff(path)
    except TariffError as error:
        return Finding("RECON_TARIFF", FAIL, f"{error}: fix the file or name another")
    unknown = sum(
        charge is None
        for version in tariff.versions
        for band in version.bands
        for charge in band.charges.values()
    )
    return Finding(
        "RECON_TARIFF",
        OK,
        f"{path}: {len(tariff.versions)} tariff(s), the latest from "
        f"{tariff.versions[-1].since_text}; {unknown} unknown charges are reported as not checked",
    )


# --- running the checks ---------------------------------------------------------------------


def run_checks(svc: Service) -> list[Finding]:
    oauth, daraja_date = check_oauth(svc)
    return [
        check_database(svc),
        check_daraja_target(svc),
        oauth,
        check_clock(daraja_date),
        check_certificate(svc.settings, svc.client.base_url),
        check_security_credential(svc),
        *check_callback_urls(svc),
        check_journal(svc),
        *check_callback_filters(svc.settings),
        check_recon_tariff(svc.settings),
    ]


def go_live_report(
    build: Callable[[Settings], Service],
    smoke: bool = False,
    environ: dict[str, str] | None = None,
    env_file: Path | None = None,
) -> Report:
    """Every check against the environment the service would run in (`environ` and `env_file`
    as load_settings reads them); `build` makes the service from the settings
    (entrypoint.build_for_check)."""
    settings, finding = check_settings(environ, env_file)
    report = Report([finding])
    if settings is None:
        return report
    try:
        svc = build(settings)
    except (OSError, ValueError) as error:
        report.findings.append(
            Finding("service", FAIL, f"cannot be built from the settings: {error}")
        )
        report.findings.append(check_certificate(settings, ""))
        return report
    report.findings += run_checks(svc)
    if smoke:
        report.findings += run_smoke(svc)
    return report


# --- the smoke: real requests through the running service -----------------------------------


@dataclass(frozen=True)
class SmokeTarget:
    """The running service (at PUBLIC_BASE_URL, called with an API key from the settings) and
    the database it records into; `wait_seconds` bounds each wait for a callback."""

    svc: Service
    api_key: str
    wait_seconds: float = SMOKE_WAIT_SECONDS

    def post(self, path: str, body: dict) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": new_key()}
        url = self.svc.public_base_url.rstrip("/") + path
        return requests.post(url, json=body, headers=headers, timeout=60)


def new_key() -> str:
    return f"golive-{uuid.uuid4()}"


def run_smoke(svc: Service, wait_seconds: float = SMOKE_WAIT_SECONDS) -> list[Finding]:
    if svc.settings.environment == "production":
        return [
            Finding(
                "smoke",
                WARN,
                "not run in production: it would move real money to a test number that does "
                "not exist there; run it in sandbox before switching",
            )
        ]
    initiators = [key for key in svc.keys if "initiate" in key.roles]
    if not initiators:
        return [Finding("smoke", FAIL, "API_KEYS has no key with the initiate role to use")]
    target = SmokeTarget(svc, initiators[0].secret, wait_seconds)
    findings: list[Finding] = []
    state: dict = {}
    for step, run in SMOKE_STEPS:
        failed = [f.check for f in findings if f.result == FAIL]
        if failed:  # each step needs the ones before it (and the same public URL) to work
            findings.append(Finding(step, FAIL, f"not run: {failed[0]} failed"))
        else:
            findings.append(run(target, state))
    return findings


class ServiceUnreachable(Exception):
    """The running service could not be called at PUBLIC_BASE_URL."""


def call_service(target: SmokeTarget, path: str, body: dict) -> dict:
    """The running service's JSON answer; ServiceUnreachable names what went wrong."""
    url = target.svc.public_base_url.rstrip("/") + path
    try:
        response = target.post(path, body)
    except requests.RequestException as error:
        raise ServiceUnreachable(
            f"cannot reach the service at {url} ({type(error).__name__}): is it running there, "
            "and is PUBLIC_BASE_URL its public address?"
        ) from None
    if response.status_code not in (200, 201, 202):
        raise ServiceUnreachable(f"{url} answered {response.status_code}: {response.text[:200]}")
    return response.json()


def wait_for(probe: Callable[[], object], seconds: float):
    """`probe()` once it returns something truthy, or None after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.25)


def first_row(svc: Service, query: sa.Select):
    with svc.engine.connect() as conn:
        return conn.execute(query).first()


def not_recorded(step: str, target: SmokeTarget, url: str) -> Finding:
    return Finding(
        step,
        FAIL,
        f"accepted by Daraja, but no callback recorded within {target.wait_seconds:.0f} s: "
        f"is the service running and reachable at {url}?",
    )


def smoke_stk(target: SmokeTarget, state: dict) -> Finding:
    """An STK push to the test number through the running service; its callback waited for."""
    step = "smoke: STK push"
    body = {
        "phone": TEST_MSISDN,
        "amount": SMOKE_STK_AMOUNT,
        "account_reference": "GOLIVE",
        "description": "Go-live check",
    }
    try:
        checkout = call_service(target, "/payments/mpesa/stk-initiate", body)["checkout_request_id"]
    except ServiceUnreachable as error:
        return Finding(step, FAIL, str(error))
    callbacks = stk_callbacks.c
    row = wait_for(
        lambda: first_row(
            target.svc, sa.select(stk_callbacks).where(callbacks.checkout_request_id == checkout)
        ),
        target.wait_seconds,
    )
    if row is None:
        return not_recorded(step, target, redacted_hook(target.svc, "stk"))
    return Finding(
        step, OK, f"{checkout}: callback recorded, ResultCode {row.result_code} {row.result_desc}"
    )


def smoke_b2c(target: SmokeTarget, state: dict) -> Finding:
    """A B2C payout to the test number through the running service; its result waited for."""
    step = "smoke: B2C payout"
    body = {
        "user_id": "golive-check",
        "phone": TEST_MSISDN,
        "amount": SMOKE_B2C_AMOUNT,
        "reason": "golive_check",
        "description": "Go-live check",
    }
    try:
        reference_id = call_service(target, "/payouts", body)["reference_id"]
    except ServiceUnreachable as error:
        return Finding(step, FAIL, str(error))
    state["reference_id"] = reference_id
    callbacks = b2c_payment_callbacks.c
    row = wait_for(
        lambda: first_row(
            target.svc,
            sa.select(b2c_payment_callbacks).where(
                callbacks.reference_id == reference_id, callbacks.kind == "result"
            ),
        ),
        target.wait_seconds,
    )
    if row is None:
        svc = target.svc
        return not_recorded(step, target, redacted(svc.b2c_result_url, svc.policy.token))
    return Finding(
        step,
        OK,
        f"{reference_id}: result recorded, ResultCode {row.result_code} {row.result_description}",
    )


def smoke_status(target: SmokeTarget, state: dict) -> Finding:
    """A Transaction Status query about the smoke payout, sent and recorded as the resolve job
    does it, its answer waited for until the running service has recorded it."""
    step = "smoke: Transaction Status"
    svc = target.svc
    payouts = b2c_payments.c
    payout = first_row(
        svc, sa.select(b2c_payments).where(payouts.reference_id == state["reference_id"])
    )
    query_step = _claim_query_step(svc, payout)
    ask_status(svc, payout, query_step)
    queries = status_queries.c
    mine = sa.select(status_queries).where(
        queries.payout_id == payout.id, queries.step == query_step
    )
    sent = first_row(svc, mine)
    if sent.status == "error":
        return Finding(
            step, FAIL, f"Daraja refused the query: {sent.result_code} {sent.result_desc}"
        )
    answered = wait_for(
        lambda: first_row(svc, mine.where(queries.status == "answered")), target.wait_seconds
    )
    if answered is None:
        return not_recorded(step, target, redacted_hook(svc, "status", "result"))
    return Finding(
        step, OK, f"answer recorded, ResultCode {answered.result_code} {answered.result_desc}"
    )


def _claim_query_step(svc: Service, payout) -> int:
    """The payout's next query step, claimed by compare-and-set as the resolve job claims its
    steps (the running service may be claiming one too), so no other query reuses it."""
    payouts = b2c_payments.c
    for _ in range(10):
        with svc.engine.begin() as conn:
            step = conn.execute(
                sa.select(payouts.check_count).where(payouts.id == payout.id)
            ).scalar_one()
            claimed = conn.execute(
                b2c_payments.update()
                .where(payouts.id == payout.id, payouts.check_count == step)
                .values(check_count=step + 1)
            ).rowcount
        if claimed:
            return step
    raise RuntimeError(f"payout {payout.reference_id}: no query step could be claimed")


def smoke_balance(target: SmokeTarget, state: dict) -> Finding:
    """An Account Balance query sent as the balance job sends it; its result waited for."""
    step = "smoke: Account Balance"
    svc = target.svc
    try:
        answer = svc.client.account_balance(
            result_url=svc.hook_url("balance", "result"),
            queue_timeout_url=svc.hook_url("balance", "timeout"),
        )
    except DarajaError as error:
        return Finding(step, FAIL, f"Daraja refused the query: {error}")
    callbacks = b2c_payment_callbacks.c
    ids = [
        value
        for value in (answer.get("ConversationID"), answer.get("OriginatorConversationID"))
        if value
    ]
    row = wait_for(
        lambda: first_row(
            svc,
            sa.select(b2c_payment_callbacks).where(
                callbacks.kind == "balance",
                sa.or_(
                    callbacks.conversation_id.in_(ids),
                    callbacks.originator_conversation_id.in_(ids),
                ),
            ),
        ),
        target.wait_seconds,
    )
    if row is None:
        return not_recorded(step, target, redacted_hook(svc, "balance", "result"))
    return Finding(
        step, OK, f"result recorded, ResultCode {row.result_code} {row.result_description}"
    )


SMOKE_STEPS = (
    ("smoke: STK push", smoke_stk),
    ("smoke: B2C payout", smoke_b2c),
    ("smoke: Transaction Status", smoke_status),
    ("smoke: Account Balance", smoke_balance),
)


def redacted_hook(svc: Service, *parts: str) -> str:
    return redacted(svc.hook_url(*parts), svc.policy.token)
