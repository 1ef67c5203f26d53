"""Daraja client: OAuth, STK Push and Query, B2C v3, Transaction Status, Account Balance,
Reversal, C2B Register URL and Pull Transactions.

A money-moving POST is sent once: an answer that does not prove Daraja turned the request away
raises OutcomeUnknown, to be resolved by asking, never by sending again."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from recon.rules import (
    nairobi_timestamp,
)

# Money-moving POSTs (STK push, B2C) are sent once. Any answer that does not prove Daraja turned
# the request away (a timeout, a reset, a 5xx without a rejecting error code, an unreadable body)
# raises OutcomeUnknown, and the caller resolves it by asking (STK query, Transaction Status).

INVALID_TOKEN_CODES = frozenset({"404.001.03", "401.002.01", "400.003.01"})
# 5xx codes that Daraja sends only when it turned the request away before processing it.
REJECTING_5XX_CODES = frozenset({"500.001.1001", "500.003.02", "500.003.03"})
STILL_PROCESSING = "The transaction is being processed"
TOKEN_REFRESH_MARGIN_SECONDS = 60
# Pull Transactions answers success with 1000 (REFERENCE 12.3); its register may say 0.
PULL_OK_CODES = ("0", "1000")


class DarajaError(Exception):
    """Anything that went wrong talking to Daraja."""


class DarajaRejected(DarajaError):
    """Daraja answered with an error body (`errorCode`, `errorMessage`) or a non-zero
    ResponseCode: the request was turned away."""

    def __init__(self, code: str, message: str, http_status: int, request_id: str | None = None):
        super().__init__(f"Daraja error {code}: {message}")
        self.code, self.message = code, message
        self.http_status, self.request_id = http_status, request_id

    @property
    def invalid_token(self) -> bool:
        return self.code in INVALID_TOKEN_CODES

    @property
    def proves_not_accepted(self) -> bool:
        """True when the code means nothing was processed, so the request was not accepted.
        A duplicate OriginatorConversationID does not: the first request with it was."""
        family = self.code.split(".", 1)[0]
        return family in {"400", "401", "404", "405"} or self.code in REJECTING_5XX_CODES

    @property
    def still_processing(self) -> bool:
        """STK Query's answer while the customer has not finished: pending, not failed."""
        return self.code == "500.001.1001" and STILL_PROCESSING.lower() in self.message.lower()


class DarajaUnavailable(DarajaError):
    """A query could not be completed (timeout, connection error, 5xx); safe to ask again."""


class OutcomeUnknown(DarajaError):
    """A money-moving request may or may not have been accepted. Never re-send it: ask."""


class NotSent(DarajaError):
    """A money-moving request provably never reached Daraja (the connection was never made)."""


def daraja_error_fields(error: DarajaError) -> tuple[str, str]:
    """(code, message) to store for a failed call: Daraja's own for a rejection, else the
    error's class and text."""
    if isinstance(error, DarajaRejected):
        return error.code, error.message
    return type(error).__name__, str(error)


@dataclass(frozen=True)
class DarajaAccount:
    """The credentials and codes the requests are made with."""

    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    b2c_shortcode: str
    initiator_name: str = ""
    security_credential: str = ""
    stk_transaction_type: str = "CustomerPayBillOnline"
    stk_party_b: str = ""


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def security_credential(initiator_password: str, certificate_path: str | Path) -> str:
    """base64(RSA PKCS#1 v1.5 of the initiator password) with Safaricom's certificate (PEM or
    DER). The padding is random, so every call gives a different, equally valid, string."""
    data = Path(certificate_path).read_bytes()
    if b"-----BEGIN" in data:
        certificate = x509.load_pem_x509_certificate(data)
    else:
        certificate = x509.load_der_x509_certificate(data)
    encrypted = certificate.public_key().encrypt(initiator_password.encode(), padding.PKCS1v15())
    return base64.b64encode(encrypted).decode()


