"""The deployment kit in deploy/, checked with the tools that will run it: systemd's verifier
and security review on the unit, `nginx -t` on the site, logrotate's dry run on the journal's
rotation, the grants file applied to real MariaDB users that migrate and then run the service,
and a backup restored into another database. Paths that only exist on a server (/opt/..., the
certificate, the journal) are replaced by real temporary ones in a copy; the kit is not weakened."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mpesa_service.callback_auth import SAFARICOM_CALLBACK_IPS
from mpesa_service.entrypoint import WAITRESS_OPTIONS
from mpesa_service.routes import CALLBACK_PATHS
from mpesa_service.settings import SETTINGS
from tests.http_support import serving
from tests.mariadb_support import fresh_mariadb_database, mariadb_server_url
from tests.service_support import wait_until
from tests.sim_support import self_signed_certificate
from tests.test_entrypoint import free_port, run_service, serve_until_healthy, stop_and_read_log

# One worker builds the module's deployment (a database, two users, a served payout) once.
pytestmark = pytest.mark.xdist_group("test_deploy")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "mpesa-service.service"
SITE = DEPLOY / "nginx-mpesa-service.conf"
LOGROTATE = DEPLOY / "logrotate-mpesa-service"
GRANTS = DEPLOY / "mysql-grants.sql"


def needs(command: str, package: str):
    """Skip, saying so, where a tool the kit runs is missing (.ci/run installs them all, and
    fails on any skip)."""
    return pytest.mark.skipif(
        not shutil.which(command),
        reason=f"needs {command} (Debian's {package}; .ci/run installs it)",
    )


needs_systemd = needs("systemd-analyze", "systemd")
needs_nginx = needs("nginx", "nginx")
needs_logrotate = needs("logrotate", "logrotate")
needs_mysql_client = needs("mysqldump", "mariadb-client")


def without_comments(text: str) -> str:
    """The lines of a config or SQL file that are not # or -- comments."""
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not line.lstrip().startswith(("#", "--")))


def setting_default(name: str) -> str:
    (default,) = [setting.default for setting in SETTINGS if setting.name == name]
    return default


# --- systemd --------------------------------------------------------------------------------


def unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with the server's /opt paths pointed at this checkout and this Python, which
    `systemd-analyze verify` needs to exist."""
    text = (UNIT.read_text() if text is None else text).replace(
        "/opt/mpesa-service/.venv/bin/python", sys.executable
    )
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/opt/mpesa-service", str(ROOT)))
    return copy


def systemd_analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=30, check=False
    )


@needs_systemd
def test_systemd_unit_verifies_without_a_warning(tmp_path):
    result = systemd_analyze("verify", "--man=no", str(unit_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # unknown keys and bad values are only warnings, exit 0


@needs_systemd
def test_systemd_verify_reports_a_misspelt_key(tmp_path):
    """The check above is not vacuous: the verifier does read the unit's keys."""
    misspelt = UNIT.read_text().replace("ProtectSystem=", "ProtectSytem=")
    result = systemd_analyze("verify", "--man=no", str(unit_copy(tmp_path, misspelt)))
    assert "Unknown key 'ProtectSytem'" in result.stderr


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_runs_the_service_as_its_own_user_restarting_on_failure():
    settings = unit_settings(UNIT.read_text())
    assert settings["User"] == ["mpesa"] and settings["Group"] == ["mpesa"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["EnvironmentFile"] == ["/etc/mpesa-service/env"]
    (command,) = settings["ExecStart"]
    assert command.split()[1:] == ["/opt/mpesa-service/service.py"]  # serve; never migrate


@needs_systemd
def test_systemd_unit_is_hardened(tmp_path):
    result = systemd_analyze("security", "--offline=yes", str(unit_copy(tmp_path)))
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    assert float(exposure.group(1)) <= 2.0, result.stdout  # 10 is a unit with no hardening


# --- nginx ----------------------------------------------------------------------------------


def certificate_files(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for payments.example.com and the loopback address, and its key."""
    key, certificate = self_signed_certificate(
        "payments.example.com",
        days=1,
        alternative_names=(
            x509.DNSName("payments.example.com"),
            x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
        ),
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


LOOPBACK = "127.0.0.1"


def nginx_test_config(tmp_path: Path, site: str | None = None) -> Path:
    """A main nginx.conf including a copy of the site (or of `site`) whose certificate and log
    paths are real temporary files."""
    cert, key = certificate_files(tmp_path)
    site = (
        (SITE.read_text() if site is None else site)
        .replace("/etc/letsencrypt/live/payments.example.com/fullchain.pem", str(cert))
        .replace("/etc/letsencrypt/live/payments.example.com/privkey.pem", str(key))
        .replace("/var/log/nginx", str(tmp_path))
    )
    (tmp_path / "site.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log {tmp_path}/access.log;\n    include {tmp_path}/site.conf;\n}}\n"
    )
    return main


@needs_nginx
def test_nginx_accepts_the_site(tmp_path):
    result = subprocess.run(
        nginx_command(nginx_test_config(tmp_path), "-t"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def nginx_command(main: Path, *args: str) -> list[str]:
    directory = main.parent
    return ["nginx", "-c", str(main), "-p", str(directory), "-e", str(directory / "error.log")] + [
        *args
    ]


class Recorder:
    """A WSGI app standing in for the service: answers 200 and keeps each request's path and
    the headers nginx added."""

    def __init__(self):
        self.requests = []

    def __call__(self, environ, start_response):
        environ["wsgi.input"].read()
        forwarded = {name: environ.get(f"HTTP_{name}") for name in ("X_FORWARDED_FOR", "HOST")}
        forwarded["X_FORWARDED_PROTO"] = environ.get("HTTP_X_FORWARDED_PROTO")
        self.requests.append((environ["PATH_INFO"], forwarded))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]


@contextlib.contextmanager
def nginx_serving(tmp_path: Path, upstream: str):
    """nginx running the site in front of `upstream` (host:port), its HTTPS on a free loopback
    port (IPv6 and port 80 left out): yields the HTTPS base URL."""
    port = free_port()
    site = (
        SITE.read_text()
        .replace("server 127.0.0.1:8000;", f"server {upstream};")
        .replace("listen 443 ssl http2;", f"listen {LOOPBACK}:{port} ssl http2;")
        .replace("listen 80;", f"listen {LOOPBACK}:{free_port()};")
    )
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
    main = nginx_test_config(tmp_path, site)
    process = subprocess.Popen(
        nginx_command(main, "-g", "daemon off; master_process off;"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, process.communicate()[0]
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 1):
                break
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield f"https://{LOOPBACK}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@needs_nginx
def test_nginx_refuses_callbacks_from_elsewhere_and_forwards_the_rest(tmp_path):
    recorder = Recorder()
    cap = int(setting_default("CALLBACK_MAX_BYTES"))
    with serving(recorder) as upstream, nginx_serving(tmp_path, upstream.split("//")[1]) as url:
        certificate = str(tmp_path / "fullchain.pem")
        secret = "the-callback-token"
        for path in (f"/hooks/b2c/result/{secret}", "/clientpaymentcallback.php"):
            refused = requests.post(url + path, json={}, verify=certificate, timeout=10)
            assert refused.status_code == 403, path  # 127.0.0.1 is not Safaricom
        healthz = requests.get(url + "/healthz", verify=certificate, timeout=10)
        at_cap = requests.post(url + "/payouts", data=b"x" * cap, verify=certificate, timeout=10)
        over = requests.post(
            url + "/payouts", data=b"x" * (cap + 1), verify=certificate, timeout=10
        )
    assert (healthz.status_code, at_cap.status_code, over.status_code) == (200, 200, 413)
    forwarded = {"X_FORWARDED_FOR": LOOPBACK, "HOST": "127.0.0.1", "X_FORWARDED_PROTO": "https"}
    assert recorder.requests == [("/healthz", forwarded), ("/payouts", forwarded)]
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert "POST" in (tmp_path / "payments-callbacks.log").read_text()
    assert secret not in logs  # the callback token never reaches nginx's logs


def test_nginx_body_cap_is_the_default_callback_max_bytes_and_bulk_files_the_default_bulk_max():
    caps = re.findall(r"^\s*client_max_body_size\s+(\S+);", SITE.read_text(), re.MULTILINE)
    bulk = setting_default("BULK_MAX_BYTES")
    assert caps == [setting_default("CALLBACK_MAX_BYTES"), bulk, bulk]
    assert int(bulk) < WAITRESS_OPTIONS["max_request_body_size"]


def callback_location() -> tuple[str, str]:
    """The site's callback location: (its regular expression, its body)."""
    (match,) = re.findall(r"^\s*location ~ (\S+) \{\n(.*?)^\s*\}", SITE.read_text(), re.M | re.S)
    return match


def test_nginx_callback_location_covers_every_callback_path():
    pattern, _ = callback_location()
    paths = [f"{path}/token" for path in CALLBACK_PATHS.values()]
    paths += ["/hooks/stk/token/payment-id", "/clientpaymentcallback.php"]
    assert [path for path in paths if not re.search(pattern, path)] == []
    assert not re.search(pattern, "/payouts")


def test_nginx_allows_callbacks_from_the_addresses_the_service_allows_and_no_others():
    """The service's SAFARICOM_CALLBACK_IPS is the project's copy of REFERENCE 9.1's list."""
    _, body = callback_location()
    allowed = re.findall(r"^\s*allow\s+(\S+);", body, re.MULTILINE)
    assert sorted(allowed) == sorted(SAFARICOM_CALLBACK_IPS)
    denies = re.findall(r"^\s*deny\s+(\S+);", body, re.MULTILINE)
    assert denies == ["all"]
    # nginx takes the first matching rule: nothing may follow `deny all`.
    rules = re.findall(r"^\s*(allow|deny)\s", body, re.MULTILINE)
    assert rules[-1] == "deny"


# --- logrotate ------------------------------------------------------------------------------


@needs_logrotate
def test_logrotate_rotates_the_journal_by_create(tmp_path):
    journal = tmp_path / "journal" / "b2c_callbacks.log"
    journal.parent.mkdir()
    journal.write_text('{"id": "one entry"}\n')
    text = LOGROTATE.read_text()
    directives = without_comments(text)
    assert re.search(r"^\s*create\s", directives, re.MULTILINE)
    assert "copytruncate" not in directives
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout
    config = tmp_path / "logrotate.conf"
    config.write_text(
        text.replace("/var/lib/mpesa-service/journal/b2c_callbacks.log", str(journal)).replace(
            "mpesa mpesa", f"{user.strip()} {group.strip()}"
        )
    )
    # -d: parse and say what would be done, touching nothing; -f: as if the rotation were due.
    result = subprocess.run(
        ["logrotate", "-d", "-f", "-s", str(tmp_path / "state"), str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower()  # an unknown option is an error line, exit 0
    assert "(52 rotations)" in output  # a year of weekly files kept for replaying
    assert f"renaming {journal} to {journal}-" in output
    assert f"creating new {journal} mode = 0640" in output
    assert journal.read_text() == '{"id": "one entry"}\n'


# --- MySQL grants, migrate and serve ----------------------------------------------------------


@dataclass(frozen=True)
class DatabaseUsers:
    """The two users deploy/mysql-grants.sql made on one database: SQLAlchemy URLs."""

    database: str
    migrate_url: str
    runtime_url: str
    names: tuple[str, str]
    host: str


def mysql_client(server: sa.URL, sql: str) -> subprocess.CompletedProcess:
    """`sql` run by the administrator in the mysql client, as an operator runs the grants file;
    the password (if any) in the environment, not on the command line."""
    return subprocess.run(
        ["mysql", "--batch", "--skip-column-names", "-h", server.host or "127.0.0.1"]
        + ["-P", str(server.port or 3306), "-u", server.username or "root"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "MYSQL_PWD": server.password or ""},
        check=False,
    )


def mysql_admin(server: sa.URL, sql: str) -> str:
    result = mysql_client(server, sql)
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_mysql_client
def test_the_grants_file_with_its_placeholders_left_in_creates_nothing():
    server = mariadb_server_url()
    result = mysql_client(server, GRANTS.read_text())
    assert result.returncode == 1
    assert "near '{{database}}" in result.stderr  # the first statement
    made = "SELECT COUNT(*) FROM mysql.user WHERE user LIKE '{{%'"
    assert mysql_admin(server, made).strip() == "0"


def create_users(database_url: str) -> DatabaseUsers:
    """The grants file, placeholders replaced, applied to the scratch database: its migrating
    and runtime users, named uniquely, for the host the server sees this machine as."""
    url = sa.make_url(database_url)
    host = mysql_admin(url, "SELECT SUBSTRING_INDEX(USER(), '@', -1)").strip()
    suffix = uuid.uuid4().hex[:8]
    names = (f"mig_{suffix}", f"run_{suffix}")
    passwords = (uuid.uuid4().hex, uuid.uuid4().hex)
    values = {
        "database": url.database,
        "app_host": host,
        "migrate_user": names[0],
        "migrate_password": passwords[0],
        "runtime_user": names[1],
        "runtime_password": passwords[1],
    }
    sql = without_comments(GRANTS.read_text())
    for name, value in values.items():
        sql = sql.replace("{{" + name + "}}", value)
    assert "{{" not in sql
    mysql_admin(url, sql)
    return DatabaseUsers(
        database=url.database,
        migrate_url=url.set(username=names[0], password=passwords[0]).render_as_string(False),
        runtime_url=url.set(username=names[1], password=passwords[1]).render_as_string(False),
        names=names,
        host=host,
    )


def drop_users(database_url: str, users: DatabaseUsers) -> None:
    drops = "".join(f"DROP USER IF EXISTS '{name}'@'{users.host}';\n" for name in users.names)
    mysql_admin(sa.make_url(database_url), drops)


@dataclass(frozen=True)
class Deployment:
    users: DatabaseUsers
    payout: dict  # the payout as GET /payouts/<reference_id> answered once it completed
    journal: Path
    runtime_settings: dict[str, str]  # the environment the service ran with


API_KEY = "deploy-test-key-" + "x" * 24


def pay_once(base_url: str) -> dict:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    created = requests.post(
        f"{base_url}/payouts",
        json={"user_id": "trainer-1", "phone": "0712345678", "amount": 250, "reason": "deploy"},
        headers={**headers, "Idempotency-Key": "deploy-1"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    reference = created.json()["reference_id"]

    def completed():
        payout = requests.get(f"{base_url}/payouts/{reference}", headers=headers, timeout=10)
        return payout.json() if payout.json().get("status") == "completed" else None

    return wait_until(completed, timeout=20)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A scratch MariaDB database with the grants file's users, migrated by the migrating user,
    then served by `python service.py` as the runtime user (the simulator environment) while
    one payout was made over HTTP and completed."""
    tmp_path = tmp_path_factory.mktemp("deployment")
    for database_url in fresh_mariadb_database():
        users = create_users(database_url)
        try:
            journal = tmp_path / "journal" / "b2c_callbacks.log"
            environ = {
                "MPESA_ENVIRONMENT": "simulator",
                "MPESA_BASE_URL": "",
                "PORT": str(free_port()),
                "CALLBACK_JOURNAL_PATH": str(journal),
                "REPORTS_DIR": str(tmp_path / "reports"),
                "API_KEYS": f"deploy:initiate+read:{API_KEY}",
                "CALLBACK_TOKEN": "deploy-test-callback-token",
                "CONSOLE_SECRET": "deploy-test-console-secret",
            }
            migrated = run_service(
                "migrate", environ={**environ, "DATABASE_URL": users.migrate_url}
            )
            assert migrated.returncode == 0, migrated.stderr
            runtime_settings = {**environ, "DATABASE_URL": users.runtime_url}
            process, base_url = serve_until_healthy(runtime_settings)
            try:
                payout = pay_once(base_url)
            finally:
                log = stop_and_read_log(process)
            assert "Traceback" not in log, log
            yield Deployment(users, payout, journal, runtime_settings)
        finally:
            drop_users(database_url, users)


@needs_mysql_client
def test_a_payout_completes_with_the_runtime_users_grants(deployment):
    assert deployment.payout["status"] == "completed"
    assert deployment.payout["amount"] == 250


@needs_mysql_client
def test_the_runtime_user_has_only_row_privileges(deployment):
    engine = sa.create_engine(deployment.users.runtime_url)
    try:
        with engine.connect() as connection:
            grants = list(connection.exec_driver_sql("SHOW GRANTS").scalars())
    finally:
        engine.dispose()
    on_database = [grant for grant in grants if f"`{deployment.users.database}`" in grant]
    assert len(on_database) == 1, grants
    privileges = re.match(r"GRANT (.*) ON ", on_database[0]).group(1)
    assert set(privileges.split(", ")) == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert [grant for grant in grants if grant.startswith("GRANT USAGE")] == grants[:1]


@needs_mysql_client
def test_the_runtime_user_cannot_create_a_table(deployment):
    engine = sa.create_engine(deployment.users.runtime_url)
    denied = pytest.raises(sa.exc.OperationalError, match="CREATE command denied")
    try:
        with denied, engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE intruder (id INT)")
    finally:
        engine.dispose()


@needs_mysql_client
def test_the_go_live_check_passes_with_the_runtime_users_grants(deployment):
    result = run_service("check", environ=deployment.runtime_settings)
    assert result.returncode == 0, result.stdout + result.stderr
    (database,) = [line for line in result.stdout.splitlines() if line.startswith("database ")]
    assert database.split()[1] == "ok"
    assert "schema at head" in database


# --- backup and restore ---------------------------------------------------------------------


def client_options_file(directory: Path, database_url: str) -> Path:
    """A mysql client options file for the URL's user, readable by its owner only."""
    url = sa.make_url(database_url)
    path = directory / f"{url.username}.cnf"
    path.write_text(
        f"[client]\nuser={url.username}\npassword={url.password}\n"
        f"host={url.host}\nport={url.port or 3306}\n"
    )
    path.chmod(0o600)
    return path


def run_script(name: str, *args: str, environ: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(DEPLOY / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **environ},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def payout_rows(database_url: str) -> list[dict]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT * FROM b2c_payments ORDER BY id")
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


@needs_mysql_client
def test_a_backup_restores_the_payout_and_the_journal(deployment, tmp_path):
    source = deployment.users
    backup = run_script(
        "backup.sh",
        source.database,
        environ={
            "MYSQL_DEFAULTS_FILE": str(client_options_file(tmp_path, source.migrate_url)),
            "JOURNAL_PATH": str(deployment.journal),
            "BACKUP_ROOT": str(tmp_path / "backups"),
        },
    )
    (directory,) = (tmp_path / "backups").iterdir()
    assert backup.stdout.strip() == str(directory)
    assert re.fullmatch(r"\d{8}T\d{6}Z", directory.name)
    for database_url in fresh_mariadb_database():
        target = create_users(database_url)
        try:
            restored_journal = tmp_path / "restored" / deployment.journal.name
            restore = run_script(
                "restore.sh",
                str(directory),
                target.database,
                environ={
                    "MYSQL_DEFAULTS_FILE": str(client_options_file(tmp_path, target.migrate_url)),
                    "JOURNAL_PATH": str(restored_journal),
                },
            )
            rows = payout_rows(target.runtime_url)
        finally:
            drop_users(database_url, target)
    assert rows == payout_rows(source.runtime_url)
    assert [row["reference_id"] for row in rows] == [deployment.payout["reference_id"]]
    assert restored_journal.read_bytes() == deployment.journal.read_bytes()
    for user in (source, target):  # the passwords never in what the scripts print
        for url in (user.migrate_url, user.runtime_url):
            password = sa.make_url(url).password
            assert password not in backup.stdout + backup.stderr + restore.stdout + restore.stderr


@needs_mysql_client
def test_restore_refuses_a_database_that_has_tables(deployment, tmp_path):
    source = deployment.users
    options = str(client_options_file(tmp_path, source.migrate_url))
    run_script(
        "backup.sh",
        source.database,
        environ={
            "MYSQL_DEFAULTS_FILE": options,
            "JOURNAL_PATH": str(deployment.journal),
            "BACKUP_ROOT": str(tmp_path / "backups"),
        },
    )
    (directory,) = (tmp_path / "backups").iterdir()
    result = subprocess.run(
        ["bash", str(DEPLOY / "restore.sh"), str(directory), source.database],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MYSQL_DEFAULTS_FILE": options},
        check=False,
    )
    assert result.returncode == 1
    assert "restore into an empty one" in result.stderr
    assert payout_rows(source.runtime_url)  # untouched


@needs_nginx
def test_nginx_lets_a_bulk_payout_file_up_to_bulk_max_bytes_through(tmp_path):
    recorder = Recorder()
    bulk = int(setting_default("BULK_MAX_BYTES"))
    with serving(recorder) as upstream, nginx_serving(tmp_path, upstream.split("//")[1]) as url:
        certificate = str(tmp_path / "fullchain.pem")
        answers = [
            requests.post(url + path, data=b"x" * size, verify=certificate, timeout=10).status_code
            for path in ("/payouts/batches", "/console/batches/upload")
            for size in (bulk, bulk + 1)
        ]
    assert answers == [200, 413, 200, 413]
