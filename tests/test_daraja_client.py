"""The Daraja client against the simulator over real HTTP: tokens, every API, and how each
failure is classified (a money-moving request is never sent twice)."""

import base64
import datetime as dt
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

import simulator
from mpesa_service.daraja import (
    DarajaAccount,
    DarajaClient,
    DarajaRejected,
    DarajaUnavailable,
    NotSent,
    OutcomeUnknown,
    security_credential,
    stk_password,
)
from mpesa_service.storage import make_engine
from mpesa_service.token_store import DatabaseTokenStore
from tests.sim_support import CallbackSink, credential_for, fetch_token, self_signed_certificate

CONFIG = simulator.SimulatorConfig()
ACCOUNT = DarajaAccount(
    consumer_key=CONFIG.consumer_key,
    consumer_secret=CONFIG.consumer_secret,
    shortcode=CONFIG.shortcode,
    passkey=CONFIG.passkey,
    b2c_shortcode=CONFIG.b2c_shortcode,
    initiator_name=CONFIG.initiator_name,
    security_credential=credential_for(),
)
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"


@pytest.fixture
def sink():
    receiver = CallbackSink()
    yield receiver
    receiver.stop()


def running(**config):
    options = {"callback_delay_seconds": 0.02, "stk_answer_delay_seconds": 0.05, **config}
    return simulator.start(config=simulator.SimulatorConfig(**options))


@pytest.fixture
def daraja():
    with running() as sim:
        yield sim


def client_for(sim, timeout=5, account=ACCOUNT):
    return DarajaClient(sim.base_url, account, timeout=timeout)


def oauth_calls(sim) -> int:
    return len(sim.simulator.requests("/oauth/v1/generate"))


def pay(client, sink, ocid="b2c-1", phone="254712345678", amount=500):
    return client.b2c_payment(
        originator_conversation_id=ocid,
        phone=phone,
        amount=amount,
        command_id="BusinessPayment",
        remarks="Weekly payout",
        result_url=sink.url("/result"),
        queue_timeout_url=sink.url("/timeout"),
        occasion="weekly",
    )


# --- OAuth ------------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(daraja):
    client = client_for(daraja)
    assert client.access_token() == client.access_token()
    assert oauth_calls(daraja) == 1


def test_expires_in_given_as_a_string_is_accepted():
    with running(expires_in_as_string=True) as sim:
        assert client_for(sim).access_token()


def test_token_is_refreshed_a_minute_before_it_expires():
    with running(token_ttl_seconds=60.5) as sim:
        client = client_for(sim)
        first = client.access_token()
        threading.Event().wait(0.6)
        assert client.access_token() != first
        assert oauth_calls(sim) == 2


