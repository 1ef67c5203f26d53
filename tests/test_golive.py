"""`python service.py check [--smoke]`, the go-live check: against a real simulator over HTTP, on
real SQLite and MariaDB, once as a subprocess."""

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import simulator
from mpesa_service import golive
from mpesa_service.callback_auth import REJECTED_URL_WORDS, url_token
from mpesa_service.daraja import security_credential
from mpesa_service.entrypoint import build_for_check
from mpesa_service.settings import load_settings
from mpesa_service.storage import alembic_config, head_revision, make_engine
from tests.service_support import API_KEY, TOKEN
from tests.sim_support import self_signed_certificate

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Rehearsal#2024"


@pytest.fixture
def sim():
    running = simulator.start()
    yield running
    running.stop()


@pytest.fixture
def sandbox(database_url, tmp_path, sim):
    """Correct sandbox settings pointing at the simulator (a rehearsal)."""
    config = simulator.SimulatorConfig()
    return {
        "MPESA_ENVIRONMENT": "sandbox",
        "MPESA_BASE_URL": sim.base_url,
        "MPESA_CONSUMER_KEY": config.consumer_key,
        "MPESA_CONSUMER_SECRET": config.consumer_secret,
        "MPESA_SHORTCODE": config.shortcode,
        "MPESA_PASSKEY": config.passkey,
        "MPESA_INITIATOR_NAME": "testapi",
        "MPESA_INITIATOR_PASSWORD": PASSWORD,
        "MPESA_CERT_PATH": str(simulator.TEST_CERTIFICATE),
        "PUBLIC_BASE_URL": "https://payments.example.com",
        "CALLBACK_TOKEN": "golive-token-abc",
        "API_KEYS": API_KEY,
        "DATABASE_URL": database_url,
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "journal" / "callbacks.log"),
    }


def report(environ, tmp_path, smoke=False):
    return golive.go_live_report(
        build_for_check, smoke=smoke, environ=environ, env_file=tmp_path / "no.env"
    )


def findings(result, outcome):
    return {f.check: f.detail for f in result.findings if f.result == outcome}