class TokenCache:
    """One OAuth token shared by all threads, fetched by one thread at a time and refreshed a
    minute before it expires. With a `store` (see token_store) it is shared by every process
    of the deployment too: Daraja may revoke an app's token when it issues another (REFERENCE
    1), so processes that each fetched their own would keep revoking each other's."""

    def __init__(self, fetch, store=None):
        self._fetch = fetch
        self._store = store
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._rejected: str | None = None

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.time() >= self._expires_at:
                token, expires_at = self._stored() or self._fresh()
                self._token, self._expires_at = token, expires_at - TOKEN_REFRESH_MARGIN_SECONDS
            return self._token

    def invalidate(self, token: str) -> None:
        """Daraja refused `token`: neither this process nor the store's copy is used again."""
        with self._lock:
            self._rejected = token
            if self._token == token:
                self._token = None

    def _stored(self) -> tuple[str, float] | None:
        stored = self._store.load() if self._store is not None else None
        if stored is None or stored[0] == self._rejected:
            return None
        return stored if time.time() < stored[1] - TOKEN_REFRESH_MARGIN_SECONDS else None

    def _fresh(self) -> tuple[str, float]:
        token, lifetime = self._fetch()
        expires_at = time.time() + lifetime
        if self._store is not None:
            self._store.save(token, expires_at)
        return token, expires_at