def test_threads_share_one_token_fetch(daraja):
    client = client_for(daraja)
    threads = [threading.Thread(target=client.access_token) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert oauth_calls(daraja) == 1


def shared_clients(sim, database_url, count=2):
    """Clients as separate processes of one deployment would have: each its own memory, one
    database between them."""
    engine = make_engine(database_url)
    return [
        DarajaClient(
            sim.base_url,
            ACCOUNT,
            timeout=5,
            token_store=DatabaseTokenStore(engine, sim.base_url, ACCOUNT.consumer_key),
        )
        for _ in range(count)
    ]


def test_processes_of_one_deployment_share_one_token(daraja, database_url):
    first, second = shared_clients(daraja, database_url)
    assert first.access_token() == second.access_token()
    assert oauth_calls(daraja) == 1


def test_a_token_revoked_by_another_process_is_taken_from_the_store_not_fetched(
    daraja, database_url, sink
):
    # Daraja revokes an app's older tokens when it issues a new one (the simulator's default).
    first, second = shared_clients(daraja, database_url)
    revoked = first.access_token()
    first._tokens.invalidate(revoked)  # as when Daraja refused it
    renewed = first.access_token()
    assert renewed != revoked and oauth_calls(daraja) == 2
    # `second` has no token in memory yet; it takes the renewed one and pays with it.
    assert second.access_token() == renewed
    assert pay(second, sink)["ResponseCode"] == "0"
    assert oauth_calls(daraja) == 2


def test_two_processes_keep_paying_while_daraja_revokes_older_tokens(daraja, database_url, sink):
    first, second = shared_clients(daraja, database_url)
    for number in range(6):
        client = (first, second)[number % 2]
        assert pay(client, sink, ocid=f"b2c-{number}")["ResponseCode"] == "0"
        if number == 2:  # someone else fetches a token for the app: both hold a revoked one
            fetch_token(daraja.base_url)
    assert len(daraja.simulator.requests(B2C_PATH)) == 6 + 2  # at most one retry each
    assert oauth_calls(daraja) == 3  # the first, the other party's, one renewal


def test_wrong_secret_is_a_rejection_naming_the_credentials(daraja):
    account = DarajaAccount(**{**ACCOUNT.__dict__, "consumer_secret": "wrong"})
    with pytest.raises(DarajaRejected, match="invalid consumer key or secret"):
        client_for(daraja, account=account).access_token()


def test_revoked_token_is_refreshed_and_the_query_retried_once(daraja):
    client = client_for(daraja)
    client.access_token()
    daraja.simulator.arm("token_expiry", path="/mpesa/stkpushquery/v1/query")
    with pytest.raises(DarajaRejected) as unknown_checkout:
        client.stk_query("ws_CO_none")
    assert not unknown_checkout.value.invalid_token
    assert oauth_calls(daraja) == 2


def test_revoked_token_on_a_payout_is_retried_because_it_proves_nothing_was_sent(daraja, sink):
    client = client_for(daraja)
    client.access_token()
    daraja.simulator.arm("token_expiry", path=B2C_PATH)
    assert pay(client, sink)["ResponseCode"] == "0"
    assert len(daraja.simulator.ledger()) == 1


# --- STK --------------------------------------------------------------------------------------


def test_stk_push_is_accepted_and_the_callback_arrives(daraja, sink):
    client = client_for(daraja)
    answer = client.stk_push(
        phone="254712345678",
        amount=150,
        callback_url=sink.url("/stk"),
        account_reference="INV10023",
        description="Top up",
    )
    (callback,) = sink.wait_for("/stk")
    assert callback["Body"]["stkCallback"]["CheckoutRequestID"] == answer["CheckoutRequestID"]
    (sent,) = daraja.simulator.requests("/mpesa/stkpush/v1/processrequest")
    body = sent["body"]
    assert body["Password"] == stk_password(CONFIG.shortcode, CONFIG.passkey, body["Timestamp"])


def test_stk_timestamp_is_nairobi_time(daraja, sink):
    client_for(daraja).stk_push(
        phone="254712345678",
        amount=150,
        callback_url=sink.url("/s"),
        account_reference="A1",
        description="x",
    )
    (sent,) = daraja.simulator.requests("/mpesa/stkpush/v1/processrequest")
    stamp = dt.datetime.strptime(sent["body"]["Timestamp"], "%Y%m%d%H%M%S")
    nairobi_now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    assert abs((nairobi_now.replace(tzinfo=None) - stamp).total_seconds()) < 60


def test_stk_query_says_still_processing_then_gives_the_result(sink):
    with running(stk_answer_delay_seconds=1.0) as sim:
        client = client_for(sim)
        answer = client.stk_push(
            phone="254700001032",
            amount=10,
            callback_url=sink.url("/s"),
            account_reference="A1",
            description="x",
        )
        with pytest.raises(DarajaRejected) as pending:
            client.stk_query(answer["CheckoutRequestID"])
        assert pending.value.still_processing
        sink.wait_for("/s")
        assert str(client.stk_query(answer["CheckoutRequestID"])["ResultCode"]) == "1032"


def test_invalid_phone_is_a_rejection_that_proves_nothing_was_sent(daraja, sink):
    with pytest.raises(DarajaRejected) as rejected:
        client_for(daraja).stk_push(
            phone="0712345678",
            amount=10,
            callback_url=sink.url("/s"),
            account_reference="A1",
            description="x",
        )
    assert rejected.value.code == "400.002.02"
    assert rejected.value.proves_not_accepted


# --- B2C: one send, three outcomes ------------------------------------------------------------


def test_b2c_is_accepted_and_its_result_arrives(daraja, sink):
    answer = pay(client_for(daraja), sink, ocid="b2c-ok")
    assert answer["OriginatorConversationID"] == "b2c-ok"
    (result,) = sink.wait_for("/result")
    assert result["Result"]["OriginatorConversationID"] == "b2c-ok"
    (sent,) = daraja.simulator.requests(B2C_PATH)
    assert sent["body"]["Occassion"] == "weekly"


def test_b2c_timeout_after_acceptance_is_unknown_and_sent_once(sink):
    with running(hang_seconds=3) as sim:
        with pytest.raises(OutcomeUnknown):
            pay(client_for(sim, timeout=1), sink, phone="254733000001")
        assert len(sim.simulator.requests(B2C_PATH)) == 1
        assert len(sim.simulator.ledger()) == 1  # it was paid, once


def test_b2c_server_error_is_unknown_and_sent_once(daraja, sink):
    with pytest.raises(OutcomeUnknown):
        pay(client_for(daraja), sink, phone="254733000002")
    assert len(daraja.simulator.requests(B2C_PATH)) == 1


def test_b2c_spike_arrest_is_a_rejection_that_proves_nothing_was_sent(daraja, sink):
    with pytest.raises(DarajaRejected) as rejected:
        pay(client_for(daraja), sink, phone="254733000003")
    assert (rejected.value.code, rejected.value.proves_not_accepted) == ("500.003.02", True)
    assert len(daraja.simulator.requests(B2C_PATH)) == 1


def test_duplicate_originator_conversation_id_is_unknown_not_failed(daraja, sink):
    client = client_for(daraja)
    pay(client, sink, ocid="b2c-dup")
    with pytest.raises(OutcomeUnknown, match="500.002.1001"):
        pay(client, sink, ocid="b2c-dup")


def test_refused_connection_is_not_sent(sink):
    sim = running()
    client = client_for(sim)
    client.access_token()
    sim.stop()  # Daraja is gone: the connection is refused before a byte is sent
    with pytest.raises(NotSent):
        pay(client, sink)


def test_query_transport_failure_is_unavailable_not_unknown():
    client = DarajaClient("http://127.0.0.1:9", ACCOUNT, timeout=1)
    with pytest.raises(DarajaUnavailable):
        client.access_token()


# --- queries whose answers arrive as callbacks --------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("254712345678", ("0", "Completed")),
        ("254711002001", ("0", "Declined")),
    ],
)
def test_transaction_status_reflects_what_happened(daraja, sink, phone, expected):
    client = client_for(daraja)
    pay(client, sink, ocid="b2c-ts", phone=phone)
    sink.wait_for("/result")
    client.transaction_status(
        original_conversation_id="b2c-ts",
        result_url=sink.url("/ts"),
        queue_timeout_url=sink.url("/ts-timeout"),
    )
    (answer,) = sink.wait_for("/ts")
    parameters = {
        item["Key"]: item.get("Value")
        for item in answer["Result"].get("ResultParameters", {}).get("ResultParameter", [])
    }
    code, status = expected
    assert str(answer["Result"]["ResultCode"]) == code
    assert parameters.get("TransactionStatus") == status