def certificate_of_someone_else(path: Path) -> Path:
    """A certificate nobody but this test has the key of, written as PEM to `path`."""
    from cryptography.hazmat.primitives import serialization

    _, certificate = self_signed_certificate("someone else")
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_check_passes_in_sandbox_against_the_simulator(sandbox):
    completed = subprocess.run(
        [sys.executable, "service.py", "check"],
        cwd=ROOT,
        env={**os.environ, **sandbox},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "go-live check passed: 0 failed" in completed.stdout
    assert "oauth token              ok" in completed.stdout
    assert "<CALLBACK_TOKEN>" in completed.stdout
    assert sandbox["CALLBACK_TOKEN"] not in completed.stdout


def test_the_rehearsal_against_a_simulator_is_a_warning(sandbox, tmp_path):
    result = report(sandbox, tmp_path)
    assert not result.failed
    assert "not Safaricom's host" in findings(result, golive.WARN)["daraja base URL"]


def test_a_credential_with_another_password_fails(sandbox, tmp_path):
    credential = security_credential("the-real-password", simulator.TEST_CERTIFICATE)
    sandbox |= {"MPESA_SECURITY_CREDENTIAL": credential, "MPESA_INITIATOR_PASSWORD": "wrong"}
    result = report(sandbox, tmp_path)
    assert result.failed
    detail = findings(result, golive.FAIL)["security credential"]
    assert "does not carry MPESA_INITIATOR_PASSWORD" in detail


def test_a_credential_made_with_another_certificate_fails(sandbox, tmp_path):
    sandbox["MPESA_CERT_PATH"] = str(certificate_of_someone_else(tmp_path / "other.pem"))
    result = report(sandbox, tmp_path)
    detail = findings(result, golive.FAIL)["security credential"]
    assert "simulator_keys/simulator-test-only.cert.pem" in detail


def test_a_localhost_callback_url_fails_in_sandbox(sandbox, tmp_path):
    sandbox["PUBLIC_BASE_URL"] = "http://localhost:8000"
    failed = findings(report(sandbox, tmp_path), golive.FAIL)
    assert "host localhost is not public" in failed["STK CallBackURL"]
    assert "set PUBLIC_BASE_URL" in failed["B2C ResultURL"]


def test_a_private_address_is_not_public_but_a_name_is_taken_as_one():
    assert not golive.is_public_host("10.0.0.5")
    assert not golive.is_public_host("169.254.1.1")
    assert not golive.is_public_host("printer.local")
    assert golive.is_public_host("196.201.214.200")
    assert golive.is_public_host("payments.example.com")


def test_localhost_is_fine_in_the_simulator_environment():
    assert golive.url_problems("http://127.0.0.1:8000/hooks/stk/t0k", "t0k", "simulator") == []


@pytest.mark.parametrize("word", ["mpesa", "Safaricom", "query"])
def test_a_callback_url_with_a_word_daraja_rejects_fails(sandbox, tmp_path, word):
    sandbox["PUBLIC_BASE_URL"] = f"https://{word}.example.com"
    failed = findings(report(sandbox, tmp_path), golive.FAIL)
    assert f"contains '{word.lower()}', which Daraja rejects" in failed["B2C ResultURL"]


def test_a_result_url_on_another_host_fails(sandbox, tmp_path):
    sandbox["MPESA_RESULT_URL"] = "https://old.example.com/clientpaymentcallback.php?token=x"
    failed = findings(report(sandbox, tmp_path), golive.FAIL)
    assert "PUBLIC_BASE_URL at https://payments.example.com" in failed["MPESA_RESULT_URL"]
    assert "does not carry CALLBACK_TOKEN" in failed["B2C ResultURL"]


def test_a_missing_variable_is_named(sandbox, tmp_path):
    del sandbox["MPESA_PASSKEY"]
    result = report(sandbox, tmp_path)
    assert result.failed
    assert "missing for sandbox: MPESA_PASSKEY" in findings(result, golive.FAIL)["settings"]


def test_a_malformed_reconciliation_tariff_fails_naming_its_line(sandbox, tmp_path):
    tariff = tmp_path / "tariff.csv"
    tariff.write_text(
        "effective_from,amount_from,amount_to,registered,unregistered,withdrawal_charges_paid,"
        "source\n,1,100,0,unknown,unknown,x\n,101,500,5.001,unknown,unknown,x\n"
    )
    sandbox["RECON_TARIFF"] = str(tariff)

    result = report(sandbox, tmp_path)

    assert result.failed
    assert findings(result, golive.FAIL)["RECON_TARIFF"] == (
        f"tariff {tariff} line 3: registered must be shillings with at most two decimals, not "
        "'5.001': fix the file or name another"
    )


def test_the_shipped_reconciliation_tariff_passes(sandbox, tmp_path):
    detail = findings(report(sandbox, tmp_path), golive.OK)["RECON_TARIFF"]

    assert "recon/tariffs/b2c.csv: 1 tariff(s), the latest from date unknown;" in detail


def test_a_database_behind_head_names_both_revisions(sandbox, tmp_path):
    from alembic import command

    engine = make_engine(sandbox["DATABASE_URL"])
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0006")
    engine.dispose()
    detail = findings(report(sandbox, tmp_path), golive.FAIL)["database"]
    assert f"schema at 0006, head is {head_revision()}" in detail
    assert "python service.py migrate" in detail


def test_the_test_certificate_is_refused_for_safaricom(sandbox, tmp_path):
    settings = load_settings(sandbox, env_file=tmp_path / "no.env")
    finding = golive.check_certificate(settings, "https://sandbox.safaricom.co.ke")
    assert finding.result == golive.FAIL
    assert "simulator's test certificate" in finding.detail


def test_an_expired_certificate_fails_and_one_near_expiry_warns(sandbox, tmp_path):
    settings = load_settings(sandbox, env_file=tmp_path / "no.env")
    certificate = golive.load_certificate(sandbox["MPESA_CERT_PATH"])
    expires = certificate.not_valid_after_utc
    later = golive.check_certificate(settings, "", now=expires + datetime.timedelta(days=1))
    soon = golive.check_certificate(settings, "", now=expires - datetime.timedelta(days=10))
    assert (later.result, soon.result) == (golive.FAIL, golive.WARN)
    assert "expired" in later.detail and "expires in 10 days" in soon.detail


def test_a_clock_two_minutes_off_fails():
    daraja = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
    finding = golive.check_clock(daraja, now=daraja + datetime.timedelta(minutes=2))
    assert finding.result == golive.FAIL
    assert "120 s ahead of" in finding.detail


def test_smoke_runs_every_step_through_the_running_service(make_stack, database_url, tmp_path):
    stack = make_stack()
    environ = {
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": stack.svc.client.base_url,
        "PUBLIC_BASE_URL": stack.base_url,
        "CALLBACK_TOKEN": TOKEN,
        "API_KEYS": API_KEY,
        "DATABASE_URL": database_url,
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "check" / "callbacks.log"),
    }
    result = report(environ, tmp_path, smoke=True)
    smoke = {f.check: f for f in result.findings if f.check.startswith("smoke")}
    assert list(smoke) == [
        "smoke: STK push",
        "smoke: B2C payout",
        "smoke: Transaction Status",
        "smoke: Account Balance",
    ]
    assert all(f.result == golive.OK for f in smoke.values()), result.render()
    assert "ResultCode 0" in smoke["smoke: B2C payout"].detail
    with stack.svc.engine.connect() as conn:
        balances = conn.execute(sa.text("SELECT COUNT(*) FROM account_balances")).scalar()
    assert balances > 0