class DarajaClient:
    """Daraja's OAuth, STK push/query, B2C v3, Transaction Status and Account Balance."""

    def __init__(
        self, base_url: str, account: DarajaAccount, timeout: float = 30, token_store=None
    ):
        self.base_url = base_url.rstrip("/")
        self.account = account
        self.timeout = timeout
        self._session = requests.Session()
        self._tokens = TokenCache(self._fetch_token, token_store)

    def access_token(self) -> str:
        return self._tokens.get()

    def _fetch_token(self) -> tuple[str, float]:
        try:
            response = self._session.get(
                f"{self.base_url}/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                auth=(self.account.consumer_key, self.account.consumer_secret),
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            raise DarajaUnavailable(f"OAuth request failed: {type(error).__name__}") from None
        if response.status_code != 200:
            raise _rejection(response, default_message="invalid consumer key or secret")
        body = _json_or_none(response) or {}
        if not body.get("access_token"):
            raise DarajaUnavailable("OAuth answer has no access_token")
        return body["access_token"], float(body.get("expires_in") or 3599)

    # --- the product APIs ---------------------------------------------------------------------

    def stk_push(
        self,
        *,
        phone: str,
        amount: int,
        callback_url: str,
        account_reference: str,
        description: str,
    ) -> dict:
        """Send the PIN prompt. Returns Daraja's answer (MerchantRequestID, CheckoutRequestID)."""
        account = self.account
        timestamp = nairobi_timestamp()
        body = {
            "BusinessShortCode": account.shortcode,
            "Password": stk_password(account.shortcode, account.passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": account.stk_transaction_type,
            "Amount": amount,
            "PartyA": phone,
            "PartyB": account.stk_party_b or account.shortcode,
            "PhoneNumber": phone,
            "CallBackURL": callback_url,
            "AccountReference": account_reference,
            "TransactionDesc": description,
        }
        return self._post("/mpesa/stkpush/v1/processrequest", body, moves_money=True)

    def stk_query(self, checkout_request_id: str) -> dict:
        """The STK result so far. Raises DarajaRejected with `.still_processing` while the
        customer has not answered."""
        timestamp = nairobi_timestamp()
        body = {
            "BusinessShortCode": self.account.shortcode,
            "Password": stk_password(self.account.shortcode, self.account.passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        return self._post("/mpesa/stkpushquery/v1/query", body)

    def b2c_payment(
        self,
        *,
        originator_conversation_id: str,
        phone: str,
        amount: int,
        command_id: str,
        remarks: str,
        result_url: str,
        queue_timeout_url: str,
        occasion: str = "",
    ) -> dict:
        """Send one B2C v3 payment request with the caller's OriginatorConversationID."""
        body = {
            "OriginatorConversationID": originator_conversation_id,
            "InitiatorName": self.account.initiator_name,
            "SecurityCredential": self.account.security_credential,
            "CommandID": command_id,
            "Amount": amount,
            "PartyA": self.account.b2c_shortcode,
            "PartyB": phone,
            "Remarks": remarks,
            "QueueTimeOutURL": queue_timeout_url,
            "ResultURL": result_url,
        }
        if occasion:
            body["Occassion"] = occasion  # Daraja's own spelling in v3
        return self._post("/mpesa/b2c/v3/paymentrequest", body, moves_money=True)

    def transaction_status(
        self,
        *,
        result_url: str,
        queue_timeout_url: str,
        original_conversation_id: str | None = None,
        transaction_id: str | None = None,
        remarks: str = "Payout status check",
        party_a: str | None = None,
    ) -> dict:
        """Ask for the outcome of an earlier transaction; the answer arrives at result_url."""
        if not (original_conversation_id or transaction_id):
            raise ValueError("transaction_status needs original_conversation_id or transaction_id")
        body = {
            "Initiator": self.account.initiator_name,
            "SecurityCredential": self.account.security_credential,
            "CommandID": "TransactionStatusQuery",
            "PartyA": party_a or self.account.b2c_shortcode,
            "IdentifierType": "4",
            "ResultURL": result_url,
            "QueueTimeOutURL": queue_timeout_url,
            "Remarks": remarks,
            "Occasion": remarks,
        }
        if original_conversation_id:
            body["OriginalConversationID"] = original_conversation_id
        if transaction_id:
            body["TransactionID"] = transaction_id
        return self._post("/mpesa/transactionstatus/v1/query", body)

    def reversal(
        self,
        *,
        transaction_id: str,
        amount: int,
        remarks: str,
        result_url: str,
        queue_timeout_url: str,
        receiver_party: str | None = None,
    ) -> dict:
        """Ask M-Pesa to reverse a collection (REFERENCE 7.2): `transaction_id` is the receipt
        to reverse, `receiver_party` the shortcode that received it (the STK shortcode when not
        given). It moves money: sent once. Daraja makes the OriginatorConversationID and
        answers with it."""
        body = {
            "Initiator": self.account.initiator_name,
            "SecurityCredential": self.account.security_credential,
            "CommandID": "TransactionReversal",
            "TransactionID": transaction_id,
            "Amount": amount,
            "ReceiverParty": receiver_party or self.account.shortcode,
            "RecieverIdentifierType": "11",  # Safaricom's spelling
            "ResultURL": result_url,
            "QueueTimeOutURL": queue_timeout_url,
            "Remarks": remarks,
        }
        return self._post("/mpesa/reversal/v1/request", body, moves_money=True)

    def account_balance(self, *, result_url: str, queue_timeout_url: str) -> dict:
        """Ask for the B2C account balances; the answer arrives at result_url."""
        body = {
            "Initiator": self.account.initiator_name,
            "SecurityCredential": self.account.security_credential,
            "CommandID": "AccountBalance",
            "PartyA": self.account.b2c_shortcode,
            "IdentifierType": "4",
            "Remarks": "Balance check",
            "ResultURL": result_url,
            "QueueTimeOutURL": queue_timeout_url,
        }
        return self._post("/mpesa/accountbalance/v1/query", body)

    def c2b_register_url(
        self, *, shortcode: str, response_type: str, confirmation_url: str, validation_url: str
    ) -> dict:
        """Tell M-Pesa where to send the shortcode's C2B validations and confirmations."""
        body = {
            "ShortCode": shortcode,
            "ResponseType": response_type,
            "ConfirmationURL": confirmation_url,
            "ValidationURL": validation_url,
        }
        return self._post("/mpesa/c2b/v1/registerurl", body)

    def pull_register(self, *, shortcode: str, nominated_number: str, callback_url: str) -> dict:
        """Register the shortcode for Pull Transactions (once)."""
        body = {
            "ShortCode": shortcode,
            "RequestType": "Pull",
            "NominatedNumber": nominated_number,
            "CallBackURL": callback_url,
        }
        return self._post("/pulltransactions/v1/register", body, ok_codes=PULL_OK_CODES)

    def pull_transactions(self, *, shortcode: str, start: str, end: str, offset: int) -> dict:
        """One page of the shortcode's C2B transactions between `start` and `end`
        (YYYY-MM-DD HH:MM:SS, Nairobi), from `offset`."""
        body = {"ShortCode": shortcode, "StartDate": start, "EndDate": end, "OffSetValue": offset}
        return self._post("/pulltransactions/v1/query", body, ok_codes=PULL_OK_CODES)

    # --- transport ----------------------------------------------------------------------------

    def _post(self, path: str, body: dict, *, moves_money: bool = False, ok_codes=("0",)) -> dict:
        """POST with the cached token; on an invalid-token answer refresh once and retry once
        (an invalid token proves the request was not accepted, money-moving or not).
        `ok_codes`: the ResponseCodes that mean success (Pull Transactions says 1000)."""
        token = self._tokens.get()
        try:
            return self._post_once(path, body, token, moves_money, ok_codes)
        except DarajaRejected as rejection:
            if not rejection.invalid_token:
                raise
            self._tokens.invalidate(token)
            return self._post_once(path, body, self._tokens.get(), moves_money, ok_codes)

    def _post_once(
        self, path: str, body: dict, token: str, moves_money: bool, ok_codes=("0",)
    ) -> dict:
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # A money-moving request gets a fresh connection: a stale pooled one could fail after
        # the bytes left, which would make an unsent request look like an unknown outcome.
        session = requests.Session() if moves_money else self._session
        try:
            response = session.post(url, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as error:
            raise _transport_failure(path, error, moves_money) from None
        finally:
            if moves_money:
                session.close()
        return _accepted_body(path, response, moves_money, ok_codes)


def _transport_failure(path: str, error: requests.RequestException, moves_money: bool):
    kind = type(error).__name__
    if not moves_money:
        return DarajaUnavailable(f"{path}: {kind}")
    if _never_connected(error):
        return NotSent(f"{path}: could not connect ({kind}); nothing was sent")
    return OutcomeUnknown(f"{path}: no answer ({kind}); the request may have been accepted")


def _never_connected(error: requests.RequestException) -> bool:
    """True only when no byte of the request can have reached the server."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def _accepted_body(
    path: str, response: requests.Response, moves_money: bool, ok_codes=("0",)
) -> dict:
    body = _json_or_none(response)
    if response.status_code == 200 and isinstance(body, dict):
        code = str(body.get("ResponseCode", "0"))
        if code in ok_codes:
            return body
        message = str(body.get("ResponseDescription") or body.get("errorMessage") or "")
        raise DarajaRejected(code, message, 200)
    rejection = _rejection(response)
    if rejection.http_status >= 500 and not rejection.proves_not_accepted:
        if moves_money:
            raise OutcomeUnknown(f"{path}: {rejection}; the request may have been accepted")
        raise DarajaUnavailable(f"{path}: {rejection}")
    raise rejection


def _rejection(response: requests.Response, default_message: str = "") -> DarajaRejected:
    body = _json_or_none(response)
    if isinstance(body, dict) and body.get("errorCode"):
        return DarajaRejected(
            str(body["errorCode"]),
            str(body.get("errorMessage", "")),
            response.status_code,
            body.get("requestId"),
        )
    return DarajaRejected(
        f"HTTP {response.status_code}",
        default_message or response.reason or "",
        response.status_code,
    )


def _json_or_none(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None
