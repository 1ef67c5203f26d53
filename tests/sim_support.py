"""Test support for talking to the Daraja simulator over real HTTP.

`CallbackSink` is a real callback receiver (Bottle on waitress, port 0) that records every
JSON body POSTed to it, by path. The body builders return valid Daraja requests that tests
then spoil one field at a time. Nothing here is a Daraja client: tests call `requests` directly.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import bottle
import requests

import simulator
from mpesa_service.daraja import security_credential

SANDBOX_PHONE = "254708374149"


class CallbackSink:
    """Records every POSTed JSON body by path and answers like a well-behaved receiver."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._bodies: dict[str, list[dict]] = defaultdict(list)
        self._arrived = threading.Condition()
        app = bottle.Bottle()
        app.route("/<path:path>", "POST", self._receive)
        self._server = simulator.BackgroundServer(app, host, 0)
        self.base_url = self._server.base_url

    def _receive(self, path: str) -> dict:
        body = bottle.request.json
        with self._arrived:
            self._bodies["/" + path].append(body)
            self._arrived.notify_all()
        return {"ResultCode": 0, "ResultDesc": "Accepted"}

    def url(self, path: str) -> str:
        return self.base_url + path

    def received(self, path: str) -> list[dict]:
        with self._arrived:
            return list(self._bodies[path])

    def wait_for(self, path: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """The first `count` bodies POSTed to `path`; AssertionError if they do not come."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._bodies[path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = len(self._bodies[path])
                    raise AssertionError(f"{path}: expected {count} callback(s), got {got}")
                self._arrived.wait(left)
            return list(self._bodies[path][:count])

    def stop(self) -> None:
        self._server.stop()


def poll(probe, timeout: float = 5.0, interval: float = 0.02):
    """Call `probe` until it returns something truthy; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def fetch_token(base_url: str, key: str = "simulator-key", secret: str = "simulator-secret"):
    answer = requests.get(
        base_url + simulator.OAUTH_PATH,
        params={"grant_type": "client_credentials"},
        auth=(key, secret),
        timeout=5,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def post(base_url: str, path: str, token: str, body: dict, timeout: float = 5.0):
    return requests.post(
        base_url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


@functools.cache
def credential_for(password: str = simulator.SANDBOX_INITIATOR_PASSWORD) -> str:
    """A SecurityCredential the simulator can decrypt: `password` encrypted with its test
    certificate, as the service does with MPESA_CERT_PATH (one per password: the padding is
    random, any one is valid)."""
    return security_credential(password, simulator.TEST_CERTIFICATE)


def stk_credentials(config: simulator.SimulatorConfig) -> dict:
    timestamp = datetime.now(simulator.NAIROBI).strftime("%Y%m%d%H%M%S")
    password = simulator.stk_password(config.shortcode, config.passkey, timestamp)
    return {
        "BusinessShortCode": int(config.shortcode),
        "Password": password,
        "Timestamp": timestamp,
    }


def stk_push_body(
    callback_url: str, phone: str = SANDBOX_PHONE, amount: int = 150, config=None, **fields
) -> dict:
    config = config or simulator.SimulatorConfig()
    body = {
        **stk_credentials(config),
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": int(phone),
        "PartyB": int(config.shortcode),
        "PhoneNumber": int(phone),
        "CallBackURL": callback_url,
        "AccountReference": "INV10023",
        "TransactionDesc": "Order 10023",
    }
    return {**body, **fields}


def stk_query_body(checkout_request_id: str, config=None) -> dict:
    config = config or simulator.SimulatorConfig()
    return {**stk_credentials(config), "CheckoutRequestID": checkout_request_id}


def b2c_body(
    result_url: str,
    timeout_url: str,
    originator_id: str,
    phone: str = SANDBOX_PHONE,
    amount: int = 500,
    **fields,
) -> dict:
    body = {
        "OriginatorConversationID": originator_id,
        "InitiatorName": simulator.SimulatorConfig.initiator_name,
        "SecurityCredential": credential_for(),
        "CommandID": "BusinessPayment",
        "Amount": amount,
        "PartyA": 600996,
        "PartyB": int(phone),
        "Remarks": "Refund order 10023",
        "QueueTimeOutURL": timeout_url,
        "ResultURL": result_url,
        "Occassion": "Refund",
    }
    return {**body, **fields}


def status_body(result_url: str, timeout_url: str, **ids) -> dict:
    """A Transaction Status query; pass TransactionID= and/or OriginalConversationID=."""
    return {
        "Initiator": simulator.SimulatorConfig.initiator_name,
        "SecurityCredential": credential_for(),
        "CommandID": "TransactionStatusQuery",
        "PartyA": 600996,
        "IdentifierType": 4,
        "ResultURL": result_url,
        "QueueTimeOutURL": timeout_url,
        "Remarks": "Reconcile",
        "Occasion": "Reconcile",
        **ids,
    }


def balance_body(result_url: str, timeout_url: str) -> dict:
    return {
        "Initiator": simulator.SimulatorConfig.initiator_name,
        "SecurityCredential": credential_for(),
        "CommandID": "AccountBalance",
        "PartyA": 600996,
        "IdentifierType": 4,
        "Remarks": "Balance",
        "ResultURL": result_url,
        "QueueTimeOutURL": timeout_url,
    }


def parameters(result: dict) -> dict:
    """A Result's ResultParameter list (or single object) as {Key without spaces: Value}."""
    items = result.get("ResultParameters", {}).get("ResultParameter", [])
    if isinstance(items, dict):
        items = [items]
    return {item["Key"].replace(" ", ""): item.get("Value") for item in items}


def stk_items(callback: dict) -> dict:
    items = callback["Body"]["stkCallback"].get("CallbackMetadata", {}).get("Item", [])
    return {item["Name"]: item.get("Value") for item in items}


def self_signed_certificate(common_name: str, days: int = 365, alternative_names=()):
    """A fresh RSA-2048 key and a certificate for it that nobody but the caller has the key of:
    (private key, x509 certificate). `alternative_names` (x509.GeneralName) make it good for
    those hosts and addresses too, as a TLS client checks."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
    )
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(alternative_names)), critical=False
        )
    return key, builder.sign(key, hashes.SHA256())
