"""The service against the simulator's Daraja checks, over real HTTP, on SQLite and MariaDB: what
the real Daraja refuses or fails (credentials, parties, limits, tokens) ends where it should,
says why, and is never retried in a loop."""

import base64
import uuid

import pytest

from mpesa_service.resolution import retry_failed_payouts
from tests.service_support import wait_until
from tests.sim_support import fetch_token

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STK_PATH = "/mpesa/stkpush/v1/processrequest"
PAYEE = "0712345678"
NO_RETRY_WAIT = {"RETRY_DELAY_SECONDS": "0"}


def pay(stack, amount=1000, **extra):
    body = {"user_id": "trainer-1", "phone": PAYEE, "amount": amount, **extra}
    answer = stack.post("/payouts", body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert answer.status_code == 201, answer.text
    return answer.json()["reference_id"]


def payout_ended(stack, reference_id, status):
    def probe():
        payout = stack.get(f"/payouts/{reference_id}").json()
        return payout if payout["status"] == status else None

    return wait_until(probe)


def collect(stack, **extra):
    body = {"phone": PAYEE, "amount": 150, "account_reference": "INV10023", **extra}
    answer = stack.post("/payments/mpesa/stk-initiate", body)
    assert answer.status_code == 200, answer.text
    return answer.json()["checkout_request_id"]


def collection_ended(stack, checkout_request_id):
    def probe():
        query = {"checkout_request_id": checkout_request_id}
        answer = stack.post("/payments/mpesa/stk-query", query).json()
        return answer if answer["status"] != "pending" else None

    return wait_until(probe)


def never_retried(stack, reference_id):
    """The retry job, run several times, sends no new attempt: one B2C request in all."""
    for _ in range(3):
        assert retry_failed_payouts(stack.svc) == 0
    payout = stack.get(f"/payouts/{reference_id}").json()
    assert [attempt["status"] for attempt in payout["attempts"]] == ["failed"]
    assert len(stack.sim_requests(B2C_PATH)) == 1
    assert stack.sim.ledger() == []


# --- the initiator's credential -----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"MPESA_INITIATOR_PASSWORD": "not-the-password"},
        {"MPESA_INITIATOR_NAME": "apiop_unknown"},
        {"MPESA_SECURITY_CREDENTIAL": base64.b64encode(b"simulator").decode()},
    ],
    ids=["wrong-password", "unknown-initiator", "not-encrypted"],
)
def test_a_bad_initiator_fails_the_payout_with_2001_and_it_is_never_retried(make_stack, settings):
    stack = make_stack({**settings, **NO_RETRY_WAIT})
    reference_id = pay(stack)
    payout = payout_ended(stack, reference_id, "failed")
    assert (payout["result_code"], payout["result_desc"], payout["result_meaning"]) == (
        "2001",
        "The initiator information is invalid.",
        "initiator information invalid (username, password or certificate)",
    )
    never_retried(stack, reference_id)


def test_the_embedded_defaults_carry_a_credential_the_simulator_accepts(stack):
    reference_id = pay(stack)
    assert payout_ended(stack, reference_id, "completed")["result_code"] == "0"
    (sent,) = stack.sim_requests(B2C_PATH)
    assert sent["body"]["InitiatorName"] == stack.sim.config.initiator_name


# --- Daraja's limits, failed after acceptance ---------------------------------------------------


@pytest.mark.parametrize(
    ("sim_config", "extra", "code", "meaning"),
    [
        ({"b2c_minimum_amount": 2000}, {}, "2", "amount below the B2C minimum"),
        (
            {"b2c_commands": ("BusinessPayment",)},
            {"command_id": "SalaryPayment"},
            "29",
            "invalid CommandID",
        ),
    ],
    ids=["below-minimum", "unknown-command"],
)
def test_a_payout_daraja_accepts_then_fails_ends_failed_and_is_never_retried(
    make_stack, sim_config, extra, code, meaning
):
    stack = make_stack(NO_RETRY_WAIT, **sim_config)
    reference_id = pay(stack, **extra)
    payout = payout_ended(stack, reference_id, "failed")
    assert (payout["result_code"], payout["result_meaning"]) == (code, meaning)
    never_retried(stack, reference_id)


