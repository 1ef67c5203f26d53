"""The settings table: defaults, precedence, and refusal to start without what is required."""

import pytest

from service import SETTINGS, SettingsError, load_settings

CREDENTIALS = {
    "MPESA_CONSUMER_KEY": "key",
    "MPESA_CONSUMER_SECRET": "secret",
    "MPESA_SHORTCODE": "600996",
    "MPESA_INITIATOR_NAME": "apiop",
    "MPESA_SECURITY_CREDENTIAL": "c2VjcmV0",
    "MPESA_PASSKEY": "passkey",
}


def test_defaults_run_the_simulator_on_sqlite(tmp_path):
    settings = load_settings({}, env_file=tmp_path / "none")
    assert settings.environment == "simulator"
    assert settings["DATABASE_URL"] == "sqlite:///data/mpesa.db"
    assert settings.integer("PORT") == 8000


def test_environment_variables_win_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9001\nHOST=0.0.0.0\n")
    settings = load_settings({"PORT": "9002"}, env_file=env_file)
    assert settings["PORT"] == "9002"
    assert settings["HOST"] == "0.0.0.0"


def test_api_keys_are_a_comma_separated_list(tmp_path):
    settings = load_settings({"API_KEYS": " a1, b2 ,,"}, env_file=tmp_path / "none")
    assert settings.listing("API_KEYS") == ["a1", "b2"]


def test_production_names_every_missing_variable(tmp_path):
    with pytest.raises(SettingsError) as error:
        load_settings({"MPESA_ENVIRONMENT": "production"}, env_file=tmp_path / "none")
    required = [s.name for s in SETTINGS if "production" in s.required_in]
    assert len(required) >= 8
    for name in required:
        assert name in str(error.value)


def test_sandbox_needs_the_daraja_credentials(tmp_path):
    environ = {"MPESA_ENVIRONMENT": "sandbox", "MPESA_CONSUMER_KEY": "key"}
    with pytest.raises(
        SettingsError, match="MPESA_CONSUMER_SECRET, MPESA_SHORTCODE, MPESA_PASSKEY"
    ):
        load_settings(environ, env_file=tmp_path / "none")


def test_production_starts_when_everything_required_is_set(tmp_path):
    environ = {
        **CREDENTIALS,
        "MPESA_ENVIRONMENT": "production",
        "PUBLIC_BASE_URL": "https://pay.example.com",
        "DATABASE_URL": "mysql+pymysql://u:p@db/payments",
        "API_KEYS": "k1",
        "CALLBACK_TOKEN": "t" * 32,
        "CONSOLE_SECRET": "c" * 32,
    }
    assert load_settings(environ, env_file=tmp_path / "none").environment == "production"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MPESA_ENVIRONMENT": "live"}, "MPESA_ENVIRONMENT must be one of"),
        ({"PORT": "eighty"}, "PORT must be a whole number, not 'eighty'"),
        ({"PORT": "\u00b2"}, "PORT must be a whole number, not '\u00b2'"),
        ({"DARAJA_TIMEOUT_SECONDS": "0"}, "DARAJA_TIMEOUT_SECONDS must be a positive number"),
        ({"DARAJA_TIMEOUT_SECONDS": "1,5"}, "DARAJA_TIMEOUT_SECONDS must be a positive number"),
        ({"STK_EXPIRY_MINUTES": "1.5"}, "STK_EXPIRY_MINUTES must be a whole number, not '1.5'"),
        (
            {"DARAJA_TIMEOUT_SECONDS": "120"},
            "SUBMITTING_STUCK_AFTER_SECONDS \\(90\\) must be more than DARAJA_TIMEOUT_SECONDS",
        ),
    ],
)
def test_bad_values_are_named(tmp_path, environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ, env_file=tmp_path / "none")


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({}, 600),
        ({"STK_EXPIRY_SECONDS": "45"}, 45),
        ({"STK_EXPIRY_MINUTES": "3"}, 180),
        ({"STK_EXPIRY_MINUTES": "3", "STK_EXPIRY_SECONDS": "45"}, 45),
    ],
)
def test_stk_expiry_is_in_seconds_and_its_older_name_in_minutes_still_counts(
    tmp_path, environ, seconds
):
    settings = load_settings(environ, env_file=tmp_path / "none")
    assert settings.integer("STK_EXPIRY_SECONDS") == seconds


def test_daraja_timeout_may_be_a_fraction_of_a_second(tmp_path):
    settings = load_settings({"DARAJA_TIMEOUT_SECONDS": "0.25"}, env_file=tmp_path / "none")
    assert settings.seconds("DARAJA_TIMEOUT_SECONDS") == 0.25


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("ops:admin:s3cret", "API_KEYS entry 1 (ops): roles are initiate, operator, read"),
        ("good, :read:s3cret", "API_KEYS entry 2 must be `secret` or `name:roles:secret`"),
    ],
)
def test_bad_api_keys_are_named_by_position_never_by_secret(tmp_path, keys, message):
    with pytest.raises(SettingsError) as error:
        load_settings({"API_KEYS": keys}, env_file=tmp_path / "none")
    assert message in str(error.value)
    assert "s3cret" not in str(error.value)


def test_api_keys_carry_names_and_roles():
    from mpesa_service.settings import parse_api_keys

    plain, named = parse_api_keys(["abc", "ops:operator+read:xyz"])
    assert (plain.name, plain.roles) == ("key-1", {"initiate", "read"})
    assert (named.name, named.roles) == ("ops", {"operator", "read"})
    assert "xyz" not in repr(named)
