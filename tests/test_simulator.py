"""The Daraja simulator, driven over real HTTP with `requests` and a real callback receiver."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa

import simulator
from simulator import (
    B2C_V1_PATH,
    B2C_V3_PATH,
    BALANCE_PATH,
    OAUTH_PATH,
    STATUS_PATH,
    STK_PUSH_PATH,
    STK_QUERY_PATH,
    SimulatorConfig,
)
from tests.sim_support import (
    SANDBOX_PHONE,
    CallbackSink,
    b2c_body,
    balance_body,
    credential_for,
    fetch_token,
    parameters,
    poll,
    post,
    status_body,
    stk_items,
    stk_push_body,
    stk_query_body,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
FAST = {
    "callback_delay_seconds": 0.05,
    "stk_answer_delay_seconds": 0.05,
    "delayed_callback_seconds": 1.0,
    "duplicate_callback_gap_seconds": 0.05,
    "hang_seconds": 1.0,
}
# Long enough for a callback that was going to come (callback_delay_seconds) to have come.
QUIET_SECONDS = 0.4


# ============================================================================================
# Fixtures and helpers
# ============================================================================================


@pytest.fixture(scope="module")
def sink():
    sink = CallbackSink()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def shared_simulator():
    running = simulator.start(config=SimulatorConfig(**FAST))
    yield running
    running.stop()


@pytest.fixture
def daraja(shared_simulator):
    """The module's simulator, reset: no requests, transactions, callbacks or scenarios."""
    shared_simulator.simulator.reset()
    return shared_simulator


@pytest.fixture
def start_simulator():
    """Start extra simulators with config overrides; all are stopped after the test."""
    started = []

    def start(**overrides) -> simulator.RunningSimulator:
        running = simulator.start(config=SimulatorConfig(**{**FAST, **overrides}))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def token(daraja):
    return fetch_token(daraja.base_url)


@dataclass
class Hooks:
    """Callback URLs unique to one test, so a late callback from another test cannot land."""

    sink: CallbackSink
    prefix: str

    def url(self, name: str) -> str:
        return self.sink.url(f"{self.prefix}/{name}")

    def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        return self.sink.wait_for(f"{self.prefix}/{name}", count, timeout)

    def received(self, name: str) -> list[dict]:
        return self.sink.received(f"{self.prefix}/{name}")


@pytest.fixture
def hooks(sink):
    return Hooks(sink, f"/{uuid.uuid4().hex[:12]}")


def push(daraja, token, hooks, phone=SANDBOX_PHONE, amount=150, **fields):
    body = stk_push_body(hooks.url("stk"), phone, amount, daraja.simulator.config, **fields)
    return post(daraja.base_url, STK_PUSH_PATH, token, body)


def stk_query(daraja, token, checkout_request_id):
    body = stk_query_body(checkout_request_id, daraja.simulator.config)
    return post(daraja.base_url, STK_QUERY_PATH, token, body)


def final_stk_query(daraja, token, checkout_request_id) -> dict:
    """Poll STK Query past "being processed" to the final answer."""
    answer = poll(lambda: _final(stk_query(daraja, token, checkout_request_id)))
    return answer.json()


def _final(answer):
    return answer if answer.status_code == 200 else None


def pay_out(
    daraja,
    token,
    hooks,
    phone=SANDBOX_PHONE,
    amount=500,
    originator_id=None,
    path=B2C_V3_PATH,
    timeout=5.0,
    **fields,
):
    originator_id = originator_id or f"b2c-{uuid.uuid4()}"
    body = b2c_body(hooks.url("result"), hooks.url("timeout"), originator_id, phone, amount)
    return post(daraja.base_url, path, token, {**body, **fields}, timeout=timeout)


def query_status(daraja, token, hooks, **ids) -> dict:
    """Send a Transaction Status query and return its Result from the callback."""
    body = status_body(hooks.url("status"), hooks.url("status-timeout"), **ids)
    assert post(daraja.base_url, STATUS_PATH, token, body).status_code == 200
    return hooks.wait("status")[0]["Result"]


