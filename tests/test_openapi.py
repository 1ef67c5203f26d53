"""The OpenAPI document describes exactly the routes the app serves."""

import json
import re
from pathlib import Path

import service
from mpesa_service.events import EVENT_TYPES
from mpesa_service.payouts import PAYOUT_STATES

ROOT = Path(__file__).resolve().parent.parent


def served_routes(tmp_path) -> set[tuple[str, str]]:
    settings = service.load_settings(
        {
            "CALLBACK_TOKEN": "t",
            "CALLBACK_JOURNAL_PATH": str(tmp_path / "j.log"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        },
        env_file=tmp_path / "none",
    )
    app = service.make_app(service.build_service(settings))
    return {
        (route.method.lower(), re.sub(r"<(\w+)>", r"{\1}", route.rule))
        for route in app.routes
        if not route.rule.startswith("/console")  # HTML pages for people, not the API
    }


def documented_routes() -> set[tuple[str, str]]:
    spec = json.loads((ROOT / "openapi.json").read_text())
    return {(method, path) for path, item in spec["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path):
    assert served_routes(tmp_path) == documented_routes()


def test_document_is_openapi_3_with_security_on_initiation():
    spec = json.loads((ROOT / "openapi.json").read_text())
    assert spec["openapi"].startswith("3.")
    assert spec["paths"]["/payouts"]["post"]["security"] == [{"bearerAuth": []}]


def test_every_call_with_an_api_key_documents_the_503_for_a_database_out_of_reach():
    spec = json.loads((ROOT / "openapi.json").read_text())
    keyed = [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == [{"bearerAuth": []}]
    ]
    assert keyed
    for method, path, operation in keyed:
        assert operation["responses"].get("503") == {
            "$ref": "#/components/responses/DatabaseUnavailable"
        }, f"{method} {path}"
    headers = spec["components"]["responses"]["DatabaseUnavailable"]["headers"]
    assert "Retry-After" in headers


def test_the_documented_payout_statuses_are_the_state_table():
    spec = json.loads((ROOT / "openapi.json").read_text())
    (status,) = [p for p in spec["paths"]["/payouts"]["get"]["parameters"] if p["name"] == "status"]
    assert status["schema"]["enum"] == list(PAYOUT_STATES)
    payout = spec["components"]["schemas"]["Payout"]
    assert payout["properties"]["status"]["enum"] == list(PAYOUT_STATES)


def test_the_documented_event_types_are_the_ones_the_service_emits():
    spec = json.loads((ROOT / "openapi.json").read_text())
    (kind,) = [p for p in spec["paths"]["/events"]["get"]["parameters"] if p["name"] == "type"]
    assert kind["schema"]["enum"] == list(EVENT_TYPES)
    event = spec["components"]["schemas"]["Event"]
    assert event["properties"]["type"]["enum"] == list(EVENT_TYPES)
    readme = (ROOT / "README.md").read_text()
    subjects = "|".join(sorted({name.split(".")[0] for name in EVENT_TYPES}))
    rows = re.findall(rf"^\| `((?:{subjects})\.[a-z_]+)` \|", readme, re.MULTILINE)
    assert sorted(rows) == sorted(EVENT_TYPES)  # the README's table of event types


def test_payout_requests_are_documented_with_the_user_id_required():
    schemas = json.loads((ROOT / "openapi.json").read_text())["components"]["schemas"]
    assert "user_id" in schemas["PayoutRequest"]["required"]
    assert "user_id" in schemas["LegacyPayoutRequest"]["required"]