def test_a_b2c_shortcode_that_cannot_pay_out_fails_with_2028(make_stack):
    stack = make_stack({"MPESA_B2C_SHORTCODE": "174379", **NO_RETRY_WAIT})
    reference_id = pay(stack)
    payout = payout_ended(stack, reference_id, "failed")
    assert (payout["result_code"], payout["result_meaning"]) == (
        "2028",
        "short code not permitted to do B2C",
    )
    never_retried(stack, reference_id)


# --- who the customer pays ----------------------------------------------------------------------


def test_a_till_configured_with_its_head_office_collects(make_stack):
    stack = make_stack(
        {"MPESA_STK_TRANSACTION_TYPE": "CustomerBuyGoodsOnline", "MPESA_STK_PARTY_B": "600100"}
    )
    assert collection_ended(stack, collect(stack))["status"] == "completed"
    (sent,) = stack.sim_requests(STK_PATH)
    assert (sent["body"]["BusinessShortCode"], sent["body"]["PartyB"]) == ("174379", "600100")


def test_buy_goods_without_the_till_as_party_b_fails_with_2028_and_says_why(make_stack):
    stack = make_stack({"MPESA_STK_TRANSACTION_TYPE": "CustomerBuyGoodsOnline"})
    answer = collection_ended(stack, collect(stack))
    assert (answer["status"], answer["result_code"]) == ("failed", "2028")
    assert "TransactionType and PartyB" in answer["result_meaning"]
    assert stack.sim.ledger() == []


def test_an_account_reference_too_long_for_the_prompt_fails_with_1025(make_stack):
    stack = make_stack(account_reference_limit=5)
    answer = collection_ended(stack, collect(stack))
    assert (answer["status"], answer["result_code"], answer["result_meaning"]) == (
        "failed",
        "1025",
        "error sending the push request (prompt too long)",
    )


# --- tokens -------------------------------------------------------------------------------------


def test_a_token_taken_by_another_client_costs_one_retry_not_a_payout(stack):
    first = pay(stack)
    payout_ended(stack, first, "completed")
    fetch_token(stack.sim_base_url)  # another client of the same app: the service's is revoked
    second = pay(stack)
    assert payout_ended(stack, second, "completed")["result_code"] == "0"
    statuses = [request["status"] for request in stack.sim_requests(B2C_PATH)]
    assert statuses == [200, 404, 200]
    assert len(stack.sim.ledger()) == 2


@pytest.mark.parametrize("scenario", ["token_invalid_401", "token_invalid_400"])
def test_every_invalid_token_answer_is_refreshed_and_retried_once(stack, scenario):
    stack.sim.arm(scenario, path=B2C_PATH)
    reference_id = pay(stack)
    assert payout_ended(stack, reference_id, "completed")["result_code"] == "0"
    assert len(stack.sim_requests(B2C_PATH)) == 2


def test_an_api_product_not_enabled_fails_the_payout_after_one_retry_and_no_more(make_stack):
    stack = make_stack(NO_RETRY_WAIT)
    stack.sim.arm("api_product_not_enabled", times=5, path=B2C_PATH)
    reference_id = pay(stack)
    payout = payout_ended(stack, reference_id, "failed")
    assert payout["result_code"] == "404.001.03"
    assert "Invalid Access Token" in payout["result_desc"]
    assert len(stack.sim_requests(B2C_PATH)) == 2  # the first, and one with a fresh token
    for _ in range(3):
        assert retry_failed_payouts(stack.svc) == 0
    assert len(stack.sim_requests(B2C_PATH)) == 2