def arm_over_http(daraja, scenario, **filters):
    answer = requests.post(
        daraja.base_url + "/simulator/scenarios", json={"scenario": scenario, **filters}, timeout=5
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def error_of(answer) -> tuple[int, str, str]:
    body = answer.json()
    assert body["requestId"]
    return answer.status_code, body["errorCode"], body["errorMessage"]


# ============================================================================================
# OAuth
# ============================================================================================


def test_oauth_issues_a_token_with_expires_in_as_a_number(daraja):
    answer = requests.get(
        daraja.base_url + OAUTH_PATH,
        params={"grant_type": "client_credentials"},
        auth=("simulator-key", "simulator-secret"),
        timeout=5,
    )
    assert answer.status_code == 200
    assert answer.json()["expires_in"] == 3599
    assert re.fullmatch(r"[A-Za-z0-9]{28}", answer.json()["access_token"])


def test_oauth_sends_expires_in_as_a_string_when_configured(start_simulator):
    running = start_simulator(expires_in_as_string=True)
    answer = requests.get(
        running.base_url + OAUTH_PATH,
        params={"grant_type": "client_credentials"},
        auth=("simulator-key", "simulator-secret"),
        timeout=5,
    )
    assert answer.json()["expires_in"] == "3599"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer abc", "Basic", "Basic not-base64!", "Basic " + base64.b64encode(b"x").decode()],
)
def test_oauth_without_valid_basic_auth_is_400_008_01(daraja, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.get(
        daraja.base_url + OAUTH_PATH,
        params={"grant_type": "client_credentials"},
        headers=headers,
        timeout=5,
    )
    assert error_of(answer) == (400, "400.008.01", "Invalid Authentication passed")


def test_oauth_with_wrong_grant_type_is_400_008_02(daraja):
    answer = requests.get(
        daraja.base_url + OAUTH_PATH,
        params={"grant_type": "password"},
        auth=("simulator-key", "simulator-secret"),
        timeout=5,
    )
    assert error_of(answer) == (400, "400.008.02", "Invalid grant type passed")


def test_oauth_with_wrong_secret_is_a_bare_400_with_empty_body(daraja):
    answer = requests.get(
        daraja.base_url + OAUTH_PATH,
        params={"grant_type": "client_credentials"},
        auth=("simulator-key", "wrong-secret"),
        timeout=5,
    )
    assert (answer.status_code, answer.text) == (400, "")


def test_token_stops_working_after_its_ttl(start_simulator, hooks):
    running = start_simulator(token_ttl_seconds=0.5)
    token = fetch_token(running.base_url)
    body = balance_body(hooks.url("balance"), hooks.url("timeout"))
    assert post(running.base_url, BALANCE_PATH, token, body).status_code == 200
    time.sleep(0.6)
    answer = post(running.base_url, BALANCE_PATH, token, body)
    assert error_of(answer) == (404, "404.001.03", "Invalid Access Token")


@pytest.mark.parametrize(
    "path", [STK_PUSH_PATH, STK_QUERY_PATH, B2C_V3_PATH, B2C_V1_PATH, STATUS_PATH, BALANCE_PATH]
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc"])
def test_every_api_without_a_valid_bearer_token_is_404_001_03(daraja, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.post(daraja.base_url + path, json={}, headers=headers, timeout=5)
    assert error_of(answer) == (404, "404.001.03", "Invalid Access Token")


# ============================================================================================
# STK push and STK query
# ============================================================================================


def test_stk_push_is_accepted_with_daraja_ids(daraja, token, hooks):
    answer = push(daraja, token, hooks)
    assert answer.status_code == 200
    body = answer.json()
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CustomerMessage"] == "Success. Request accepted for processing"
    assert body["CheckoutRequestID"].startswith("ws_CO_")
    assert re.fullmatch(r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-\w+", body["MerchantRequestID"])


def test_stk_success_callback_has_the_real_shape(daraja, token, hooks):
    accepted = push(daraja, token, hooks, amount=150).json()
    callback = hooks.wait("stk")[0]["Body"]["stkCallback"]
    assert callback["ResultCode"] == 0
    assert callback["CheckoutRequestID"] == accepted["CheckoutRequestID"]
    assert callback["MerchantRequestID"] == accepted["MerchantRequestID"]
    names = [item["Name"] for item in callback["CallbackMetadata"]["Item"]]
    assert names == ["Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber"]
    assert {"Name": "Balance"} in callback["CallbackMetadata"]["Item"]
    items = stk_items({"Body": {"stkCallback": callback}})
    assert items["Amount"] == 150.0 and isinstance(items["Amount"], float)
    assert re.fullmatch(r"[A-Z0-9]{10}", items["MpesaReceiptNumber"])
    assert isinstance(items["TransactionDate"], int) and len(str(items["TransactionDate"])) == 14
    assert items["PhoneNumber"] == int(SANDBOX_PHONE)


def test_stk_query_is_pending_until_the_customer_answers_then_final(start_simulator, hooks):
    # The customer takes a second, so the first query surely comes before the answer.
    daraja = start_simulator(stk_answer_delay_seconds=1.0)
    token = fetch_token(daraja.base_url)
    checkout_id = push(daraja, token, hooks).json()["CheckoutRequestID"]
    pending = stk_query(daraja, token, checkout_id)
    assert error_of(pending) == (500, "500.001.1001", "The transaction is being processed")
    assert pending.json()["requestId"] == checkout_id
    final = final_stk_query(daraja, token, checkout_id)
    assert (final["ResponseCode"], final["ResultCode"]) == ("0", "0")
    assert final["CheckoutRequestID"] == checkout_id


def test_stk_query_for_an_unknown_checkout_id_is_rejected(daraja, token):
    answer = stk_query(daraja, token, "ws_CO_01012025000000000712345678")
    assert error_of(answer)[:2] == (400, "400.002.02")


def test_stk_push_with_a_password_from_another_timestamp_is_wrong_credentials(daraja, token, hooks):
    body = stk_push_body(hooks.url("stk"), config=daraja.simulator.config)
    a_minute_earlier = datetime.now(simulator.NAIROBI) - timedelta(minutes=1)
    body["Timestamp"] = a_minute_earlier.strftime("%Y%m%d%H%M%S")
    answer = post(daraja.base_url, STK_PUSH_PATH, token, body)
    assert error_of(answer) == (500, "500.001.1001", "Wrong credentials")


def test_stk_push_to_an_unknown_shortcode_is_merchant_does_not_exist(daraja, token, hooks):
    answer = push(daraja, token, hooks, BusinessShortCode=888880)
    assert error_of(answer) == (500, "500.001.1001", "Merchant does not exist")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("Amount", 10.5, "Bad Request - Invalid Amount"),
        ("Amount", "10.5", "Bad Request - Invalid Amount"),
        ("Amount", 10.0, "Bad Request - Invalid Amount"),
        ("Amount", 0, "Bad Request - Invalid Amount"),
        ("Amount", 250_001, "Bad Request - Invalid Amount"),
        ("Amount", True, "Bad Request - Invalid Amount"),
        ("PhoneNumber", "0712345678", "Bad Request - Invalid PhoneNumber"),
        ("PhoneNumber", "+254712345678", "Bad Request - Invalid PhoneNumber"),
        ("PhoneNumber", 254612345678, "Bad Request - Invalid PhoneNumber"),
        ("PartyA", "254 712 345 678", "Bad Request - Invalid PartyA"),
        ("PartyB", "till", "Bad Request - Invalid PartyB"),
        ("AccountReference", "", "Bad Request - Invalid AccountReference"),
        ("TransactionDesc", "D" * 14, "Bad Request - Invalid TransactionDesc"),
        ("TransactionType", "CustomerPayBill", "Bad Request - Invalid TransactionType"),
        ("CallBackURL", None, "Bad Request - Invalid CallBackURL"),
        ("CallBackURL", "https://example.com/ hooks", "Bad Request - Invalid CallBackURL"),
        ("Timestamp", "2025110514301", "Bad Request - Invalid Timestamp"),
        ("Timestamp", "20251305143010", "Bad Request - Invalid Timestamp"),
    ],
)
def test_stk_push_rejects_bad_field_with_400_002_02(daraja, token, hooks, field, value, message):
    body = stk_push_body(hooks.url("stk"), config=daraja.simulator.config, **{field: value})
    if value is None:
        del body[field]
    answer = post(daraja.base_url, STK_PUSH_PATH, token, body)
    assert error_of(answer) == (400, "400.002.02", message)
    assert daraja.simulator.ledger() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Amount", "1"),
        ("Amount", 250_000),
        ("PhoneNumber", "254112345678"),
        ("AccountReference", "A" * 12),
        ("TransactionDesc", "D" * 13),
        ("TransactionType", "CustomerBuyGoodsOnline"),
    ],
)
def test_stk_push_accepts_edge_values(daraja, token, hooks, field, value):
    assert push(daraja, token, hooks, **{field: value}).status_code == 200


def test_stk_push_without_transaction_desc_is_accepted(daraja, token, hooks):
    body = stk_push_body(hooks.url("stk"), config=daraja.simulator.config)
    del body["TransactionDesc"]
    assert post(daraja.base_url, STK_PUSH_PATH, token, body).status_code == 200