def test_transaction_status_of_a_request_that_never_arrived(daraja, sink):
    client_for(daraja).transaction_status(
        original_conversation_id="b2c-never",
        result_url=sink.url("/ts"),
        queue_timeout_url=sink.url("/ts-timeout"),
    )
    (answer,) = sink.wait_for("/ts")
    assert str(answer["Result"]["ResultCode"]) == "404"


def test_account_balance_answer_arrives(daraja, sink):
    client_for(daraja).account_balance(
        result_url=sink.url("/bal"), queue_timeout_url=sink.url("/bal-timeout")
    )
    (answer,) = sink.wait_for("/bal")
    assert "Utility Account" in str(answer["Result"]["ResultParameters"])


# --- SecurityCredential -------------------------------------------------------------------------


def certificate_pair(tmp_path, encoding):
    key, certificate = self_signed_certificate("sandbox.test", days=1)
    path = tmp_path / "certificate.cer"
    path.write_bytes(certificate.public_bytes(encoding))
    return key, path


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_security_credential_decrypts_to_the_password(tmp_path, encoding):
    key, path = certificate_pair(tmp_path, encoding)
    credential = security_credential("Safaricom999!*!", path)
    plain = key.decrypt(base64.b64decode(credential), padding.PKCS1v15())
    assert plain == b"Safaricom999!*!"
    assert security_credential("Safaricom999!*!", path) != credential  # random padding
