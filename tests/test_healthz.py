"""GET /healthz over real HTTP: version, environment and database reachability; and what the
API answers while the database is down."""

import requests

import service
from tests.http_support import serving


def service_app(database_url: str, tmp_path, **extra):
    environ = {
        "DATABASE_URL": database_url,
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "j.log"),
        **extra,
    }
    settings = service.load_settings(environ, env_file=tmp_path / "none")
    return service.make_app(service.build_service(settings))


def test_healthz_reports_version_environment_and_database(database_url, tmp_path):
    with serving(service_app(database_url, tmp_path)) as base_url:
        response = requests.get(f"{base_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": service.__version__,
        "environment": "simulator",
        "database": "ok",
        "journal": "ok",
    }


def test_healthz_is_503_when_the_database_is_down(tmp_path):
    unreachable = "mysql+pymysql://root@127.0.0.1:1/nothing"
    with serving(service_app(unreachable, tmp_path)) as base_url:
        response = requests.get(f"{base_url}/healthz", timeout=30)
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_an_api_call_while_the_database_is_down_is_503_and_says_to_try_again(tmp_path):
    unreachable = "mysql+pymysql://root@127.0.0.1:1/nothing"
    app = service_app(unreachable, tmp_path, API_KEYS="down-key")
    with serving(app) as base_url:
        response = requests.post(
            f"{base_url}/payouts",
            json={"phone": "254712345678", "amount": 100, "user_id": "u1"},
            headers={"Authorization": "Bearer down-key", "Idempotency-Key": "db-down-1"},
            timeout=30,
        )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"error": "the database is unavailable; try again shortly"}