def test_malformed_json_is_400_002_05(daraja, token):
    answer = requests.post(
        daraja.base_url + STK_PUSH_PATH,
        data="{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert error_of(answer) == (400, "400.002.05", "Invalid request payload")


def test_json_sent_without_content_type_is_rejected(daraja, token, hooks):
    body = stk_push_body(hooks.url("stk"), config=daraja.simulator.config)
    answer = requests.post(
        daraja.base_url + STK_PUSH_PATH,
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert error_of(answer)[:2] == (400, "400.002.02")


def test_receipts_and_checkout_ids_are_unique_and_mpesa_shaped(daraja, token, hooks):
    accepted = [push(daraja, token, hooks).json() for _ in range(5)]
    callbacks = hooks.wait("stk", count=5)
    receipts = {stk_items(c)["MpesaReceiptNumber"] for c in callbacks}
    assert len(receipts) == 5
    assert all(re.fullmatch(r"[A-Z][A-L][A-Z0-9]{8}", r) for r in receipts)
    assert len({a["CheckoutRequestID"] for a in accepted}) == 5


# ============================================================================================
# B2C
# ============================================================================================


def test_b2c_v3_is_accepted_and_echoes_the_originator_conversation_id(daraja, token, hooks):
    answer = pay_out(daraja, token, hooks, originator_id="b2c-order-10023")
    assert answer.status_code == 200
    body = answer.json()
    assert body["OriginatorConversationID"] == "b2c-order-10023"
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", body["ConversationID"])
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Accept the service request successfully."


def test_b2c_success_result_has_the_real_shape(daraja, token, hooks):
    accepted = pay_out(daraja, token, hooks, amount=500).json()
    result = hooks.wait("result")[0]["Result"]
    assert (result["ResultType"], result["ResultCode"]) == (0, 0)
    assert result["OriginatorConversationID"] == accepted["OriginatorConversationID"]
    assert result["ConversationID"] == accepted["ConversationID"]
    values = parameters(result)
    assert values["TransactionAmount"] == 500
    assert values["TransactionReceipt"] == result["TransactionID"]
    assert values["ReceiverPartyPublicName"].startswith(f"{SANDBOX_PHONE} - ")
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", values["TransactionCompletedDateTime"])
    assert values["B2CRecipientIsRegisteredCustomer"] == "Y"
    assert values["B2CUtilityAccountAvailableFunds"] == 499500.0
    assert values["B2CChargesPaidAccountAvailableFunds"] == -5.0
    reference = result["ReferenceData"]["ReferenceItem"]
    assert reference["Key"] == "QueueTimeoutURL" and "safaricom" in reference["Value"]


def test_b2c_v1_generates_the_originator_conversation_id(daraja, token, hooks):
    body = b2c_body(hooks.url("result"), hooks.url("timeout"), "ignored")
    del body["OriginatorConversationID"]
    answer = post(daraja.base_url, B2C_V1_PATH, token, body)
    assert answer.status_code == 200
    generated = answer.json()["OriginatorConversationID"]
    assert generated
    assert hooks.wait("result")[0]["Result"]["OriginatorConversationID"] == generated


def test_duplicate_originator_conversation_id_is_rejected_and_pays_once(daraja, token, hooks):
    assert pay_out(daraja, token, hooks, originator_id="b2c-once").status_code == 200
    again = pay_out(daraja, token, hooks, originator_id="b2c-once")
    assert error_of(again) == (500, "500.002.1001", "Duplicate OriginatorConversationID.")
    assert len(daraja.simulator.ledger()) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Amount", 0),
        ("Amount", 10.5),
        ("Amount", "10.5"),
        ("PartyB", "0712345678"),
        ("PartyB", "+254712345678"),
        ("SecurityCredential", ""),
        ("InitiatorName", None),
        ("CommandID", None),
        ("OriginatorConversationID", None),
        ("Remarks", "x"),
        ("ResultURL", "not a url"),
        ("QueueTimeOutURL", None),
    ],
)
def test_b2c_rejects_bad_field_with_400_002_02(daraja, token, hooks, field, value):
    body = b2c_body(hooks.url("result"), hooks.url("timeout"), f"b2c-{uuid.uuid4()}")
    body[field] = value
    if value is None:
        del body[field]
    answer = post(daraja.base_url, B2C_V3_PATH, token, body)
    assert error_of(answer) == (400, "400.002.02", f"Bad Request - Invalid {field}")
    assert daraja.simulator.ledger() == []


@pytest.mark.parametrize("command", ["BusinessPayment", "SalaryPayment", "PromotionPayment"])
def test_b2c_accepts_each_command_id(daraja, token, hooks, command):
    assert pay_out(daraja, token, hooks, CommandID=command).status_code == 200


# ============================================================================================
# Daraja's own checks: what the real Daraja refuses, at once or in the result
# ============================================================================================


