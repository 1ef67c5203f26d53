"""GET /healthz over real HTTP: version, environment and database reachability."""

import requests

import service
from tests.http_support import serving


def service_app(database_url: str, tmp_path) -> service.Service:
    settings = service.load_settings({"DATABASE_URL": database_url}, env_file=tmp_path / "none")
    return service.make_app(service.Service(settings, service.make_engine(database_url)))


def test_healthz_reports_version_environment_and_database(database_url, tmp_path):
    with serving(service_app(database_url, tmp_path)) as base_url:
        response = requests.get(f"{base_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": service.__version__,
        "environment": "simulator",
        "database": "ok",
    }


def test_healthz_is_503_when_the_database_is_down(tmp_path):
    unreachable = "mysql+pymysql://root@127.0.0.1:1/nothing"
    with serving(service_app(unreachable, tmp_path)) as base_url:
        response = requests.get(f"{base_url}/healthz", timeout=30)
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