def test_smoke_without_a_running_service_says_so_and_stops(database_url, sim, tmp_path):
    from tests.conftest import free_port

    environ = {
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": sim.base_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "CALLBACK_TOKEN": TOKEN,
        "API_KEYS": API_KEY,
        "DATABASE_URL": database_url,
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "check" / "callbacks.log"),
    }
    result = report(environ, tmp_path, smoke=True)
    failed = findings(result, golive.FAIL)
    assert "cannot reach the service at http://127.0.0.1:" in failed["smoke: STK push"]
    assert failed["smoke: Account Balance"] == "not run: smoke: STK push failed"


def test_a_made_up_callback_token_never_holds_a_word_daraja_rejects():
    # About one random url-safe token in a hundred holds "exe", "cmd" or "sql".
    tokens = [url_token() for _ in range(3000)]
    held = [t for t in tokens if any(word in t.lower() for word in REJECTED_URL_WORDS)]
    assert held == []
    assert len(set(tokens)) == len(tokens)


@pytest.mark.parametrize(
    ("allowed", "proxies", "expected"),
    [
        ("", "", {"CALLBACK_ALLOWED_IPS": golive.OK, "TRUSTED_PROXIES": golive.OK}),
        ("*", "10.0.0.0/8", {"CALLBACK_ALLOWED_IPS": golive.FAIL, "TRUSTED_PROXIES": golive.OK}),
        ("", "0.0.0.0/0", {"CALLBACK_ALLOWED_IPS": golive.OK, "TRUSTED_PROXIES": golive.FAIL}),
        ("", "8.8.8.8", {"CALLBACK_ALLOWED_IPS": golive.OK, "TRUSTED_PROXIES": golive.WARN}),
    ],
)
def test_production_callback_filters_that_let_anyone_in_fail(
    sandbox, tmp_path, allowed, proxies, expected
):
    environ = {
        **sandbox,
        "MPESA_ENVIRONMENT": "production",
        "MPESA_SECURITY_CREDENTIAL": "c2VjcmV0",
        "CONSOLE_SECRET": "a-console-secret",
        "CALLBACK_ALLOWED_IPS": allowed,
        "TRUSTED_PROXIES": proxies,
    }
    settings = load_settings(environ, env_file=tmp_path / "no.env")
    found = {f.check: f.result for f in golive.check_callback_filters(settings)}
    assert found == expected