def foreign_credential(password: str = simulator.SANDBOX_INITIATOR_PASSWORD) -> str:
    """The right password encrypted with some other RSA key (another environment's certificate)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encrypted = key.public_key().encrypt(password.encode(), asym_padding.PKCS1v15())
    return base64.b64encode(encrypted).decode()


def b2c_result(daraja, token, hooks, **fields) -> dict:
    """Send a payout that Daraja accepts; the Result that comes back."""
    answer = pay_out(daraja, token, hooks, **fields)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ResponseCode"] == "0"
    return hooks.wait("result")[0]["Result"]


def stk_outcome(daraja, token, hooks, **fields) -> dict:
    """Send an STK push that Daraja accepts; the stkCallback that comes back."""
    answer = push(daraja, token, hooks, **fields)
    assert answer.status_code == 200, answer.text
    return hooks.wait("stk")[0]["Body"]["stkCallback"]


@pytest.mark.parametrize(
    "credential",
    [
        credential_for("not-the-password"),
        base64.b64encode(simulator.SANDBOX_INITIATOR_PASSWORD.encode()).decode(),
        simulator.SANDBOX_INITIATOR_PASSWORD,
        foreign_credential(),
    ],
    ids=["wrong-password", "base64-plain-text", "plain-text", "another-certificate"],
)
def test_b2c_with_a_bad_security_credential_is_accepted_then_fails_2001(
    daraja, token, hooks, credential
):
    result = b2c_result(daraja, token, hooks, SecurityCredential=credential)
    assert (result["ResultCode"], result["ResultDesc"]) == (
        2001,
        "The initiator information is invalid.",
    )
    assert "ResultParameters" not in result
    assert daraja.simulator.ledger() == []


def test_b2c_from_an_unknown_initiator_fails_2001(daraja, token, hooks):
    result = b2c_result(daraja, token, hooks, InitiatorName="apiop_other")
    assert result["ResultCode"] == 2001
    assert daraja.simulator.ledger() == []


def test_b2c_with_the_right_credential_pays(daraja, token, hooks):
    assert b2c_result(daraja, token, hooks)["ResultCode"] == 0
    assert len(daraja.simulator.ledger()) == 1


def test_an_initiator_without_the_b2c_role_fails_21(start_simulator, hooks):
    running = start_simulator(initiator_roles=frozenset({simulator.STATUS_ROLE}))
    result = b2c_result(running, fetch_token(running.base_url), hooks)
    assert (result["ResultCode"], result["ResultDesc"]) == (
        21,
        "The initiator is not allowed to initiate this request.",
    )
    assert running.simulator.ledger() == []


def test_status_query_with_a_bad_credential_answers_2001_about_the_query(daraja, token, hooks):
    paid = b2c_result(daraja, token, hooks)
    body = status_body(
        hooks.url("status"),
        hooks.url("status-timeout"),
        OriginalConversationID=paid["OriginatorConversationID"],
        SecurityCredential=credential_for("not-the-password"),
    )
    assert post(daraja.base_url, STATUS_PATH, token, body).status_code == 200
    result = hooks.wait("status")[0]["Result"]
    assert result["ResultCode"] == 2001
    assert "ResultParameters" not in result


def test_balance_query_with_a_bad_credential_answers_2001(daraja, token, hooks):
    body = {**balance_body(hooks.url("balance"), hooks.url("timeout")), "SecurityCredential": "x"}
    assert post(daraja.base_url, BALANCE_PATH, token, body).status_code == 200
    result = hooks.wait("balance")[0]["Result"]
    assert (result["ResultCode"], result["ResultDesc"]) == (
        "2001",
        "The initiator information is invalid.",
    )
    assert "ResultParameters" not in result


def test_b2c_from_a_shortcode_that_cannot_pay_out_fails_2028(daraja, token, hooks):
    result = b2c_result(daraja, token, hooks, PartyA=174379)  # the STK paybill
    assert result["ResultCode"] == 2028
    assert daraja.simulator.ledger() == []


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("Amount", 9, 2),
        ("Amount", 250_001, 3),
        ("CommandID", "Payment", 29),
    ],
)
def test_b2c_outside_daraja_limits_is_accepted_then_fails(daraja, token, hooks, field, value, code):
    fields = {"amount": value} if field == "Amount" else {field: value}
    result = b2c_result(daraja, token, hooks, **fields)
    assert result["ResultCode"] == code
    assert result["TransactionID"].endswith("0000000")
    assert daraja.simulator.ledger() == []


def test_the_b2c_minimum_is_configurable(start_simulator, hooks):
    running = start_simulator(b2c_minimum_amount=1000)
    result = b2c_result(running, fetch_token(running.base_url), hooks, amount=999)
    assert result["ResultCode"] == 2


@pytest.mark.parametrize(
    ("transaction_type", "party_b", "code"),
    [
        ("CustomerPayBillOnline", 174379, 0),
        ("CustomerBuyGoodsOnline", 600100, 0),
        ("CustomerPayBillOnline", 600100, 2028),  # a till sent as a paybill
        ("CustomerBuyGoodsOnline", 174379, 2028),  # the head office sent as the till
        ("CustomerPayBillOnline", 888880, "SFC_IC0003"),
        ("CustomerBuyGoodsOnline", 888880, "SFC_IC0003"),
    ],
)
def test_stk_party_b_must_fit_the_transaction_type(
    daraja, token, hooks, transaction_type, party_b, code
):
    callback = stk_outcome(daraja, token, hooks, TransactionType=transaction_type, PartyB=party_b)
    assert callback["ResultCode"] == code
    assert ("CallbackMetadata" in callback) == (code == 0)


def test_stk_query_answers_the_party_mismatch_code_too(daraja, token, hooks):
    checkout_id = stk_outcome(daraja, token, hooks, PartyB=600100)["CheckoutRequestID"]
    assert final_stk_query(daraja, token, checkout_id)["ResultCode"] == "2028"


def test_stk_account_reference_too_long_for_the_prompt_is_accepted_then_fails_1025(
    daraja, token, hooks
):
    callback = stk_outcome(daraja, token, hooks, AccountReference="A" * 13)
    assert callback["ResultCode"] == 1025
    assert daraja.simulator.ledger() == []


def nairobi_timestamp_body(daraja, hooks, moment: datetime) -> dict:
    """An STK push whose Timestamp (and Password) are `moment` written as Nairobi wall time."""
    config = daraja.simulator.config
    timestamp = moment.strftime("%Y%m%d%H%M%S")
    password = simulator.stk_password(config.shortcode, config.passkey, timestamp)
    return stk_push_body(hooks.url("stk"), config=config, Timestamp=timestamp, Password=password)


@pytest.mark.parametrize(
    "moment",
    [
        lambda: datetime.now(UTC),  # a server writing UTC: three hours behind Nairobi
        lambda: datetime.now(simulator.NAIROBI) - timedelta(minutes=6),  # a stale clock
        lambda: datetime.now(simulator.NAIROBI) + timedelta(minutes=6),  # a fast one
    ],
    ids=["utc", "six-minutes-slow", "six-minutes-fast"],
)
def test_stk_timestamp_off_nairobi_time_is_invalid_timestamp(daraja, token, hooks, moment):
    body = nairobi_timestamp_body(daraja, hooks, moment())
    answer = post(daraja.base_url, STK_PUSH_PATH, token, body)
    assert error_of(answer) == (400, "400.002.02", "Bad Request - Invalid Timestamp")


def test_stk_timestamp_within_the_tolerance_is_accepted(daraja, token, hooks):
    moment = datetime.now(simulator.NAIROBI) - timedelta(minutes=4)
    body = nairobi_timestamp_body(daraja, hooks, moment)
    assert post(daraja.base_url, STK_PUSH_PATH, token, body).status_code == 200


def test_stk_query_with_a_utc_timestamp_is_invalid_timestamp(daraja, token, hooks):
    checkout_id = push(daraja, token, hooks).json()["CheckoutRequestID"]
    config = daraja.simulator.config
    timestamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    body = {
        **stk_query_body(checkout_id, config),
        "Timestamp": timestamp,
        "Password": simulator.stk_password(config.shortcode, config.passkey, timestamp),
    }
    answer = post(daraja.base_url, STK_QUERY_PATH, token, body)
    assert error_of(answer) == (400, "400.002.02", "Bad Request - Invalid Timestamp")


def test_a_new_token_invalidates_the_previous_one(daraja, hooks):
    first = fetch_token(daraja.base_url)
    second = fetch_token(daraja.base_url)
    assert error_of(push(daraja, first, hooks)) == (404, "404.001.03", "Invalid Access Token")
    assert push(daraja, second, hooks).status_code == 200


def test_tokens_can_be_left_to_coexist(start_simulator, hooks):
    running = start_simulator(new_token_revokes_old=False)
    first = fetch_token(running.base_url)
    fetch_token(running.base_url)
    assert push(running, first, hooks).status_code == 200


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [("token_invalid_401", 401, "401.002.01"), ("token_invalid_400", 400, "400.003.01")],
)
def test_other_invalid_token_answers_revoke_every_token(
    daraja, token, hooks, scenario, status, code
):
    daraja.simulator.arm(scenario)
    assert error_of(push(daraja, token, hooks))[:2] == (status, code)
    assert error_of(push(daraja, token, hooks))[:2] == (404, "404.001.03")
    assert push(daraja, fetch_token(daraja.base_url), hooks).status_code == 200


def test_api_product_not_enabled_is_404_001_03_whatever_the_token(daraja, token, hooks):
    daraja.simulator.arm("api_product_not_enabled", times=2)
    assert error_of(push(daraja, token, hooks))[:2] == (404, "404.001.03")
    assert error_of(push(daraja, fetch_token(daraja.base_url), hooks))[:2] == (404, "404.001.03")
    assert daraja.simulator.ledger() == []


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        (B2C_V3_PATH, {"Occassion": ""}),
        (B2C_V3_PATH, {"Occasion": ""}),
        (STK_PUSH_PATH, {"TransactionDesc": ""}),
        (STATUS_PATH, {"Occasion": "", "Remarks": ""}),
        (BALANCE_PATH, {"Remarks": ""}),
    ],
)
def test_an_empty_optional_field_is_accepted(daraja, token, hooks, path, fields):
    bodies = {
        B2C_V3_PATH: lambda: b2c_body(hooks.url("r"), hooks.url("t"), f"b2c-{uuid.uuid4()}"),
        STK_PUSH_PATH: lambda: stk_push_body(hooks.url("r"), config=daraja.simulator.config),
        STATUS_PATH: lambda: status_body(hooks.url("r"), hooks.url("t"), TransactionID="TK5X"),
        BALANCE_PATH: lambda: balance_body(hooks.url("r"), hooks.url("t")),
    }
    answer = post(daraja.base_url, path, token, {**bodies[path](), **fields})
    assert answer.status_code == 200, answer.text


# ============================================================================================
# Failure-code scenarios
# ============================================================================================

STK_FAILURES = [
    ("stk_insufficient_funds", 1, "254700000001"),
    ("stk_cancelled", 1032, "254700001032"),
    ("stk_unreachable", 1037, "254700001037"),
    ("stk_wrong_pin", 2001, "254700002001"),
    ("stk_expired", 1019, "254700001019"),
]
B2C_FAILURES = [
    ("b2c_insufficient_funds", 1, "254711000001"),
    ("b2c_initiator_invalid", 2001, "254711002001"),
    ("b2c_unregistered_recipient", 2040, "254711002040"),
    ("b2c_credential_locked", 8006, "254711008006"),
    ("b2c_invalid_recipient", "SFC_IC0003", "254711000003"),
    ("b2c_system_busy", 26, "254711000026"),
]


@pytest.mark.parametrize(("scenario", "code", "magic_phone"), STK_FAILURES)
@pytest.mark.parametrize("how", ["magic phone", "armed over HTTP"])
def test_stk_failure_scenario_fails_the_payment(
    daraja, token, hooks, scenario, code, magic_phone, how
):
    phone = magic_phone if how == "magic phone" else SANDBOX_PHONE
    if how == "armed over HTTP":
        arm_over_http(daraja, scenario)
    checkout_id = push(daraja, token, hooks, phone=phone).json()["CheckoutRequestID"]
    callback = hooks.wait("stk")[0]["Body"]["stkCallback"]
    assert callback["ResultCode"] == code
    assert callback["ResultDesc"]
    assert "CallbackMetadata" not in callback
    assert final_stk_query(daraja, token, checkout_id)["ResultCode"] == str(code)
    assert daraja.simulator.ledger() == []


@pytest.mark.parametrize(("scenario", "code", "magic_phone"), B2C_FAILURES)
@pytest.mark.parametrize("how", ["magic phone", "armed over HTTP"])
def test_b2c_failure_scenario_fails_the_payout(
    daraja, token, hooks, scenario, code, magic_phone, how
):
    phone = magic_phone if how == "magic phone" else SANDBOX_PHONE
    if how == "armed over HTTP":
        arm_over_http(daraja, scenario)
    assert pay_out(daraja, token, hooks, phone=phone).status_code == 200
    result = hooks.wait("result")[0]["Result"]
    assert result["ResultCode"] == code
    assert "ResultParameters" not in result
    assert re.fullmatch(r"[A-Z0-9]{3}0{7}", result["TransactionID"])
    assert isinstance(result["ReferenceData"]["ReferenceItem"], dict)
    assert daraja.simulator.ledger() == []


MAGIC_PHONES = [
    *((name, phone, STK_PUSH_PATH) for name, _, phone in STK_FAILURES),
    *((name, phone, B2C_V3_PATH) for name, _, phone in B2C_FAILURES),
    ("callback_dropped", "254722000001", B2C_V3_PATH),
    ("callback_twice", "254722000002", B2C_V3_PATH),
    ("callback_delayed", "254722000003", B2C_V3_PATH),
    ("queue_timeout", "254722000004", B2C_V3_PATH),
    ("queue_timeout_never", "254722000005", B2C_V3_PATH),
    ("accepted_no_response", "254733000001", B2C_V3_PATH),
    ("slow_answer", "254733000005", B2C_V3_PATH),
    ("server_error_before_accept", "254733000002", B2C_V3_PATH),
    ("duplicate_originator_id", "254733000006", B2C_V3_PATH),
    ("spike_arrest", "254733000003", B2C_V3_PATH),
    ("token_expiry", "254733000004", B2C_V3_PATH),
    ("amount_mismatch", "254744000001", B2C_V3_PATH),
]


@pytest.mark.parametrize(("scenario", "phone", "path"), MAGIC_PHONES)
def test_magic_phone_selects_its_scenario(daraja, token, hooks, scenario, phone, path):
    try:
        if path == STK_PUSH_PATH:
            push(daraja, token, hooks, phone=phone)
        else:
            pay_out(daraja, token, hooks, phone=phone, timeout=0.5)
    except requests.Timeout:
        pass  # accepted_no_response never answers
    assert daraja.simulator.requests(path)[-1]["scenario"] == scenario


def test_magic_phone_table_matches_the_simulator(daraja):
    documented = {phone: name for name, phone, _ in MAGIC_PHONES}
    assert documented == {phone: s.name for phone, s in simulator.MAGIC_PHONES.items()}


def test_any_other_phone_succeeds(daraja, token, hooks):
    push(daraja, token, hooks, phone="254799999999")
    assert hooks.wait("stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


# ============================================================================================
# Delivery scenarios
# ============================================================================================


def test_callback_dropped_moves_money_but_sends_nothing(daraja, token, hooks):
    arm_over_http(daraja, "callback_dropped")
    checkout_id = push(daraja, token, hooks).json()["CheckoutRequestID"]
    assert final_stk_query(daraja, token, checkout_id)["ResultCode"] == "0"
    time.sleep(QUIET_SECONDS)
    assert hooks.received("stk") == []
    assert [entry["checkout_request_id"] for entry in daraja.simulator.ledger()] == [checkout_id]


def test_callback_dropped_payout_still_shows_completed_in_transaction_status(daraja, token, hooks):
    arm_over_http(daraja, "callback_dropped")
    pay_out(daraja, token, hooks, originator_id="b2c-dropped")
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-dropped")
    assert parameters(result)["TransactionStatus"] == "Completed"
    assert hooks.received("result") == []


def test_callback_twice_delivers_the_same_body_twice(daraja, token, hooks):
    arm_over_http(daraja, "callback_twice")
    pay_out(daraja, token, hooks)
    first, second = hooks.wait("result", count=2)
    assert first == second
    assert len(daraja.simulator.ledger()) == 1


def test_callback_delayed_arrives_after_the_stk_query_already_answers(daraja, token, hooks):
    arm_over_http(daraja, "callback_delayed")
    checkout_id = push(daraja, token, hooks).json()["CheckoutRequestID"]
    assert final_stk_query(daraja, token, checkout_id)["ResultCode"] == "0"
    assert hooks.received("stk") == []
    callback = hooks.wait("stk", timeout=3)[0]
    assert callback["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id


def test_callback_delayed_payout_result_comes_after_transaction_status(daraja, token, hooks):
    arm_over_http(daraja, "callback_delayed", path=B2C_V3_PATH)
    pay_out(daraja, token, hooks, originator_id="b2c-late")
    status = query_status(daraja, token, hooks, OriginalConversationID="b2c-late")
    assert parameters(status)["TransactionStatus"] == "Completed"
    assert hooks.received("result") == []
    assert hooks.wait("result", timeout=3)[0]["Result"]["ResultCode"] == 0


def test_accepted_no_response_pays_and_calls_back_but_the_client_times_out(daraja, token, hooks):
    arm_over_http(daraja, "accepted_no_response")
    with pytest.raises(requests.Timeout):
        pay_out(daraja, token, hooks, originator_id="b2c-lost-answer", timeout=0.3)
    assert hooks.wait("result")[0]["Result"]["ResultCode"] == 0
    assert [e["originator_conversation_id"] for e in daraja.simulator.ledger()] == [
        "b2c-lost-answer"
    ]
    (record,) = daraja.simulator.requests(B2C_V3_PATH)
    assert (record["status"], record["scenario"]) == (None, "accepted_no_response")


def test_accepted_no_response_closes_the_connection_after_hang_seconds(daraja, token, hooks):
    arm_over_http(daraja, "accepted_no_response")
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        push(daraja, token, hooks)
    assert 0.9 <= time.monotonic() - started < 3
    assert len(daraja.simulator.ledger()) == 1


def test_slow_answer_processes_and_answers_after_slow_answer_seconds(start_simulator, hooks):
    slow = start_simulator(slow_answer_seconds=1.0)
    token = fetch_token(slow.base_url)
    arm_over_http(slow, "slow_answer")
    started = time.monotonic()
    answer = push(slow, token, hooks)
    assert 1.0 <= time.monotonic() - started < 3
    assert answer.status_code == 200
    assert answer.json()["ResponseCode"] == "0"
    assert hooks.wait("stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0
    (record,) = slow.simulator.requests(STK_PUSH_PATH)
    assert (record["status"], record["scenario"]) == (200, "slow_answer")


def test_accepted_no_response_then_a_resend_is_a_duplicate(daraja, token, hooks):
    arm_over_http(daraja, "accepted_no_response")
    with pytest.raises(requests.Timeout):
        pay_out(daraja, token, hooks, originator_id="b2c-trap", timeout=0.3)
    again = pay_out(daraja, token, hooks, originator_id="b2c-trap")
    assert error_of(again)[1] == "500.002.1001"
    assert len(daraja.simulator.ledger()) == 1


def test_server_error_before_accept_processes_nothing(daraja, token, hooks):
    arm_over_http(daraja, "server_error_before_accept")
    answer = pay_out(daraja, token, hooks, originator_id="b2c-5xx")
    assert error_of(answer) == (500, "500.003.1001", "Internal Server Error")
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-5xx")
    assert (result["ResultCode"], result["ResultDesc"]) == (
        404,
        "The transaction could not be found.",
    )
    assert hooks.received("result") == []
    assert daraja.simulator.ledger() == []


def test_server_error_before_accept_leaves_the_originator_id_unused(daraja, token, hooks):
    arm_over_http(daraja, "server_error_before_accept")
    assert pay_out(daraja, token, hooks, originator_id="b2c-retry").status_code == 500
    assert pay_out(daraja, token, hooks, originator_id="b2c-retry").status_code == 200


def test_spike_arrest_is_500_003_02_and_processes_nothing(daraja, token, hooks):
    arm_over_http(daraja, "spike_arrest")
    answer = push(daraja, token, hooks)
    assert error_of(answer) == (500, "500.003.02", "Spike Arrest Violation")
    time.sleep(QUIET_SECONDS)
    assert hooks.received("stk") == []
    assert daraja.simulator.ledger() == []


def test_spike_arrest_armed_on_the_oauth_path_hits_the_token_call(daraja):
    arm_over_http(daraja, "spike_arrest", path=OAUTH_PATH)
    with pytest.raises(requests.HTTPError):
        fetch_token(daraja.base_url)
    assert fetch_token(daraja.base_url)


def test_queue_timeout_hits_the_timeout_url_then_the_real_result(daraja, token, hooks):
    arm_over_http(daraja, "queue_timeout")
    pay_out(daraja, token, hooks, originator_id="b2c-queued")
    timeout = hooks.wait("timeout")[0]["Result"]
    assert (timeout["ResultType"], timeout["ResultCode"]) == (1, 1)
    assert timeout["ResultDesc"] == "The service request timed out."
    assert timeout["OriginatorConversationID"] == "b2c-queued"
    assert hooks.received("result") == []
    assert hooks.wait("result", timeout=3)[0]["Result"]["ResultCode"] == 0
    assert len(daraja.simulator.ledger()) == 1


def test_queue_timeout_never_sends_no_result_and_moves_no_money(daraja, token, hooks):
    arm_over_http(daraja, "queue_timeout_never")
    pay_out(daraja, token, hooks, originator_id="b2c-vanished")
    assert hooks.wait("timeout")[0]["Result"]["ResultType"] == 1
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-vanished")
    assert result["ResultCode"] == 404
    assert daraja.simulator.dispatcher.pending() == 0
    assert hooks.received("result") == []
    assert daraja.simulator.ledger() == []


def test_token_expiry_revokes_every_token_until_a_new_one_is_fetched(start_simulator, hooks):
    daraja = start_simulator(new_token_revokes_old=False)
    token, other_token = fetch_token(daraja.base_url), fetch_token(daraja.base_url)
    assert push(daraja, token, hooks).status_code == 200
    arm_over_http(daraja, "token_expiry")
    assert error_of(push(daraja, token, hooks))[1] == "404.001.03"
    assert error_of(push(daraja, other_token, hooks))[1] == "404.001.03"
    assert push(daraja, fetch_token(daraja.base_url), hooks).status_code == 200
    statuses = [r["status"] for r in daraja.simulator.requests(STK_PUSH_PATH)]
    assert statuses == [200, 404, 404, 200]


def test_token_expiry_magic_phone_fires_once_so_a_refresh_and_retry_succeeds(daraja, token, hooks):
    assert error_of(pay_out(daraja, token, hooks, phone="254733000004"))[1] == "404.001.03"
    fresh = fetch_token(daraja.base_url)
    assert pay_out(daraja, fresh, hooks, phone="254733000004").status_code == 200


def test_amount_mismatch_stk_customer_pays_one_shilling_less(daraja, token, hooks):
    arm_over_http(daraja, "amount_mismatch")
    push(daraja, token, hooks, amount=150)
    assert stk_items(hooks.wait("stk")[0])["Amount"] == 149.0
    (entry,) = poll(daraja.simulator.ledger)
    assert (entry["amount"], entry["requested_amount"]) == (149, 150)


def test_amount_mismatch_payout_reports_the_configured_amount(start_simulator, hooks):
    running = start_simulator(mismatched_amount=450)
    token = fetch_token(running.base_url)
    running.simulator.arm("amount_mismatch")
    pay_out(running, token, hooks, amount=500, originator_id="b2c-mismatch")
    assert parameters(hooks.wait("result")[0]["Result"])["TransactionAmount"] == 450
    status = query_status(running, token, hooks, OriginalConversationID="b2c-mismatch")
    assert parameters(status)["Amount"] == 450


# ============================================================================================
# Arming scenarios
# ============================================================================================


def test_armed_scenario_applies_to_the_next_n_matching_requests(daraja, token, hooks):
    arm_over_http(daraja, "spike_arrest", times=2)
    statuses = [push(daraja, token, hooks).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_armed_scenario_with_a_phone_filter_skips_other_phones(daraja, token, hooks):
    arm_over_http(daraja, "spike_arrest", phone="254712000111")
    assert push(daraja, token, hooks, phone="254712000222").status_code == 200
    assert push(daraja, token, hooks, phone="254712000111").status_code == 500


def test_armed_scenario_with_a_path_filter_skips_other_paths(daraja, token, hooks):
    arm_over_http(daraja, "spike_arrest", path=B2C_V3_PATH)
    assert push(daraja, token, hooks).status_code == 200
    assert pay_out(daraja, token, hooks).status_code == 500


def test_armed_scenario_wins_over_a_magic_phone(daraja, token, hooks):
    arm_over_http(daraja, "success")
    push(daraja, token, hooks, phone="254700001032")
    assert hooks.wait("stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


def test_armed_scenario_waits_for_a_request_it_applies_to(daraja, token, hooks):
    arm_over_http(daraja, "stk_cancelled")
    pay_out(daraja, token, hooks)
    assert hooks.wait("result")[0]["Result"]["ResultCode"] == 0
    push(daraja, token, hooks)
    assert hooks.wait("stk")[0]["Body"]["stkCallback"]["ResultCode"] == 1032


def test_armed_scenario_is_not_used_up_by_an_invalid_request(daraja, token, hooks):
    arm_over_http(daraja, "stk_cancelled")
    assert push(daraja, token, hooks, Amount=10.5).status_code == 400
    push(daraja, token, hooks)
    assert hooks.wait("stk")[0]["Body"]["stkCallback"]["ResultCode"] == 1032


@pytest.mark.parametrize(
    "request_body",
    [{"scenario": "no_such_thing"}, {"scenario": "success", "times": 0}, {"times": 1}],
)
def test_arming_nonsense_is_rejected_with_a_message(daraja, request_body):
    answer = requests.post(daraja.base_url + "/simulator/scenarios", json=request_body, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]


def test_deleting_scenarios_disarms_them(daraja, token, hooks):
    arm_over_http(daraja, "spike_arrest", times=5)
    listed = requests.get(daraja.base_url + "/simulator/scenarios", timeout=5).json()
    assert [a["scenario"] for a in listed["armed"]] == ["spike_arrest"]
    answer = requests.delete(daraja.base_url + "/simulator/scenarios", timeout=5)
    assert answer.json() == {"cleared": 1}
    assert push(daraja, token, hooks).status_code == 200


def test_arm_in_process_matches_arming_over_http(daraja, token, hooks):
    daraja.simulator.arm("spike_arrest", times=1, path=STK_PUSH_PATH)
    assert push(daraja, token, hooks).status_code == 500


# ============================================================================================
# Transaction Status and Account Balance
# ============================================================================================


def test_transaction_status_of_a_completed_payout(daraja, token, hooks):
    pay_out(daraja, token, hooks, amount=500, originator_id="b2c-done")
    receipt = hooks.wait("result")[0]["Result"]["TransactionID"]
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-done")
    assert result["ResultCode"] == 0
    values = parameters(result)
    assert values["TransactionStatus"] == "Completed"
    assert (values["ReceiptNo"], values["Amount"]) == (receipt, 500)
    assert values["OriginatorConversationID"] == "b2c-done"
    assert values["CreditPartyName"].startswith(f"{SANDBOX_PHONE} - ")
    assert values["DebitPartyCharges"] == "Fee For B2C Payment|KES|5.00"
    assert values["ReasonType"] == "Business Payment to Customer via API"
    assert {"Key": "TransactionReason"} in result["ResultParameters"]["ResultParameter"]
    assert result["ReferenceData"]["ReferenceItem"] == {"Key": "Occasion", "Value": "Reconcile"}


def test_transaction_status_by_receipt_finds_the_payout(daraja, token, hooks):
    pay_out(daraja, token, hooks, originator_id="b2c-by-receipt")
    receipt = hooks.wait("result")[0]["Result"]["TransactionID"]
    result = query_status(daraja, token, hooks, TransactionID=receipt)
    assert parameters(result)["OriginatorConversationID"] == "b2c-by-receipt"


def test_transaction_status_of_a_paid_stk_push(daraja, token, hooks):
    checkout_id = push(daraja, token, hooks, amount=150).json()["CheckoutRequestID"]
    receipt = stk_items(hooks.wait("stk")[0])["MpesaReceiptNumber"]
    result = query_status(daraja, token, hooks, OriginalConversationID=checkout_id)
    values = parameters(result)
    assert (values["TransactionStatus"], values["ReceiptNo"], values["Amount"]) == (
        "Completed",
        receipt,
        150,
    )


def test_transaction_status_of_a_failed_payout_states_it_declined_and_why(daraja, token, hooks):
    arm_over_http(daraja, "b2c_credential_locked")
    pay_out(daraja, token, hooks, originator_id="b2c-locked")
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-locked")
    assert result["ResultCode"] == 0
    values = parameters(result)
    assert values["TransactionStatus"] == "Declined"
    assert values["TransactionReason"] == "The security credential is locked."
    assert "ReceiptNo" not in values


@pytest.mark.parametrize(
    ("scenario", "code"), [("status_initiator_invalid", 2001), ("status_without_details", 0)]
)
def test_status_scenarios_answer_about_the_query_not_the_transaction(
    daraja, token, hooks, scenario, code
):
    pay_out(daraja, token, hooks, originator_id="b2c-asked")
    hooks.wait("result")
    daraja.simulator.arm(scenario, path=STATUS_PATH)
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-asked")
    assert result["ResultCode"] == code
    assert "ResultParameters" not in result


def test_a_duplicate_originator_id_answer_can_hide_a_processed_payout(daraja, token, hooks):
    answer = pay_out(daraja, token, hooks, phone="254733000006", originator_id="b2c-dup")
    assert error_of(answer) == (500, "500.002.1001", "Duplicate OriginatorConversationID.")
    (paid,) = daraja.simulator.ledger()
    assert paid["originator_conversation_id"] == "b2c-dup"


def test_held_callbacks_wait_to_be_delivered_in_any_order_and_again(hooks):
    config = simulator.SimulatorConfig(hold_callbacks=True, callback_delay_seconds=0)
    with simulator.start(config=config) as held:
        token = fetch_token(held.base_url)
        pay_out(held, token, hooks, originator_id="b2c-first")
        pay_out(held, token, hooks, originator_id="b2c-second")
        assert hooks.received("result") == []
        listed = held.simulator.held()
        assert [entry["subject"] for entry in listed] == ["b2c-first", "b2c-second"]
        for index in (1, 0, 1):
            assert held.simulator.deliver(index)["status"] == 200
        bodies = hooks.wait("result", count=3)
    ids = [body["Result"]["OriginatorConversationID"] for body in bodies]
    assert ids == ["b2c-second", "b2c-first", "b2c-second"]


def test_transaction_status_of_a_never_received_request_is_404(daraja, token, hooks):
    result = query_status(daraja, token, hooks, OriginalConversationID="b2c-never-sent")
    assert (result["ResultType"], result["ResultCode"]) == (0, 404)
    assert result["ResultDesc"] == "The transaction could not be found."
    assert "ResultParameters" not in result


def test_transaction_status_needs_a_transaction_or_conversation_id(daraja, token, hooks):
    body = status_body(hooks.url("status"), hooks.url("timeout"))
    answer = post(daraja.base_url, STATUS_PATH, token, body)
    assert error_of(answer) == (400, "400.002.02", "Bad Request - Invalid TransactionID")


def test_account_balance_result_has_string_codes_and_reflects_payouts(daraja, token, hooks):
    pay_out(daraja, token, hooks, amount=500)
    hooks.wait("result")
    body = balance_body(hooks.url("balance"), hooks.url("timeout"))
    accepted = post(daraja.base_url, BALANCE_PATH, token, body)
    assert accepted.json()["ResponseCode"] == "0"
    result = hooks.wait("balance")[0]["Result"]
    assert (result["ResultType"], result["ResultCode"]) == ("0", "0")
    values = parameters(result)
    accounts = dict(entry.split("|", 1) for entry in values["AccountBalance"].split("&"))
    assert accounts == {
        "Working Account": "KES|120000.00|120000.00|0.00|0.00",
        "Utility Account": "KES|499500.00|499500.00|0.00|0.00",
        "Charges Paid Account": "KES|-5.00|-5.00|0.00|0.00",
    }
    assert re.fullmatch(r"\d{14}", values["BOCompletedTime"])


# ============================================================================================
# Shape variants
# ============================================================================================


def test_codes_as_strings_variant(start_simulator, hooks):
    running = start_simulator(codes_as_strings=True)
    token = fetch_token(running.base_url)
    push(running, token, hooks)
    pay_out(running, token, hooks)
    assert hooks.wait("stk")[0]["Body"]["stkCallback"]["ResultCode"] == "0"
    result = hooks.wait("result")[0]["Result"]
    assert (result["ResultType"], result["ResultCode"]) == ("0", "0")


def test_single_object_result_parameter_variant(start_simulator, hooks):
    running = start_simulator(result_parameter_as_object=True)
    pay_out(running, fetch_token(running.base_url), hooks, amount=700)
    result = hooks.wait("result")[0]["Result"]
    assert result["ResultParameters"]["ResultParameter"] == {
        "Key": "TransactionAmount",
        "Value": 700,
    }


def test_stk_callback_without_the_balance_item_variant(start_simulator, hooks):
    running = start_simulator(include_balance_item=False)
    push(running, fetch_token(running.base_url), hooks)
    assert "Balance" not in stk_items(hooks.wait("stk")[0])


# ============================================================================================
# Records and control routes
# ============================================================================================


def test_requests_record_path_body_status_and_no_token(daraja, token, hooks):
    push(daraja, token, hooks, amount=77)
    pay_out(daraja, token, hooks)
    answer = requests.get(
        daraja.base_url + "/simulator/requests", params={"path": STK_PUSH_PATH}, timeout=5
    )
    (record,) = answer.json()["requests"]
    assert (record["method"], record["path"], record["status"]) == ("POST", STK_PUSH_PATH, 200)
    assert record["body"]["Amount"] == 77
    assert record["response"]["ResponseCode"] == "0"
    assert record["headers"]["Authorization"] == "Bearer <redacted>"
    assert token not in json.dumps(record)


def test_requests_record_rejected_requests_too(daraja, token, hooks):
    push(daraja, token, hooks, Amount=10.5)
    (record,) = daraja.simulator.requests(STK_PUSH_PATH)
    assert record["status"] == 400
    assert record["response"]["errorCode"] == "400.002.02"


def test_ledger_lists_only_money_that_moved(daraja, token, hooks):
    pay_out(daraja, token, hooks, amount=500, originator_id="b2c-paid")
    pay_out(daraja, token, hooks, phone="254711000001", originator_id="b2c-broke")
    results = [body["Result"] for body in hooks.wait("result", count=2)]
    (receipt,) = [r["TransactionID"] for r in results if r["ResultCode"] == 0]
    ledger = requests.get(daraja.base_url + "/simulator/ledger", timeout=5).json()["ledger"]
    (entry,) = ledger
    assert entry["kind"] == "b2c"
    assert (entry["originator_conversation_id"], entry["amount"]) == ("b2c-paid", 500)
    assert (entry["phone"], entry["receipt"]) == (SANDBOX_PHONE, receipt)
    assert entry["time"]


def test_stk_payment_enters_the_ledger_when_the_customer_answers(daraja, token, hooks):
    checkout_id = push(daraja, token, hooks, amount=150).json()["CheckoutRequestID"]
    assert daraja.simulator.ledger() == []
    (entry,) = poll(daraja.simulator.ledger)
    assert (entry["kind"], entry["checkout_request_id"], entry["amount"]) == (
        "stk",
        checkout_id,
        150,
    )


def test_callbacks_log_records_url_body_and_receiver_status(daraja, token, hooks):
    pay_out(daraja, token, hooks)
    body = hooks.wait("result")[0]
    (sent,) = poll(
        lambda: requests.get(daraja.base_url + "/simulator/callbacks", timeout=5).json()[
            "callbacks"
        ]
    )
    assert (sent["url"], sent["body"], sent["status"]) == (hooks.url("result"), body, 200)


def test_callback_to_an_unreachable_url_is_recorded_not_raised(daraja, token):
    body = b2c_body("http://127.0.0.1:9/result", "http://127.0.0.1:9/timeout", "b2c-nowhere")
    post(daraja.base_url, B2C_V3_PATH, token, body)
    (sent,) = poll(daraja.simulator.callbacks)
    assert sent["status"] is None and "ConnectionError" in sent["error"]


def test_reset_clears_requests_ledger_callbacks_and_scenarios(daraja, token, hooks):
    pay_out(daraja, token, hooks, originator_id="b2c-before-reset")
    hooks.wait("result")
    arm_over_http(daraja, "spike_arrest")
    assert requests.post(daraja.base_url + "/simulator/reset", timeout=5).status_code == 200
    sim = daraja.simulator
    assert (sim.requests(), sim.ledger(), sim.callbacks(), sim.armed()) == ([], [], [], [])
    assert pay_out(daraja, token, hooks, originator_id="b2c-before-reset").status_code == 200


def test_unknown_path_answers_daraja_404_body(daraja, token):
    answer = post(daraja.base_url, "/mpesa/stkpush/v9/processrequest", token, {})
    assert error_of(answer) == (404, "404.001.01", "Resource not found")


# ============================================================================================
# Serving
# ============================================================================================


def test_stop_returns_promptly_while_a_connection_is_held(hooks):
    running = simulator.start(config=SimulatorConfig(**{**FAST, "hang_seconds": 30}))
    token = fetch_token(running.base_url)
    running.simulator.arm("accepted_no_response")
    with pytest.raises(requests.Timeout):
        pay_out(running, token, hooks, timeout=0.3)
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 3


def test_stop_is_prompt_with_callbacks_still_queued(hooks):
    with simulator.start(config=SimulatorConfig(callback_delay_seconds=30)) as running:
        pay_out(running, fetch_token(running.base_url), hooks)
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert running.simulator.dispatcher.pending() == 0


def test_command_line_serves_the_simulator(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "simulator.py", "--port", "0", "--callback-delay", "0.1"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        base_url = re.search(r"http://[\d.]+:\d+", banner).group(0)
        assert fetch_token(base_url)
    finally:
        process.terminate()
        process.wait(timeout=5)


# ============================================================================================
# Documentation
# ============================================================================================


@pytest.mark.parametrize("scenario", [s.name for s in simulator.SCENARIOS])
def test_every_scenario_is_documented(scenario):
    docs = (PROJECT_DIR / "docs" / "simulator.md").read_text()
    magic = simulator.SCENARIOS_BY_NAME[scenario].magic_phone
    assert f"`{scenario}`" in docs
    assert scenario in simulator.__doc__
    if magic:
        assert magic in docs and magic in simulator.__doc__
