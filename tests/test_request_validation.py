"""What the API takes from callers, over real HTTP (SQLite and MariaDB): amounts written only in
unambiguous forms, payouts with a user_id and a phone (or PAYOUT_PHONE_QUERY to find it), and list
filters limited to the values they can match."""

import uuid

import pytest

from mpesa_service.payouts import PAYOUT_STATES

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STK_PATH = "/mpesa/stkpush/v1/processrequest"
PAYEE = "0712345678"
AMOUNT_FORMS = 'whole shillings in digits (1500, "1500" or 1500.0)'


def post_raw(stack, path: str, body_text: str, key: str | None = None):
    """POST `body_text` exactly as written: how a client spells a number is what is tested."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": key or str(uuid.uuid4())}
    return stack.post(path, headers=headers, data=body_text.encode())


def payout_text(amount_literal: str) -> str:
    return f'{{"user_id": "trainer-1", "phone": "{PAYEE}", "amount": {amount_literal}}}'


def stk_text(amount_literal: str) -> str:
    return f'{{"phone": "{PAYEE}", "amount": {amount_literal}, "account_reference": "INV7"}}'


AMBIGUOUS = [
    ('"1,500"', "'1,500'"),
    ("1e3", "1e3"),
    ('"1e3"', "'1e3'"),
    ("15000e-1", "15000e-1"),
    ("true", "True"),
    ('" 1500"', "' 1500'"),
    ('"-1500"', "'-1500'"),
]


@pytest.mark.parametrize(("literal", "shown"), AMBIGUOUS)
def test_payout_amount_in_an_ambiguous_form_is_400_naming_the_forms(stack, literal, shown):
    response = post_raw(stack, "/payouts", payout_text(literal))
    assert response.status_code == 400
    assert response.json() == {
        "error": f"amount: must be {AMOUNT_FORMS}, not {shown}",
        "field": "amount",
    }
    assert stack.sim_requests(B2C_PATH) == []


@pytest.mark.parametrize(("literal", "shown"), AMBIGUOUS)
def test_collection_amount_in_an_ambiguous_form_is_400_naming_the_forms(stack, literal, shown):
    response = post_raw(stack, "/payments/mpesa/stk-initiate", stk_text(literal))
    assert response.status_code == 400
    assert response.json()["error"] == f"amount: must be {AMOUNT_FORMS}, not {shown}"
    assert stack.sim_requests(STK_PATH) == []


@pytest.mark.parametrize("literal", ["1500", '"1500"', "1500.0", '"1500.00"'])
def test_payout_amount_in_a_plain_form_is_taken(stack, literal):
    response = post_raw(stack, "/payouts", payout_text(literal))
    assert response.status_code == 201
    assert response.json()["amount"] == 1500


@pytest.mark.parametrize("literal", ["150", '"150"', "150.0"])
def test_collection_amount_in_a_plain_form_is_taken(stack, literal):
    response = post_raw(stack, "/payments/mpesa/stk-initiate", stk_text(literal))
    assert response.status_code == 200
    (sent,) = stack.sim_requests(STK_PATH)
    assert sent["body"]["Amount"] == 150


@pytest.mark.parametrize("literal", ["10.50", '"10.50"'])
def test_amount_with_cents_is_still_refused_as_not_whole(stack, literal):
    response = post_raw(stack, "/payouts", payout_text(literal))
    assert response.status_code == 400
    assert response.json()["error"].startswith("amount: must be whole shillings, not ")


def test_the_readme_api_php_body_without_a_phone_says_what_would_find_one(stack):
    readme_body = {
        "action": "b2c_payment_initiate",
        "user_id": "user_123",
        "amount": 1000,
        "reason": "weekly_payout",
        "description": "Weekly earnings payout",
    }
    response = stack.post("/api.php", readme_body, headers={"Idempotency-Key": "legacy-1"})
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "message": "phone: required unless PAYOUT_PHONE_QUERY is set",
    }
    assert stack.sim_requests(B2C_PATH) == []


def test_payout_without_a_phone_says_what_would_find_one(stack):
    body = {"user_id": "trainer-1", "amount": 1000}
    response = stack.post("/payouts", body, headers={"Idempotency-Key": "no-phone"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "phone: required unless PAYOUT_PHONE_QUERY is set",
        "field": "phone",
    }


@pytest.mark.parametrize("user_id", [None, "", "  "])
def test_payout_without_a_user_id_is_400_and_nothing_is_sent(stack, user_id):
    body = {"phone": PAYEE, "amount": 1000, "user_id": user_id}
    response = stack.post("/payouts", body, headers={"Idempotency-Key": "no-user"})
    assert response.status_code == 400
    assert response.json()["field"] == "user_id"
    assert response.json()["error"].startswith("user_id: required")
    assert stack.sim_requests(B2C_PATH) == []


def test_api_php_payout_without_a_user_id_is_refused_in_the_old_shape(stack):
    body = {"action": "b2c_payment_initiate", "amount": 1000, "phone": PAYEE}
    response = stack.post("/api.php", body, headers={"Idempotency-Key": "legacy-no-user"})
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert response.json()["message"].startswith("user_id: required")
    assert stack.sim_requests(B2C_PATH) == []


def test_phone_lookup_without_a_user_id_asks_for_the_user_id(make_stack):
    stack = make_stack({"PAYOUT_PHONE_QUERY": "SELECT phone FROM trainers WHERE id = :user_id"})
    response = stack.post("/payouts", {"amount": 1000}, headers={"Idempotency-Key": "lookup"})
    assert response.status_code == 400
    assert response.json()["field"] == "user_id"


def test_listing_by_an_unknown_status_is_400_naming_the_statuses(stack):
    response = stack.get("/payouts", params={"status": "bogus"})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"status: one of {', '.join(PAYOUT_STATES)}, not 'bogus'",
        "field": "status",
    }


@pytest.mark.parametrize("status", list(PAYOUT_STATES))
def test_listing_by_each_known_status_is_answered(stack, status):
    response = stack.get("/payouts", params={"status": status})
    assert (response.status_code, response.json()) == (200, {"payouts": []})
