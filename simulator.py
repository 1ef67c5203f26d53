"""A stand-in Daraja (Safaricom M-Pesa API) that validates like Daraja and fires real callbacks.

Used by the tests, by the demo and by `python service.py` in simulator mode (which starts it
in-process with `start()`, and serves the control routes below on its own port too, with
`with_controls()`). It answers on Daraja's own paths with Daraja's own shapes
(REFERENCE sections 1-8), POSTs the asynchronous results to the URLs each request names, and
can be told to misbehave in the ways production does (scenarios, below). It never imports
service.py: service.py imports it. docs/simulator.md has curl walk-throughs.

Daraja routes (every POST takes JSON and `Authorization: Bearer <token>`)
    GET  /oauth/v1/generate?grant_type=client_credentials   token, with Basic key:secret
    POST /mpesa/stkpush/v1/processrequest                   STK push; callback to CallBackURL
    POST /mpesa/stkpushquery/v1/query                       STK status (pending: 500.001.1001)
    POST /mpesa/b2c/v3/paymentrequest                       B2C with the caller's
                                                            OriginatorConversationID
    POST /mpesa/b2c/v1/paymentrequest                       B2C; the simulator makes the id
    POST /mpesa/transactionstatus/v1/query                  Transaction Status; result callback
    POST /mpesa/accountbalance/v1/query                     Account Balance; result callback
    POST /mpesa/reversal/v1/request                         Reversal of a collection by its
                                                            receipt; result callback
    POST /mpesa/c2b/v1/registerurl (and v2)                 C2B Register URL: remembers the
                                                            shortcode's URLs and ResponseType
    POST /pulltransactions/v1/register                      Pull Transactions registration
    POST /pulltransactions/v1/query                         C2B transactions from the ledger,
                                                            48 hours back, paged by OffSetValue

Control routes (for tests and demos; not part of Daraja)
    GET    /simulator/scenarios     armed scenarios
    POST   /simulator/scenarios     arm one: {"scenario", "times"=1, "path"?, "phone"?}
    DELETE /simulator/scenarios     disarm all
    GET    /simulator/requests      every Daraja request received (?path= filters)
    GET    /simulator/ledger        money actually moved, one entry per completed transaction
    GET    /simulator/callbacks     callbacks sent: url, body, status or error
    POST   /simulator/reset         forget requests, ledger, transactions, callbacks, scenarios
                                    and registrations
    POST   /simulator/c2b           a customer pays the paybill or till: {"amount", "bill_ref"?,
                                    "phone"?, "kind"? (paybill|till), "shortcode"?, "scenario"?
                                    (success | validation_timeout | confirmation_twice |
                                    confirmation_dropped)}: validation, then confirmation
    GET    /simulator/c2b/registrations  the URLs Register URL was given

Scenarios: an armed scenario (control route or `Simulator.arm`) applies to the next matching
requests; otherwise the magic phone (STK PhoneNumber, B2C PartyB) decides; any other phone
succeeds. Armed ones win over magic phones.

    scenario                    magic phone    applies to      what happens
    success                     (any other)    all but query   accepted, paid, one callback
    stk_insufficient_funds      254700000001   STK push        callback ResultCode 1
    stk_cancelled               254700001032   STK push        callback ResultCode 1032
    stk_unreachable             254700001037   STK push        callback ResultCode 1037
    stk_wrong_pin               254700002001   STK push        callback ResultCode 2001
    stk_expired                 254700001019   STK push        callback ResultCode 1019
    b2c_insufficient_funds      254711000001   B2C             result ResultCode 1
    b2c_initiator_invalid       254711002001   B2C             result ResultCode 2001
    b2c_unregistered_recipient  254711002040   B2C             result ResultCode 2040
    b2c_credential_locked       254711008006   B2C             result ResultCode 8006
    b2c_invalid_recipient       254711000003   B2C             result ResultCode SFC_IC0003
    b2c_system_busy             254711000026   B2C             result ResultCode 26 (retryable)
    duplicate_originator_id     254733000006   B2C             processed, but answered 500.002.1001
                                                               "Duplicate OriginatorConversationID"
    status_initiator_invalid    (armed only)   Trans. Status   result ResultCode 2001: about the
                                                               query, not the transaction
    status_without_details      (armed only)   Trans. Status   result ResultCode 0 without
                                                               ResultParameters
    callback_dropped            254722000001   async APIs      paid, callback never sent
    callback_twice              254722000002   async APIs      the same callback sent twice
    callback_delayed            254722000003   async APIs      callback after
                                                               delayed_callback_seconds
    queue_timeout               254722000004   result APIs     QueueTimeOutURL hit, result later
    queue_timeout_never         254722000005   result APIs     QueueTimeOutURL hit, never
                                                               processed, no result
    accepted_no_response        254733000001   async APIs      processed and called back, but
                                                               the HTTP answer never comes
    slow_answer                 254733000005   async APIs      processed and called back; the
                                                               HTTP answer comes after
                                                               slow_answer_seconds
    server_error_before_accept  254733000002   all but OAuth   HTTP 500 500.003.1001, nothing done
    spike_arrest                254733000003   all but OAuth   HTTP 500 500.003.02, nothing done
    token_expiry                254733000004   all but OAuth   every token revoked, 404.001.03
    token_invalid_401           (armed only)   all but OAuth   every token revoked, HTTP 401
                                                               401.002.01
    token_invalid_400           (armed only)   all but OAuth   every token revoked, HTTP 400
                                                               400.003.01
    api_product_not_enabled     (armed only)   all but OAuth   404.001.03 whatever the token
    amount_mismatch             254744000001   STK push, B2C   paid amount = request - 1

"async APIs" are STK push, B2C, Transaction Status, Account Balance and Reversal; "result APIs"
the last four (those with a QueueTimeOutURL). OAuth only takes server_error_before_accept and
spike_arrest, and only when armed with `"path": "/oauth/v1/generate"`. The token_expiry magic
phone fires once after start or reset, so a client's refresh-and-retry then succeeds.

Daraja's own checks (SimulatorConfig holds what they compare with): the OAuth key and secret;
each new token revokes the ones before it; the STK shortcode, Password and a Timestamp in Nairobi
time within timestamp_tolerance_seconds (else 400.002.02 Invalid Timestamp). What Daraja accepts
and then fails, the simulator fails in the callback or result too: a SecurityCredential that is
not initiator_password encrypted with TEST_CERTIFICATE (2001), an initiator without the API's
role (21), a B2C PartyA other than b2c_shortcode (2028), an STK PartyB that does not fit its
TransactionType (2028, SFC_IC0003), an AccountReference over 12 characters (1025), a B2C amount
outside 10-250,000 (2, 3) or an unknown CommandID (29).

With `SimulatorConfig(hold_callbacks=True)` no callback is sent by itself: each is kept
(`held()`) until the caller delivers it (`deliver(index)`), in any order and as often as it
likes, so a test can choose the order in which Daraja's callbacks arrive.

Run it
    python simulator.py --port 9000 [--host 127.0.0.1] [--callback-delay 0.2]
    credentials: consumer key simulator-key, secret simulator-secret; STK shortcode 174379
    with the public sandbox passkey; initiator testapi, its password SANDBOX_INITIATOR_PASSWORD
    encrypted with simulator_keys/simulator-test-only.cert.pem (SimulatorConfig).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hashlib
import heapq
import itertools
import json
import logging
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bottle
import requests
import waitress
from waitress.channel import ClientDisconnected, HTTPChannel

from recon.rules import (
    B2C_LIMITS,
    DARAJA_TIME_FORMATS,
    NAIROBI,
    PULL_TRANSACTIONS_HOURS,
    REJECTED_URL_WORDS,
    STK_LIMITS,
    nairobi_timestamp,
)

log = logging.getLogger("mpesa.simulator")

SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
# The simulator's own certificate and private key, test-only (simulator_keys/README.md):
# MPESA_CERT_PATH names the certificate; the key decrypts what was encrypted with it.
TEST_KEYS = Path(__file__).resolve().parent / "simulator_keys"
TEST_CERTIFICATE = TEST_KEYS / "simulator-test-only.cert.pem"
TEST_PRIVATE_KEY = TEST_KEYS / "simulator-test-only.key.pem"


def decrypt_security_credential(credential: str) -> str | None:
    """The initiator password inside a SecurityCredential made with TEST_CERTIFICATE
    (base64 of RSA PKCS#1 v1.5), or None when it cannot hold one (not base64, not a ciphertext
    for this key). One made with another certificate gives None or, as OpenSSL may answer a bad
    padding with random bytes, text that is not the password: compare, never trust."""
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        encrypted = base64.b64decode(credential, validate=True)
    except (binascii.Error, ValueError):
        return None
    key = _test_private_key()
    try:
        return key.decrypt(encrypted, padding.PKCS1v15()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


@functools.cache
def _test_private_key():
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(TEST_PRIVATE_KEY.read_bytes(), password=None)


# ============================================================================================
# Configuration
# ============================================================================================


# The operator roles Daraja requires of an initiator, one per API (REFERENCE 9.6).
B2C_ROLE = "ORG B2C API Initiator"
STATUS_ROLE = "Transaction Status query ORG API"
BALANCE_ROLE = "Balance Query ORG API"
REVERSAL_ROLE = "Org Reversals Initiator"
# The simulator's initiator password, a public test value like the passkey above (the sandbox's
# own is on the portal's test-credentials page).
SANDBOX_INITIATOR_PASSWORD = "Safaricom999!*!"  # nosec B105


@dataclass
class SimulatorConfig:
    """Credentials the simulator accepts, the parties it knows, Daraja's limits, its timings
    and the shape variants it sends."""

    consumer_key: str = "simulator-key"
    consumer_secret: str = "simulator-secret"
    # The STK paybill (BusinessShortCode and PartyB of CustomerPayBillOnline), with its passkey;
    # also the head office the tills below belong to.
    shortcode: str = "174379"
    passkey: str = SANDBOX_PASSKEY
    # Till number (PartyB of CustomerBuyGoodsOnline) -> the head office shortcode it is under.
    tills: dict[str, str] = field(default_factory=lambda: {"600100": "174379"})
    # The one shortcode allowed to pay out (B2C PartyA).
    b2c_shortcode: str = "600996"
    organisation_name: str = "Simulator Payouts Ltd"
    # The API operator: SecurityCredential must be initiator_password encrypted with
    # TEST_CERTIFICATE, and the operator needs the API's role.
    initiator_name: str = "testapi"
    initiator_password: str = SANDBOX_INITIATOR_PASSWORD
    initiator_roles: frozenset[str] = frozenset(
        {B2C_ROLE, STATUS_ROLE, BALANCE_ROLE, REVERSAL_ROLE}
    )
    token_ttl_seconds: float = 3599
    expires_in_as_string: bool = False
    # Each token issued invalidates the ones before it (REFERENCE 1, the official FAQ).
    new_token_revokes_old: bool = True
    # How far an STK Timestamp may be from Nairobi time now before it is Invalid Timestamp.
    timestamp_tolerance_seconds: float = 300
    # Limits Daraja enforces after accepting: an STK AccountReference longer than this fails
    # with 1025; a B2C amount outside these with 2 or 3; a CommandID not listed with 29.
    account_reference_limit: int = 12
    b2c_minimum_amount: int = B2C_LIMITS[0]
    b2c_maximum_amount: int = B2C_LIMITS[1]
    b2c_commands: tuple[str, ...] = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
    # How long the "customer" takes to answer an STK prompt; STK Query says pending until then.
    stk_answer_delay_seconds: float = 0.2
    # Callbacks go out this long after the transaction completes.
    callback_delay_seconds: float = 0.2
    delayed_callback_seconds: float = 3.0
    # Gap between the two deliveries of callback_twice.
    duplicate_callback_gap_seconds: float = 0.05
    # accepted_no_response holds the connection this long, then closes it unanswered.
    hang_seconds: float = 5.0
    # slow_answer holds its HTTP answer this long.
    slow_answer_seconds: float = 2.0
    callback_timeout_seconds: float = 5.0
    # The request and callback logs keep this many newest entries (a long demo run stays small).
    record_limit: int = 10_000
    # amount_mismatch pays this instead of the request; None means request - 1.
    mismatched_amount: int | None = None
    opening_working_balance: Decimal = Decimal("120000.00")
    opening_utility_balance: Decimal = Decimal("500000.00")
    # Shape variants seen in real traffic (REFERENCE 2.3, 4.4, 10.7-10.8).
    codes_as_strings: bool = False
    result_parameter_as_object: bool = False
    include_balance_item: bool = True
    # Keep every callback for the caller to deliver (held(), deliver()) instead of sending it.
    hold_callbacks: bool = False
    # C2B: whether the shortcode has validation turned on (Safaricom does it on request), how
    # long M-Pesa waits for the validation URL, and how MSISDN is sent ("masked" as v2 does,
    # "hashed" as v1 is reported to, or "plain").
    c2b_validation_enabled: bool = True
    c2b_validation_timeout_seconds: float = 8.0
    c2b_msisdn_style: str = "masked"
    # Pull Transactions: items per page, and how far back it keeps them.
    pull_page_size: int = 100


# ============================================================================================
# Scenarios
# ============================================================================================

OAUTH_PATH = "/oauth/v1/generate"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
B2C_V3_PATH = "/mpesa/b2c/v3/paymentrequest"
B2C_V1_PATH = "/mpesa/b2c/v1/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
BALANCE_PATH = "/mpesa/accountbalance/v1/query"
REVERSAL_PATH = "/mpesa/reversal/v1/request"
C2B_REGISTER_PATHS = ("/mpesa/c2b/v1/registerurl", "/mpesa/c2b/v2/registerurl")
PULL_REGISTER_PATH = "/pulltransactions/v1/register"
PULL_QUERY_PATH = "/pulltransactions/v1/query"
CONTROL_PREFIX = "/simulator/"  # the control routes' paths

OAUTH, STK_PUSH, STK_QUERY, B2C, STATUS, BALANCE, REVERSAL = (
    "oauth",
    "stk_push",
    "stk_query",
    "b2c",
    "transaction_status",
    "account_balance",
    "reversal",
)
C2B_REGISTER, PULL_REGISTER, PULL_QUERY = "c2b_register", "pull_register", "pull_query"
RESULT_APIS = frozenset({B2C, STATUS, BALANCE, REVERSAL})
ASYNC_APIS = frozenset({STK_PUSH}) | RESULT_APIS
BEARER_APIS = ASYNC_APIS | {STK_QUERY}

# A gateway scenario answers before validation and processes nothing; the others shape what
# happens to a valid, accepted request.
GATEWAY, OUTCOME = "gateway", "outcome"


@dataclass(frozen=True)
class Scenario:
    name: str
    applies_to: frozenset[str]
    magic_phone: str | None
    summary: str
    stage: str = OUTCOME
    result_code: int | str | None = None
    result_desc: str | None = None


SCENARIOS = (
    Scenario("success", ASYNC_APIS, None, "accepted, paid, one callback"),
    Scenario(
        "stk_insufficient_funds",
        frozenset({STK_PUSH}),
        "254700000001",
        "customer's balance is too low: ResultCode 1",
        result_code=1,
        result_desc="The balance is insufficient for the transaction.",
    ),
    Scenario(
        "stk_cancelled",
        frozenset({STK_PUSH}),
        "254700001032",
        "customer cancels the prompt: ResultCode 1032",
        result_code=1032,
        result_desc="Request cancelled by user",
    ),
    Scenario(
        "stk_unreachable",
        frozenset({STK_PUSH}),
        "254700001037",
        "phone cannot be reached: ResultCode 1037",
        result_code=1037,
        result_desc="DS timeout user cannot be reached",
    ),
    Scenario(
        "stk_wrong_pin",
        frozenset({STK_PUSH}),
        "254700002001",
        "customer enters a wrong PIN: ResultCode 2001",
        result_code=2001,
        result_desc="The initiator information is invalid.",
    ),
    Scenario(
        "stk_expired",
        frozenset({STK_PUSH}),
        "254700001019",
        "prompt expires unanswered: ResultCode 1019",
        result_code=1019,
        result_desc="Transaction has expired",
    ),
    Scenario(
        "b2c_insufficient_funds",
        frozenset({B2C}),
        "254711000001",
        "utility account too low: ResultCode 1",
        result_code=1,
        result_desc="The balance is insufficient for the transaction.",
    ),
    Scenario(
        "b2c_initiator_invalid",
        frozenset({B2C}),
        "254711002001",
        "wrong initiator or credential: ResultCode 2001",
        result_code=2001,
        result_desc="The initiator information is invalid.",
    ),
    Scenario(
        "b2c_unregistered_recipient",
        frozenset({B2C}),
        "254711002040",
        "recipient not a registered M-Pesa customer: ResultCode 2040",
        result_code=2040,
        result_desc="Credit Party customer type (Unregistered or Registered Customer) "
        "can't be supported by the service.",
    ),
    Scenario(
        "b2c_credential_locked",
        frozenset({B2C}),
        "254711008006",
        "API user's credential locked: ResultCode 8006",
        result_code=8006,
        result_desc="The security credential is locked.",
    ),
    Scenario(
        "b2c_invalid_recipient",
        frozenset({B2C}),
        "254711000003",
        "recipient number does not exist: ResultCode SFC_IC0003",
        result_code="SFC_IC0003",
        result_desc="The operator does not exist.",
    ),
    Scenario(
        "b2c_system_busy",
        frozenset({B2C}),
        "254711000026",
        "M-Pesa too busy to process it: ResultCode 26 (worth a new attempt)",
        result_code=26,
        result_desc="System is busy. Please try again in few minutes.",
    ),
    Scenario(
        "duplicate_originator_id",
        frozenset({B2C}),
        "254733000006",
        "processed (as an earlier request with the same id was), but answered HTTP 500 "
        "500.002.1001 Duplicate OriginatorConversationID",
    ),
    Scenario(
        "status_initiator_invalid",
        frozenset({STATUS}),
        None,
        "the query itself is refused: result ResultCode 2001, nothing about the transaction",
        result_code=2001,
        result_desc="The initiator information is invalid.",
    ),
    Scenario(
        "status_without_details",
        frozenset({STATUS}),
        None,
        "result ResultCode 0 without ResultParameters: no TransactionStatus, no ReceiptNo",
        result_code=0,
        result_desc="The service request is processed successfully.",
    ),
    Scenario(
        "callback_dropped",
        ASYNC_APIS,
        "254722000001",
        "processed, but the callback is never sent; queries show the outcome",
    ),
    Scenario("callback_twice", ASYNC_APIS, "254722000002", "the same callback is sent twice"),
    Scenario(
        "callback_delayed",
        ASYNC_APIS,
        "254722000003",
        "callback sent after delayed_callback_seconds, after a status query can answer",
    ),
    Scenario(
        "queue_timeout",
        RESULT_APIS,
        "254722000004",
        "QueueTimeOutURL is hit; the transaction still happens and its result comes later",
    ),
    Scenario(
        "queue_timeout_never",
        RESULT_APIS,
        "254722000005",
        "QueueTimeOutURL is hit; the request is never processed and no result comes",
    ),
    Scenario(
        "accepted_no_response",
        ASYNC_APIS,
        "254733000001",
        "processed and called back, but the HTTP answer never comes (connection closed "
        "after hang_seconds)",
    ),
    Scenario(
        "slow_answer",
        ASYNC_APIS,
        "254733000005",
        "processed and called back as usual, but the HTTP answer comes only after "
        "slow_answer_seconds",
    ),
    Scenario(
        "server_error_before_accept",
        BEARER_APIS | {OAUTH},
        "254733000002",
        "HTTP 500 500.003.1001 before acceptance; nothing processed",
        stage=GATEWAY,
    ),
    Scenario(
        "spike_arrest",
        BEARER_APIS | {OAUTH},
        "254733000003",
        "HTTP 500 500.003.02 Spike Arrest Violation; nothing processed",
        stage=GATEWAY,
    ),
    Scenario(
        "token_expiry",
        BEARER_APIS,
        "254733000004",
        "every token is revoked and this request gets 404.001.03",
        stage=GATEWAY,
    ),
    Scenario(
        "token_invalid_401",
        BEARER_APIS,
        None,
        "every token is revoked and this request gets HTTP 401 401.002.01",
        stage=GATEWAY,
    ),
    Scenario(
        "token_invalid_400",
        BEARER_APIS,
        None,
        "every token is revoked and this request gets HTTP 400 400.003.01",
        stage=GATEWAY,
    ),
    Scenario(
        "api_product_not_enabled",
        BEARER_APIS,
        None,
        "404.001.03 although the token is good: the app lacks the API product, so a new "
        "token does not help",
        stage=GATEWAY,
    ),
    Scenario(
        "amount_mismatch",
        frozenset({STK_PUSH, B2C}),
        "254744000001",
        "paid; the amount moved and reported is request - 1 (or mismatched_amount)",
    ),
)
SCENARIOS_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
MAGIC_PHONES = {s.magic_phone: s for s in SCENARIOS if s.magic_phone}


@dataclass
class Arming:
    """A scenario armed for the next `remaining` requests matching the optional filters."""

    scenario: str
    remaining: int
    path: str | None = None
    phone: str | None = None

    def matches(self, kind: str, path: str, phone: str | None) -> bool:
        if kind not in SCENARIOS_BY_NAME[self.scenario].applies_to or self.remaining <= 0:
            return False
        if kind == OAUTH and self.path != OAUTH_PATH:
            return False
        if self.path is not None and self.path != path:
            return False
        return self.phone is None or self.phone == phone


class ScenarioBook:
    """Armed scenarios plus the magic-phone table; not locked: Simulator holds the lock."""

    def __init__(self) -> None:
        self.armed: list[Arming] = []
        self.spent_magic_phones: set[str] = set()

    def arm(self, name: str, times: int, path: str | None, phone: str | None) -> Arming:
        arming = Arming(name, times, path, phone)
        self.armed.append(arming)
        return arming

    def pick(
        self, kind: str, path: str, phone: str | None
    ) -> tuple[Scenario | None, Arming | None]:
        """The scenario for this request (armed first, then magic phone), not yet used up."""
        for arming in self.armed:
            if arming.matches(kind, path, phone):
                return SCENARIOS_BY_NAME[arming.scenario], arming
        scenario = MAGIC_PHONES.get(phone or "")
        if scenario is None or kind not in scenario.applies_to or kind == OAUTH:
            return None, None
        if scenario.name == "token_expiry" and phone in self.spent_magic_phones:
            return None, None
        return scenario, None

    def use(self, scenario: Scenario, arming: Arming | None, phone: str | None) -> None:
        if arming is not None:
            arming.remaining -= 1
            if arming.remaining <= 0 and arming in self.armed:
                self.armed.remove(arming)
        elif scenario.name == "token_expiry" and phone:
            self.spent_magic_phones.add(phone)

    def clear(self) -> int:
        count = len(self.armed)
        self.armed.clear()
        self.spent_magic_phones.clear()
        return count


# ============================================================================================
# Identifiers and times
# ============================================================================================

RECEIPT_ALPHABET = string.ascii_uppercase + string.digits
TOKEN_ALPHABET = string.ascii_letters + string.digits


def utc_now() -> datetime:
    return datetime.now(UTC)


def b2c_completed_time(moment: datetime) -> str:
    """B2C's own dd.MM.yyyy HH:mm:ss, Nairobi time."""
    return moment.astimezone(NAIROBI).strftime(DARAJA_TIME_FORMATS[1])


def random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def receipt_number(moment: datetime) -> str:
    """M-Pesa style: a letter for the year (T = 2025), one for the month, then 8 characters."""
    local = moment.astimezone(NAIROBI)
    year_letter = string.ascii_uppercase[(local.year - 2006) % 26]
    month_letter = string.ascii_uppercase[local.month - 1]
    return year_letter + month_letter + random_text(RECEIPT_ALPHABET, 8)


def placeholder_transaction_id(moment: datetime) -> str:
    """What Daraja puts in TransactionID when there is no receipt, e.g. TK50000000."""
    return receipt_number(moment)[:3] + "0000000"


def gateway_id() -> str:
    """A gateway request id like 6e86-45dd-91ac-fd5d4178ab523002925."""
    digits = str(secrets.randbelow(10**7)).zfill(7)
    return "-".join(secrets.token_hex(2) for _ in range(3)) + "-" + secrets.token_hex(6) + digits


def conversation_id(moment: datetime) -> str:
    return f"AG_{moment.astimezone(NAIROBI):%Y%m%d}_{secrets.token_hex(10)}"


def checkout_request_id(moment: datetime, phone: str, sequence: int) -> str:
    local = moment.astimezone(NAIROBI)
    return f"ws_CO_{local:%d%m%Y%H%M%S}{sequence % 1000:03d}{phone[3:]}"


def access_token() -> str:
    return random_text(TOKEN_ALPHABET, 28)


CUSTOMER_NAMES = (
    "JANE WANJIRU DOE",
    "JOHN KAMAU MWANGI",
    "MARY ACHIENG OTIENO",
    "PETER KIPROTICH",
    "ANNE WAMBUI-KARIUKI",
    "DAVID OMONDI",
)


def customer_name(phone: str) -> str:
    return CUSTOMER_NAMES[int(phone) % len(CUSTOMER_NAMES)]


B2C_REASON_TYPES = {
    "BusinessPayment": "Business Payment to Customer via API",
    "SalaryPayment": "Salary Payment via API",
    "PromotionPayment": "Promotion Payment via API",
}


def b2c_fee(amount: int) -> Decimal:
    """A plausible business-paid B2C charge (REFERENCE 12.4); simulator numbers, not a tariff."""
    for ceiling, fee in ((100, "0"), (1500, "5"), (5000, "9"), (15000, "11")):
        if amount <= ceiling:
            return Decimal(fee)
    return Decimal("12")


# ============================================================================================
# Daraja errors and validation
# ============================================================================================


class DarajaError(Exception):
    """An error answered with Daraja's body; the HTTP status is the code's family (404.x → 404)."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.request_id = request_id or gateway_id()

    @property
    def status(self) -> int:
        return int(self.code.split(".")[0])

    def body(self) -> dict:
        return {"requestId": self.request_id, "errorCode": self.code, "errorMessage": self.message}


def invalid(field_name: str) -> DarajaError:
    return DarajaError("400.002.02", f"Bad Request - Invalid {field_name}")


def invalid_token() -> DarajaError:
    return DarajaError("404.001.03", "Invalid Access Token")


PHONE_PATTERN = re.compile(r"254[17]\d{8}")
DIGITS = re.compile(r"\d+")
STK_TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
# The B2C amounts refused at once (not a whole number, or absurd); its limits fail later.
MAX_WHOLE_AMOUNT = 10**12


def is_number_like(value: Any) -> bool:
    """An int or a string of digits; Daraja takes both for numeric fields. Never a bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and bool(DIGITS.fullmatch(value)))


def present(body: dict, name: str) -> Any:
    value = body.get(name)
    if value is None or value == "":
        raise invalid(name)
    return value


def numeric_field(body: dict, name: str, digits: tuple[int, int] = (5, 7)) -> str:
    value = present(body, name)
    text = str(value)
    if not is_number_like(value) or not digits[0] <= len(text) <= digits[1]:
        raise invalid(name)
    return text


def phone_field(body: dict, name: str) -> str:
    value = present(body, name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(name)
    if not PHONE_PATTERN.fullmatch(str(value)):
        raise invalid(name)
    return str(value)


def amount_field(body: dict, limits: tuple[int, int]) -> int:
    """Whole shillings within limits; 10.5, "10.5" and 10.0 are all "Invalid Amount"."""
    value = present(body, "Amount")
    if not is_number_like(value) or not limits[0] <= int(value) <= limits[1]:
        raise invalid("Amount")
    return int(value)


def text_field(
    body: dict, name: str, longest: int, shortest: int = 1, required: bool = True
) -> str | None:
    """A string field of shortest..longest characters; an optional one may be absent or empty
    (Daraja takes `"Occasion": ""`), and is then None."""
    value = body.get(name)
    if value in (None, "") and not required:
        return None
    if not isinstance(value, str) or not shortest <= len(value) <= longest:
        raise invalid(name)
    return value


def url_field(body: dict, name: str) -> str:
    value = present(body, name)
    if not isinstance(value, str) or value != value.strip() or " " in value:
        raise invalid(name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(name)
    return value


def choice_field(body: dict, name: str, choices: tuple[str, ...]) -> str:
    value = present(body, name)
    if value not in choices:
        raise invalid(name)
    return value


def identifier_type_field(body: dict) -> str:
    value = present(body, "IdentifierType")
    if not is_number_like(value) or str(value) not in ("1", "2", "4"):
        raise invalid("IdentifierType")
    return str(value)


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def timestamp_field(body: dict, config: SimulatorConfig, now: datetime) -> str:
    """YYYYMMDDHHMMSS in Nairobi time, within timestamp_tolerance_seconds of `now`: a server
    writing UTC, or with a stale clock, gets Invalid Timestamp (REFERENCE 2.1, 10.6)."""
    timestamp = present(body, "Timestamp")
    if not is_number_like(timestamp) or len(str(timestamp)) != 14:
        raise invalid("Timestamp")
    try:
        moment = datetime.strptime(str(timestamp), DARAJA_TIME_FORMATS[0]).replace(tzinfo=NAIROBI)
    except ValueError:
        raise invalid("Timestamp") from None
    if abs((moment - now).total_seconds()) > config.timestamp_tolerance_seconds:
        raise invalid("Timestamp")
    return str(timestamp)


def check_stk_credentials(body: dict, config: SimulatorConfig, now: datetime) -> str:
    """BusinessShortCode, Timestamp and Password, as Daraja checks them; returns the shortcode."""
    shortcode = numeric_field(body, "BusinessShortCode")
    timestamp = timestamp_field(body, config, now)
    password = present(body, "Password")
    if shortcode != config.shortcode:
        raise DarajaError("500.001.1001", "Merchant does not exist")
    if password != stk_password(shortcode, config.passkey, timestamp):
        raise DarajaError("500.001.1001", "Wrong credentials")
    return shortcode


@dataclass(frozen=True)
class Refusal:
    """A request Daraja accepts, then fails in its result or callback with this code."""

    code: int | str
    desc: str


INITIATOR_INVALID = Refusal(2001, "The initiator information is invalid.")
INITIATOR_NOT_ALLOWED = Refusal(21, "The initiator is not allowed to initiate this request.")
NOT_PERMITTED = Refusal(2028, "The request is not permitted according to product assignment.")
OPERATOR_MISSING = Refusal("SFC_IC0003", "The operator does not exist.")
PROMPT_TOO_LONG = Refusal(1025, "An error occurred while sending a push request.")
BELOW_MINIMUM = Refusal(2, "Declined due to limit rule: less than the minimum transaction amount.")
ABOVE_MAXIMUM = Refusal(
    3, "Declined due to limit rule: greater than the maximum transaction amount."
)
INVALID_COMMAND = Refusal(29, "Invalid CommandID.")
ALREADY_REVERSED = Refusal("R000001", "The transaction has already been reversed.")
INVALID_ORIGINAL = Refusal("R000002", "The OriginalTransactionID is invalid.")
PAYBILL, BUY_GOODS = STK_TRANSACTION_TYPES


@dataclass(frozen=True)
class Initiator:
    name: str
    credential: str


def initiator_refusal(initiator: Initiator, role: str, config: SimulatorConfig) -> Refusal | None:
    """2001 unless the name is the configured initiator's and the credential decrypts, with
    TEST_PRIVATE_KEY, to its password (plain text, another certificate or password: 2001,
    REFERENCE 4.6, 5); then 21 when the initiator lacks the API's role."""
    password = (decrypt_security_credential(initiator.credential) or "").encode()
    right_password = secrets.compare_digest(password, config.initiator_password.encode())
    if not (right_password and initiator.name == config.initiator_name):
        return INITIATOR_INVALID
    return None if role in config.initiator_roles else INITIATOR_NOT_ALLOWED


@dataclass(frozen=True)
class StkPush:
    shortcode: str
    transaction_type: str
    party_b: str
    phone: str
    amount: int
    callback_url: str
    account_reference: str


def validate_stk_push(body: dict, config: SimulatorConfig, now: datetime) -> StkPush:
    shortcode = check_stk_credentials(body, config, now)
    transaction_type = choice_field(body, "TransactionType", STK_TRANSACTION_TYPES)
    amount = amount_field(body, STK_LIMITS)
    phone_field(body, "PartyA")
    party_b = numeric_field(body, "PartyB")
    phone = phone_field(body, "PhoneNumber")
    callback_url = url_field(body, "CallBackURL")
    reference = text_field(body, "AccountReference", 1000) or ""
    text_field(body, "TransactionDesc", 13, required=False)
    return StkPush(shortcode, transaction_type, party_b, phone, amount, callback_url, reference)


def stk_refusal(push: StkPush, config: SimulatorConfig) -> Refusal | None:
    """How Daraja fails an accepted push (REFERENCE 3.1, 10.5, 10.10): a PartyB that does not
    fit the TransactionType and BusinessShortCode is 2028 when it is one of ours (a till sent as
    a paybill, the paybill as a till) and SFC_IC0003 when it is no one's; an AccountReference
    too long for the prompt is 1025."""
    if push.transaction_type == PAYBILL:
        fits = push.party_b == push.shortcode
    else:
        fits = config.tills.get(push.party_b) == push.shortcode
    if not fits:
        ours = push.party_b == config.shortcode or push.party_b in config.tills
        return NOT_PERMITTED if ours else OPERATOR_MISSING
    if len(push.account_reference) > config.account_reference_limit:
        return PROMPT_TOO_LONG
    return None


@dataclass(frozen=True)
class B2CPayment:
    originator_conversation_id: str | None
    initiator: Initiator
    command_id: str
    amount: int
    party_a: str
    phone: str
    result_url: str
    queue_timeout_url: str


def validate_initiator(body: dict, name_field: str) -> Initiator:
    name = text_field(body, name_field, 100) or ""
    return Initiator(name, text_field(body, "SecurityCredential", 4096) or "")


def validate_b2c(body: dict, generates_id: bool) -> B2CPayment:
    """Fields whose shape is wrong are refused at once; what Daraja checks only after
    accepting (the initiator, PartyA, CommandID, the amount's limits) is b2c_refusal's."""
    originator = None if generates_id else text_field(body, "OriginatorConversationID", 100)
    initiator = validate_initiator(body, "InitiatorName")
    command = text_field(body, "CommandID", 100) or ""
    amount = amount_field(body, (1, MAX_WHOLE_AMOUNT))
    party_a = numeric_field(body, "PartyA", (5, 9))
    phone = phone_field(body, "PartyB")
    text_field(body, "Remarks", 100, shortest=2)
    queue_timeout_url = url_field(body, "QueueTimeOutURL")
    result_url = url_field(body, "ResultURL")
    for note in ("Occassion", "Occasion"):
        text_field(body, note, 100, required=False)
    return B2CPayment(
        originator, initiator, command, amount, party_a, phone, result_url, queue_timeout_url
    )


def b2c_refusal(payment: B2CPayment, config: SimulatorConfig) -> Refusal | None:
    """How Daraja fails an accepted payout (REFERENCE 4.6, 4.7): a bad initiator (2001, 21),
    a PartyA that is not a B2C shortcode (2028), an unknown CommandID (29), an amount below
    the minimum (2) or above the maximum (3)."""
    refusal = initiator_refusal(payment.initiator, B2C_ROLE, config)
    if refusal is not None:
        return refusal
    if payment.party_a != config.b2c_shortcode:
        return NOT_PERMITTED
    if payment.command_id not in config.b2c_commands:
        return INVALID_COMMAND
    if payment.amount < config.b2c_minimum_amount:
        return BELOW_MINIMUM
    if payment.amount > config.b2c_maximum_amount:
        return ABOVE_MAXIMUM
    return None


@dataclass(frozen=True)
class StatusQuery:
    initiator: Initiator
    transaction_id: str | None
    original_conversation_id: str | None
    occasion: str | None
    result_url: str
    queue_timeout_url: str


def validate_status_query(body: dict) -> StatusQuery:
    initiator = validate_initiator(body, "Initiator")
    choice_field(body, "CommandID", ("TransactionStatusQuery",))
    transaction_id = text_field(body, "TransactionID", 40, required=False)
    original = text_field(body, "OriginalConversationID", 100, required=False)
    if not transaction_id and not original:
        raise invalid("TransactionID")
    numeric_field(body, "PartyA", (5, 12))
    identifier_type_field(body)
    text_field(body, "Remarks", 100, required=False)
    occasion = text_field(body, "Occasion", 100, required=False)
    queue_timeout_url = url_field(body, "QueueTimeOutURL")
    result_url = url_field(body, "ResultURL")
    return StatusQuery(initiator, transaction_id, original, occasion, result_url, queue_timeout_url)


@dataclass(frozen=True)
class ReversalRequest:
    initiator: Initiator
    transaction_id: str
    amount: int
    receiver_party: str
    result_url: str
    queue_timeout_url: str


def validate_reversal(body: dict) -> ReversalRequest:
    """REFERENCE 7.2's fields, "RecieverIdentifierType" in Safaricom's spelling."""
    initiator = validate_initiator(body, "Initiator")
    choice_field(body, "CommandID", ("TransactionReversal",))
    transaction_id = text_field(body, "TransactionID", 40) or ""
    amount = amount_field(body, (1, MAX_WHOLE_AMOUNT))
    receiver = numeric_field(body, "ReceiverParty", (5, 9))
    if str(present(body, "RecieverIdentifierType")) != "11":
        raise invalid("RecieverIdentifierType")
    text_field(body, "Remarks", 100, shortest=2)
    text_field(body, "Occasion", 100, required=False)
    queue_timeout_url = url_field(body, "QueueTimeOutURL")
    result_url = url_field(body, "ResultURL")
    return ReversalRequest(
        initiator, transaction_id, amount, receiver, result_url, queue_timeout_url
    )


@dataclass(frozen=True)
class BalanceQuery:
    initiator: Initiator
    result_url: str
    queue_timeout_url: str


def validate_balance_query(body: dict) -> BalanceQuery:
    initiator = validate_initiator(body, "Initiator")
    choice_field(body, "CommandID", ("AccountBalance",))
    numeric_field(body, "PartyA", (5, 9))
    identifier_type_field(body)
    text_field(body, "Remarks", 100, required=False)
    queue_timeout_url = url_field(body, "QueueTimeOutURL")
    return BalanceQuery(initiator, url_field(body, "ResultURL"), queue_timeout_url)


# ============================================================================================
# Transactions and the shapes Daraja sends
# ============================================================================================

SUCCESS_DESC = "The service request is processed successfully."
ACCEPTED_DESC = "Accept the service request successfully."
STK_ACCEPTED_DESC = "Success. Request accepted for processing"
TIMED_OUT_DESC = "The service request timed out."
NOT_FOUND_CODE, NOT_FOUND_DESC = 404, "The transaction could not be found."
INTERNAL_RESULT_URLS = {
    B2C: "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit",
    STATUS: "https://internalsandbox.safaricom.co.ke/mpesa/tsresults/v1/submit",
    BALANCE: "https://internalsandbox.safaricom.co.ke/mpesa/abresults/v1/submit",
    REVERSAL: "https://internalsandbox.safaricom.co.ke/mpesa/reversalresults/v1/submit",
}
NO_VALUE = object()


@dataclass
class Transaction:
    """One STK payment, B2C payout or reversal the simulator accepted, and what happened to
    it."""

    kind: str  # "stk", "b2c" or "reversal"
    phone: str
    party: str  # the shortcode
    requested_amount: int
    paid_amount: int
    result_code: int | str
    result_desc: str
    accepted_at: datetime
    completes_at: datetime
    processed: bool = True
    receipt: str | None = None
    originator_conversation_id: str | None = None
    conversation_id: str | None = None
    checkout_request_id: str | None = None
    merchant_request_id: str | None = None
    command_id: str | None = None
    fee: Decimal = Decimal(0)
    reverses: str | None = None  # a reversal's: the receipt it reverses
    # C2B: the account number the customer typed, and "Pay Bill" or "Buy Goods".
    bill_ref_number: str | None = None
    transaction_type: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == 0

    def is_complete(self, now: datetime) -> bool:
        return self.processed and now >= self.completes_at

    def moved_money(self, now: datetime) -> bool:
        return self.succeeded and self.is_complete(now)

    def identifiers(self) -> set[str]:
        ids = {
            self.originator_conversation_id,
            self.conversation_id,
            self.checkout_request_id,
            self.merchant_request_id,
        }
        return {value for value in ids if value}

    def ledger_entry(self) -> dict:
        c2b = {"bill_ref_number": self.bill_ref_number} if self.kind == "c2b" else {}
        return {
            **c2b,
            "kind": self.kind,
            "receipt": self.receipt,
            "amount": self.paid_amount,
            "requested_amount": self.requested_amount,
            "phone": self.phone,
            "originator_conversation_id": self.originator_conversation_id,
            "conversation_id": self.conversation_id,
            "checkout_request_id": self.checkout_request_id,
            "merchant_request_id": self.merchant_request_id,
            "reverses": self.reverses,
            "time": self.completes_at.isoformat(timespec="milliseconds"),
        }


def code_value(code: int | str, as_string: bool) -> int | str:
    return str(code) if as_string else code


def stk_callback_body(txn: Transaction, config: SimulatorConfig) -> dict:
    callback: dict[str, Any] = {
        "MerchantRequestID": txn.merchant_request_id,
        "CheckoutRequestID": txn.checkout_request_id,
        "ResultCode": code_value(txn.result_code, config.codes_as_strings),
        "ResultDesc": txn.result_desc,
    }
    if txn.succeeded:
        items: list[dict] = [
            # Daraja sends the amount with decimals (150.00 arrives as 150.0): the real shape.
            {"Name": "Amount", "Value": float(txn.paid_amount)},
            {"Name": "MpesaReceiptNumber", "Value": txn.receipt},
        ]
        if config.include_balance_item:
            items.append({"Name": "Balance"})
        items.append({"Name": "TransactionDate", "Value": int(nairobi_timestamp(txn.completes_at))})
        items.append({"Name": "PhoneNumber", "Value": int(txn.phone)})
        callback["CallbackMetadata"] = {"Item": items}
    return {"Body": {"stkCallback": callback}}


def key_values(pairs: list[tuple[str, Any]]) -> list[dict]:
    return [{"Key": k} if v is NO_VALUE else {"Key": k, "Value": v} for k, v in pairs]


@dataclass
class ResultIds:
    """The ids a Result envelope carries: the request's own, not the queried transaction's."""

    originator_conversation_id: str
    conversation_id: str
    transaction_id: str


@dataclass(frozen=True)
class ResultShape:
    """The variants a Result envelope comes in: codes as strings, one-object ResultParameter."""

    codes_as_strings: bool = False
    parameter_as_object: bool = False

    @classmethod
    def of(cls, config: SimulatorConfig) -> ResultShape:
        return cls(config.codes_as_strings, config.result_parameter_as_object)


def result_body(
    ids: ResultIds,
    code: int | str,
    desc: str,
    parameters: list[tuple[str, Any]] | None,
    reference_item: dict,
    shape: ResultShape,
    result_type: int = 0,
) -> dict:
    result: dict[str, Any] = {
        "ResultType": code_value(result_type, shape.codes_as_strings),
        "ResultCode": code_value(code, shape.codes_as_strings),
        "ResultDesc": desc,
        "OriginatorConversationID": ids.originator_conversation_id,
        "ConversationID": ids.conversation_id,
        "TransactionID": ids.transaction_id,
    }
    if parameters is not None:
        listed = key_values(parameters)
        shaped = listed[0] if shape.parameter_as_object else listed
        result["ResultParameters"] = {"ResultParameter": shaped}
    result["ReferenceData"] = {"ReferenceItem": reference_item}
    return {"Result": result}


def internal_reference(kind: str) -> dict:
    return {"Key": "QueueTimeoutURL", "Value": INTERNAL_RESULT_URLS[kind]}


def b2c_result_body(
    txn: Transaction, balances: dict[str, Decimal], config: SimulatorConfig
) -> dict:
    ids = ResultIds(
        txn.originator_conversation_id or "",
        txn.conversation_id or "",
        txn.receipt or placeholder_transaction_id(txn.completes_at),
    )
    parameters = None
    if txn.succeeded:
        # Decimal balances become JSON numbers with decimals, as Daraja sends them.
        parameters = [
            ("TransactionAmount", txn.paid_amount),
            ("TransactionReceipt", txn.receipt),
            ("ReceiverPartyPublicName", f"{txn.phone} - {customer_name(txn.phone)}"),
            ("TransactionCompletedDateTime", b2c_completed_time(txn.completes_at)),
            ("B2CUtilityAccountAvailableFunds", float(balances["Utility Account"])),
            ("B2CWorkingAccountAvailableFunds", float(balances["Working Account"])),
            ("B2CRecipientIsRegisteredCustomer", "Y"),
            ("B2CChargesPaidAccountAvailableFunds", float(balances["Charges Paid Account"])),
        ]
    reference = internal_reference(B2C)
    shape = ResultShape.of(config)
    return result_body(ids, txn.result_code, txn.result_desc, parameters, reference, shape)


def reversal_result_body(
    txn: Transaction, balances: dict[str, Decimal], config: SimulatorConfig
) -> dict:
    """A Reversal result (REFERENCE 7.2): TransactionID is the reversal's own receipt; a failure
    (R000001, R000002, ...) carries no ResultParameters."""
    ids = ResultIds(
        txn.originator_conversation_id or "",
        txn.conversation_id or "",
        txn.receipt or placeholder_transaction_id(txn.completes_at),
    )
    parameters = None
    if txn.succeeded:
        utility = balances["Utility Account"]
        parameters = [
            ("DebitAccountBalance", f"Utility Account|KES|{utility:.2f}|{utility:.2f}|0.00|0.00"),
            ("Amount", txn.paid_amount),
            ("TransCompletedTime", int(nairobi_timestamp(txn.completes_at))),
            ("OriginalTransactionID", txn.reverses),
            ("Charge", 0),
            ("CreditPartyPublicName", f"{txn.phone} - {customer_name(txn.phone)}"),
            ("DebitPartyPublicName", f"{txn.party} - {config.organisation_name}"),
        ]
    reference = internal_reference(REVERSAL)
    shape = ResultShape.of(config)
    return result_body(ids, txn.result_code, txn.result_desc, parameters, reference, shape)


def queue_timeout_body(ids: ResultIds, kind: str, config: SimulatorConfig) -> dict:
    """Daraja does not document this payload; this is the Result-envelope guess (REFERENCE 4.5)."""
    reference = internal_reference(kind)
    return result_body(ids, 1, TIMED_OUT_DESC, None, reference, ResultShape.of(config), 1)


def status_parameters(txn: Transaction, now: datetime, config: SimulatorConfig) -> list[tuple]:
    """Transaction Status keys for a transaction the simulator knows (REFERENCE 6.3)."""
    if txn.kind == "b2c":
        debit = f"{txn.party} - {config.organisation_name}"
        credit = f"{txn.phone} - {customer_name(txn.phone)}"
        account = "Utility Account"
        reason = B2C_REASON_TYPES.get(txn.command_id or "", B2C_REASON_TYPES["BusinessPayment"])
        charges = f"Fee For B2C Payment|KES|{txn.fee:.2f}"
    elif txn.kind == "reversal":
        debit = f"{txn.party} - {config.organisation_name}"
        credit = f"{txn.phone} - {customer_name(txn.phone)}"
        account, reason, charges = "Utility Account", "Reversal", ""
    else:
        debit = f"{txn.phone} - {customer_name(txn.phone)}"
        credit = f"{txn.party} - {config.organisation_name}"
        account, reason, charges = "Customer Account", "Pay Utility", ""
    complete = txn.is_complete(now)
    pairs = [
        ("DebitPartyName", debit),
        ("CreditPartyName", credit),
        ("OriginatorConversationID", txn.originator_conversation_id or txn.merchant_request_id),
        ("InitiatedTime", int(nairobi_timestamp(txn.accepted_at))),
        ("DebitAccountType", account),
        ("DebitPartyCharges", charges if txn.succeeded else ""),
        ("TransactionReason", NO_VALUE if txn.succeeded else txn.result_desc),
        ("ReasonType", reason),
        ("TransactionStatus", transaction_status(txn, now)),
        ("FinalisedTime", int(nairobi_timestamp(txn.completes_at)) if complete else NO_VALUE),
        ("Amount", txn.paid_amount),
        ("ConversationID", txn.conversation_id or txn.checkout_request_id),
    ]
    if txn.moved_money(now):
        pairs.append(("ReceiptNo", txn.receipt))
    return pairs


def transaction_status(txn: Transaction, now: datetime) -> str:
    """What Transaction Status says of a transaction (REFERENCE 6.3): Completed when it paid,
    Declined when it failed (its reason in TransactionReason), Initiated until then."""
    if not txn.is_complete(now):
        return "Initiated"
    return "Completed" if txn.succeeded else "Declined"


def status_result_body(
    ids: ResultIds,
    txn: Transaction | None,
    occasion: str | None,
    config: SimulatorConfig,
    now: datetime,
    refusal: Refusal | None = None,
) -> dict:
    reference = {"Key": "Occasion"} if occasion is None else {"Key": "Occasion", "Value": occasion}
    shape = ResultShape.of(config)
    if refusal is not None:
        # An answer about the query itself, saying nothing of the transaction.
        return result_body(ids, refusal.code, refusal.desc, None, reference, shape)
    if txn is None or not txn.processed:
        return result_body(ids, NOT_FOUND_CODE, NOT_FOUND_DESC, None, reference, shape)
    parameters = status_parameters(txn, now, config)
    return result_body(ids, 0, SUCCESS_DESC, parameters, reference, shape)


def balance_result_body(
    ids: ResultIds,
    balances: dict[str, Decimal],
    now: datetime,
    config: SimulatorConfig,
    refusal: Refusal | None = None,
) -> dict:
    """Account Balance result; its codes are strings in the official sample (REFERENCE 7.1)."""
    shape = ResultShape(
        codes_as_strings=True, parameter_as_object=config.result_parameter_as_object
    )
    reference = internal_reference(BALANCE)
    if refusal is not None:
        return result_body(ids, refusal.code, refusal.desc, None, reference, shape)
    accounts = "&".join(
        f"{name}|KES|{amount:.2f}|{amount:.2f}|0.00|0.00" for name, amount in balances.items()
    )
    parameters = [("AccountBalance", accounts), ("BOCompletedTime", nairobi_timestamp(now))]
    return result_body(ids, 0, SUCCESS_DESC, parameters, reference, shape)


def accepted_body(ids: ResultIds) -> dict:
    return {
        "ConversationID": ids.conversation_id,
        "OriginatorConversationID": ids.originator_conversation_id,
        "ResponseCode": "0",
        "ResponseDescription": ACCEPTED_DESC,
    }


# C2B: what a customer's own paybill or till payment sends (REFERENCE 14), and Pull
# Transactions' items (REFERENCE 12.3).

C2B_TRANSACTION_TYPES = {"paybill": "Pay Bill", "till": "Buy Goods"}
PULL_TRANSACTION_TYPES = {"Pay Bill": "c2b-pay-bill-debit", "Buy Goods": "c2b-buy-goods-debit"}
C2B_SCENARIOS = ("success", "validation_timeout", "confirmation_twice", "confirmation_dropped")
PULL_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class C2BRegistration:
    """The URLs Register URL was given for a shortcode."""

    shortcode: str
    response_type: str
    confirmation_url: str
    validation_url: str


def c2b_msisdn(phone: str, style: str) -> str:
    """MSISDN as the confirmation carries it: masked (2547 ***** 126), hashed or plain."""
    if style == "hashed":
        return hashlib.sha256(phone.encode()).hexdigest()
    if style == "masked":
        return f"{phone[:4]} ***** {phone[-3:]}"
    return phone


def c2b_payload(txn: Transaction, config: SimulatorConfig, confirmed: bool) -> dict:
    """A validation (confirmed False: no balance yet) or confirmation body."""
    first, _, rest = customer_name(txn.phone).partition(" ")
    middle, _, last = rest.rpartition(" ")
    return {
        "TransactionType": txn.transaction_type,
        "TransID": txn.receipt,
        "TransTime": nairobi_timestamp(txn.accepted_at),
        "TransAmount": f"{txn.paid_amount:.2f}",
        "BusinessShortCode": txn.party,
        "BillRefNumber": txn.bill_ref_number or "",
        "InvoiceNumber": "",
        "OrgAccountBalance": "" if not confirmed else f"{config.opening_utility_balance:.2f}",
        "ThirdPartyTransID": "",
        "MSISDN": c2b_msisdn(txn.phone, config.c2b_msisdn_style),
        "FirstName": first,
        "MiddleName": middle,
        "LastName": last,
    }


def pulled_item(txn: Transaction, config: SimulatorConfig) -> dict:
    return {
        "transactionId": txn.receipt,
        "trxDate": txn.completes_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "msisdn": c2b_msisdn(txn.phone, config.c2b_msisdn_style),
        "sender": "",
        "transactiontype": PULL_TRANSACTION_TYPES.get(txn.transaction_type or "", ""),
        "billreference": txn.bill_ref_number or "",
        "amount": f"{txn.paid_amount:.2f}",
        "organizationname": config.organisation_name,
    }


def callback_url_field(body: dict, name: str) -> str:
    """A Register URL URL: Daraja refuses one holding a word of REFERENCE 9.5, in any case."""
    url = url_field(body, name)
    if any(word in url.lower() for word in REJECTED_URL_WORDS):
        raise invalid(name)
    return url


def pull_date_field(body: dict, name: str) -> datetime:
    value = present(body, name)
    try:
        local = datetime.strptime(str(value), PULL_DATE_FORMAT).replace(tzinfo=NAIROBI)
    except ValueError:
        raise invalid(name) from None
    return local.astimezone(UTC)


# ============================================================================================
# Callback delivery
# ============================================================================================


@dataclass
class Delivery:
    url: str
    purpose: str  # "stk_callback", "result" or "queue_timeout"
    build_body: Callable[[], dict]
    generation: int
    # The id of what it reports on: the B2C OriginatorConversationID, the STK
    # CheckoutRequestID, the id a status query asked about.
    subject: str = ""


class CallbackDispatcher:
    """One thread holds the delay queue; due callbacks go to a small pool of senders."""

    def __init__(self, send: Callable[[Delivery], None], senders: int = 4) -> None:
        self._send = send
        self._queue: list[tuple[float, int, Delivery]] = []
        self._sequence = itertools.count()
        self._wakeup = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="simulator-callback")
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, delivery: Delivery) -> None:
        with self._wakeup:
            if self._stopped:
                return
            due = time.monotonic() + max(delay, 0)
            heapq.heappush(self._queue, (due, next(self._sequence), delivery))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="simulator-dispatcher", daemon=True
                )
                self._thread.start()
            self._wakeup.notify()

    def cancel_pending(self) -> None:
        with self._wakeup:
            self._queue.clear()

    def pending(self) -> int:
        with self._wakeup:
            return len(self._queue)

    def stop(self) -> None:
        with self._wakeup:
            self._stopped = True
            self._queue.clear()
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                delivery = self._next_due()
                if delivery is None:
                    return
            self._pool.submit(self._send, delivery)

    def _next_due(self) -> Delivery | None:
        """Wait (holding the condition) for the earliest delivery to fall due; None on stop."""
        while not self._stopped:
            if not self._queue:
                self._wakeup.wait()
                continue
            wait = self._queue[0][0] - time.monotonic()
            if wait <= 0:
                return heapq.heappop(self._queue)[2]
            self._wakeup.wait(wait)
        return None


# ============================================================================================
# The simulator
# ============================================================================================

DROP_CONNECTION = "simulator.drop_connection"


@dataclass
class Answer:
    status: int
    body: dict | None
    drop_connection: bool = False


@dataclass
class Call:
    """One Daraja request being answered, and its record in the request log."""

    kind: str
    path: str
    record: dict
    body: dict = field(default_factory=dict)
    phone: str | None = None
    scenario: Scenario | None = None
    arming: Arming | None = None
    generation: int = 0  # the reset() it arrived after


class DarajaBottle(bottle.Bottle):
    """Bottle that can close a connection without answering (accepted_no_response).

    Under waitress, ClientDisconnected raised before start_response closes the socket with
    nothing written, which is what a client sees when Daraja's answer is lost in transit.
    Under other servers it degrades to a 500.
    """

    def wsgi(self, environ, start_response):
        def start_unless_dropped(status, headers, exc_info=None):
            if not environ.get(DROP_CONNECTION):
                return start_response(status, headers, exc_info)
            return lambda data: None

        out = super().wsgi(environ, start_unless_dropped)
        if environ.get(DROP_CONNECTION):
            if hasattr(out, "close"):
                out.close()
            raise ClientDisconnected("accepted_no_response: answer withheld")
        return out


def header_for_record(name: str, value: str) -> str:
    if name.lower() != "authorization":
        return value
    scheme = value.split(" ", 1)[0]
    return f"{scheme} <redacted>"


def phone_of(kind: str, body: dict) -> str | None:
    """The phone a scenario keys on: STK PhoneNumber (else PartyA), B2C PartyB."""
    if kind == STK_PUSH:
        value = body.get("PhoneNumber", body.get("PartyA"))
    elif kind == B2C:
        value = body.get("PartyB")
    else:
        return None
    return None if value is None else str(value)


class Simulator:
    """The Bottle app plus everything it remembers; every state change holds `self.lock`."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.dispatcher = CallbackDispatcher(self._deliver)
        self.scenarios = ScenarioBook()
        self.tokens: dict[str, float] = {}
        self._request_log: deque[dict] = deque(maxlen=self.config.record_limit)
        self._callback_log: deque[dict] = deque(maxlen=self.config.record_limit)
        self.transactions: list[Transaction] = []
        self._held: list[Delivery] = []
        self.originator_ids: set[str] = set()
        self.receipts: set[str] = set()
        self.c2b_registrations: dict[str, C2BRegistration] = {}
        self.pull_registrations: dict[str, dict] = {}
        self.generation = 0
        self._sequence = itertools.count(1)
        self.app = self._build_app()

    # ---------------------------------------------------------------- inspection and control

    def requests(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self._request_log if path is None or r["path"] == path]

    def ledger(self) -> list[dict]:
        now = utc_now()
        with self.lock:
            moved = [txn for txn in self.transactions if txn.moved_money(now)]
        return [txn.ledger_entry() for txn in sorted(moved, key=lambda t: t.completes_at)]

    def callbacks(self) -> list[dict]:
        with self.lock:
            return [dict(c) for c in self._callback_log]

    def held(self) -> list[dict]:
        """The callbacks kept under hold_callbacks, oldest first: index (for deliver),
        purpose, url and subject (the id of the transaction or query it reports on)."""
        with self.lock:
            return [
                {"index": index, "purpose": d.purpose, "url": d.url, "subject": d.subject}
                for index, d in enumerate(self._held)
            ]

    def held_body(self, index: int) -> dict:
        """The body held callback `index` would carry if delivered now."""
        with self.lock:
            delivery = self._held[index]
        return delivery.build_body()

    def deliver(self, index: int, url: str | None = None) -> dict:
        """POST held callback `index` now (to `url` if given) and keep it, so it can be
        delivered again; returns its callbacks() entry (status or error)."""
        with self.lock:
            delivery = self._held[index]
        if url is not None:
            delivery = Delivery(url, delivery.purpose, delivery.build_body, delivery.generation)
        return self._deliver(delivery)

    def armed(self) -> list[dict]:
        with self.lock:
            return [asdict(arming) for arming in self.scenarios.armed]

    def arm(
        self, scenario: str, times: int = 1, phone: str | None = None, path: str | None = None
    ) -> dict:
        """Arm `scenario` for the next `times` requests matching the optional filters."""
        if scenario not in SCENARIOS_BY_NAME:
            raise ValueError(
                f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS_BY_NAME)}"
            )
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be a positive integer, not {times!r}")
        with self.lock:
            arming = self.scenarios.arm(
                scenario, times, path, None if phone is None else str(phone)
            )
            return asdict(arming)

    def clear_scenarios(self) -> int:
        with self.lock:
            return self.scenarios.clear()

    def reset(self) -> None:
        """Forget requests, transactions, callbacks and scenarios; tokens stay valid."""
        with self.lock:
            self._request_log.clear()
            self._callback_log.clear()
            self.transactions.clear()
            self._held.clear()
            self.originator_ids.clear()
            self.c2b_registrations.clear()
            self.pull_registrations.clear()
            self.scenarios.clear()
            self.generation += 1
            self.dispatcher.cancel_pending()

    def close(self) -> None:
        """Stop callback threads and release any held (accepted_no_response) connections."""
        self.stopping.set()
        self.dispatcher.stop()

    def balances(self) -> dict[str, Decimal]:
        now = utc_now()
        with self.lock:
            moved = [txn for txn in self.transactions if txn.moved_money(now)]
        received = sum((t.paid_amount for t in moved if t.kind in ("stk", "c2b")), Decimal(0))
        paid_out = sum((t.paid_amount for t in moved if t.kind in ("b2c", "reversal")), Decimal(0))
        fees = sum((t.fee for t in moved if t.kind == "b2c"), Decimal(0))
        return {
            "Working Account": self.config.opening_working_balance,
            "Utility Account": self.config.opening_utility_balance + received - paid_out,
            "Charges Paid Account": -fees,
        }

    # ---------------------------------------------------------------- tokens

    def issue_token(self) -> str:
        token = access_token()
        with self.lock:
            if self.config.new_token_revokes_old:
                self.tokens.clear()
            self.tokens[token] = time.monotonic() + self.config.token_ttl_seconds
        return token

    def token_is_valid(self, token: str) -> bool:
        with self.lock:
            expires = self.tokens.get(token)
        return expires is not None and time.monotonic() < expires

    def revoke_all_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    # ---------------------------------------------------------------- request plumbing

    def _open_call(self, kind: str) -> Call:
        request = bottle.request
        raw = request.body.read().decode("utf-8", "replace")
        try:
            logged_body: Any = json.loads(raw) if raw else None
        except ValueError:
            logged_body = raw
        record = {
            "id": next(self._sequence),
            "time": utc_now().isoformat(timespec="milliseconds"),
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": {k: header_for_record(k, v) for k, v in request.headers.items()},
            "body": logged_body,
            "status": None,
            "response": None,
            "scenario": None,
        }
        with self.lock:
            self._request_log.append(record)
            return Call(kind, request.path, record, generation=self.generation)

    def _finish(self, call: Call, answer: Answer) -> bottle.HTTPResponse:
        with self.lock:
            call.record["scenario"] = call.scenario.name if call.scenario else None
            call.record["status"] = None if answer.drop_connection else answer.status
            call.record["response"] = None if answer.drop_connection else answer.body
        if answer.drop_connection:
            self.stopping.wait(self.config.hang_seconds)
            bottle.request.environ[DROP_CONNECTION] = True
            return bottle.HTTPResponse(status=200)
        if is_named(call.scenario, "slow_answer"):
            self.stopping.wait(self.config.slow_answer_seconds)
        if answer.body is None:
            return bottle.HTTPResponse(body="", status=answer.status)
        return json_response(answer.body, answer.status)

    def _endpoint(self, kind: str, handler: Callable[[Call], Answer]) -> Callable:
        def endpoint():
            call = self._open_call(kind)
            try:
                answer = handler(call)
            except DarajaError as error:
                answer = Answer(error.status, error.body())
            return self._finish(call, answer)

        return endpoint

    def _bearer_endpoint(self, kind: str, handler: Callable[[Call], Answer]) -> Callable:
        def guarded(call: Call) -> Answer:
            self._require_token()
            call.body = parse_json_body(call.record["body"])
            call.phone = phone_of(kind, call.body)
            self._pick_scenario(call)
            return handler(call)

        return self._endpoint(kind, guarded)

    def _require_token(self) -> None:
        scheme, _, token = bottle.request.get_header("Authorization", "").partition(" ")
        if scheme != "Bearer" or not self.token_is_valid(token.strip()):
            raise invalid_token()

    def _pick_scenario(self, call: Call) -> None:
        """Find the request's scenario; gateway ones answer here, before any validation."""
        with self.lock:
            scenario, arming = self.scenarios.pick(call.kind, call.path, call.phone)
            call.scenario, call.arming = scenario, arming
            if scenario is None or scenario.stage != GATEWAY:
                return
            self.scenarios.use(scenario, arming, call.phone)
        raise self._gateway_error(scenario)

    def _gateway_error(self, scenario: Scenario) -> DarajaError:
        """The error a gateway scenario answers with; the token ones, as REFERENCE 1 lists
        them, revoke every token first (but api_product_not_enabled, which no token cures)."""
        if scenario.name in ("token_expiry", "token_invalid_401", "token_invalid_400"):
            self.revoke_all_tokens()
        if scenario.name in ("token_expiry", "api_product_not_enabled"):
            return invalid_token()
        if scenario.name == "token_invalid_401":
            token = bottle.request.get_header("Authorization", "").partition(" ")[2]
            return DarajaError("401.002.01", f"Error Occurred - Invalid Access Token - {token}")
        if scenario.name == "token_invalid_400":
            return DarajaError("400.003.01", "Invalid Access Token")
        if scenario.name == "spike_arrest":
            return DarajaError("500.003.02", "Spike Arrest Violation")
        return DarajaError("500.003.1001", "Internal Server Error")

    def _accept(self, call: Call) -> Scenario | None:
        """Use up the request's outcome scenario now that it passed validation. A request
        still being answered when reset() forgot everything is refused, processing nothing:
        it must not add a transaction to the new era (its client has given up on it)."""
        with self.lock:
            if call.generation != self.generation:
                raise DarajaError("500.003.1001", "Internal Server Error")
            if call.scenario is not None:
                self.scenarios.use(call.scenario, call.arming, call.phone)
        return call.scenario

    # ---------------------------------------------------------------- OAuth

    def handle_oauth(self, call: Call) -> Answer:
        with self.lock:
            scenario, arming = self.scenarios.pick(OAUTH, call.path, None)
            if scenario is not None:
                self.scenarios.use(scenario, arming, None)
        if scenario is not None:
            call.scenario = scenario
            raise self._gateway_error(scenario)
        credentials = basic_credentials(bottle.request.get_header("Authorization", ""))
        if credentials is None:
            raise DarajaError("400.008.01", "Invalid Authentication passed")
        if bottle.request.query.get("grant_type") != "client_credentials":
            raise DarajaError("400.008.02", "Invalid grant type passed")
        if credentials != (self.config.consumer_key, self.config.consumer_secret):
            # Daraja answers wrong key/secret with a bare 400 and no JSON (REFERENCE 1).
            return Answer(400, None)
        ttl = int(self.config.token_ttl_seconds)
        expires_in: int | str = str(ttl) if self.config.expires_in_as_string else ttl
        return Answer(200, {"access_token": self.issue_token(), "expires_in": expires_in})

    # ---------------------------------------------------------------- STK push and query

    def handle_stk_push(self, call: Call) -> Answer:
        now = utc_now()
        push = validate_stk_push(call.body, self.config, now)
        scenario = self._accept(call)
        with self.lock:
            merchant_request_id = gateway_id()
            txn = Transaction(
                kind="stk",
                phone=push.phone,
                party=push.shortcode,
                requested_amount=push.amount,
                paid_amount=paid_amount(push.amount, scenario, self.config),
                result_code=0,
                result_desc=SUCCESS_DESC,
                accepted_at=now,
                completes_at=now + timedelta(seconds=self.config.stk_answer_delay_seconds),
                checkout_request_id=self._unique_checkout_id(now, push.phone),
                merchant_request_id=merchant_request_id,
            )
            self._settle(txn, scenario, stk_refusal(push, self.config))
            self.transactions.append(txn)
        after_answer = self.config.stk_answer_delay_seconds
        self._schedule_result(
            scenario,
            lambda: stk_callback_body(txn, self.config),
            push.callback_url,
            "stk_callback",
            after_answer,
            subject=txn.checkout_request_id or "",
        )
        body = {
            "MerchantRequestID": txn.merchant_request_id,
            "CheckoutRequestID": txn.checkout_request_id,
            "ResponseCode": "0",
            "ResponseDescription": STK_ACCEPTED_DESC,
            "CustomerMessage": STK_ACCEPTED_DESC,
        }
        return Answer(200, body, drop_connection=is_named(scenario, "accepted_no_response"))

    def handle_stk_query(self, call: Call) -> Answer:
        check_stk_credentials(call.body, self.config, utc_now())
        checkout_id = text_field(call.body, "CheckoutRequestID", 100)
        with self.lock:
            txn = self._find_transaction(checkout_id)
        if txn is None or txn.kind != "stk":
            raise invalid("CheckoutRequestID")
        if not txn.is_complete(utc_now()):
            raise DarajaError("500.001.1001", "The transaction is being processed", checkout_id)
        body = {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": txn.merchant_request_id,
            "CheckoutRequestID": txn.checkout_request_id,
            "ResultCode": str(txn.result_code),
            "ResultDesc": txn.result_desc,
        }
        return Answer(200, body)

    # ---------------------------------------------------------------- B2C

    def handle_b2c(self, call: Call) -> Answer:
        payment = validate_b2c(call.body, generates_id=call.path == B2C_V1_PATH)
        now = utc_now()
        with self.lock:
            originator_id = payment.originator_conversation_id or gateway_id()
            if originator_id in self.originator_ids:
                raise DarajaError("500.002.1001", "Duplicate OriginatorConversationID.")
            scenario = self._accept(call)
            self.originator_ids.add(originator_id)
            txn = Transaction(
                kind="b2c",
                phone=payment.phone,
                party=payment.party_a,
                requested_amount=payment.amount,
                paid_amount=paid_amount(payment.amount, scenario, self.config),
                result_code=0,
                result_desc=SUCCESS_DESC,
                accepted_at=now,
                completes_at=now,
                processed=not is_named(scenario, "queue_timeout_never"),
                originator_conversation_id=originator_id,
                conversation_id=conversation_id(now),
                command_id=payment.command_id,
            )
            self._settle(txn, scenario, b2c_refusal(payment, self.config))
            self.transactions.append(txn)
        ids = ResultIds(originator_id, txn.conversation_id or "", placeholder_transaction_id(now))
        self._schedule_result(
            scenario,
            lambda: b2c_result_body(txn, self.balances(), self.config),
            payment.result_url,
            "result",
            queue_timeout=(
                payment.queue_timeout_url,
                lambda: queue_timeout_body(ids, B2C, self.config),
            ),
            subject=originator_id,
        )
        if is_named(scenario, "duplicate_originator_id"):
            raise DarajaError("500.002.1001", "Duplicate OriginatorConversationID.")
        return Answer(200, accepted_body(ids), is_named(scenario, "accepted_no_response"))

    # ---------------------------------------------------------------- Transaction Status, Balance

    def handle_status(self, call: Call) -> Answer:
        query = validate_status_query(call.body)
        scenario = self._accept(call)
        ids = self._new_result_ids()
        refusal = initiator_refusal(query.initiator, STATUS_ROLE, self.config)
        if refusal is None and scenario is not None and scenario.result_code is not None:
            refusal = Refusal(scenario.result_code, scenario.result_desc or "")

        def build() -> dict:
            with self.lock:
                txn = self._reversal_of(query.transaction_id, utc_now()) or self._find_transaction(
                    query.transaction_id, query.original_conversation_id
                )
            return status_result_body(ids, txn, query.occasion, self.config, utc_now(), refusal)

        timeout_body = (
            query.queue_timeout_url,
            lambda: queue_timeout_body(ids, STATUS, self.config),
        )
        self._schedule_result(
            scenario,
            build,
            query.result_url,
            "result",
            queue_timeout=timeout_body,
            subject=query.original_conversation_id or query.transaction_id or "",
        )
        return Answer(200, accepted_body(ids), is_named(scenario, "accepted_no_response"))

    def handle_reversal(self, call: Call) -> Answer:
        request = validate_reversal(call.body)
        now = utc_now()
        with self.lock:
            scenario = self._accept(call)
            original = self._collection(request.transaction_id, now)
            txn = Transaction(
                kind="reversal",
                phone=original.phone if original else "",
                party=request.receiver_party,
                requested_amount=request.amount,
                paid_amount=request.amount,
                result_code=0,
                result_desc=SUCCESS_DESC,
                accepted_at=now,
                completes_at=now,
                processed=not is_named(scenario, "queue_timeout_never"),
                originator_conversation_id=gateway_id(),
                conversation_id=conversation_id(now),
                reverses=request.transaction_id,
            )
            self._settle(txn, scenario, self._reversal_refusal(request, original, now))
            self.transactions.append(txn)
        ids = ResultIds(
            txn.originator_conversation_id or "",
            txn.conversation_id or "",
            placeholder_transaction_id(now),
        )
        self._schedule_result(
            scenario,
            lambda: reversal_result_body(txn, self.balances(), self.config),
            request.result_url,
            "result",
            queue_timeout=(
                request.queue_timeout_url,
                lambda: queue_timeout_body(ids, REVERSAL, self.config),
            ),
            subject=txn.originator_conversation_id or "",
        )
        return Answer(200, accepted_body(ids), is_named(scenario, "accepted_no_response"))

    def _reversal_refusal(
        self, request: ReversalRequest, original: Transaction | None, now: datetime
    ) -> Refusal | None:
        """How Daraja fails an accepted reversal (REFERENCE 7.2): a bad initiator (2001, 21), a
        receipt it does not know as a collection (R000002), one reversed already (R000001), a
        receiver party other than the shortcode that collected it (2028)."""
        refusal = initiator_refusal(request.initiator, REVERSAL_ROLE, self.config)
        if refusal is not None:
            return refusal
        if original is None:
            return INVALID_ORIGINAL
        if self._reversal_of(request.transaction_id, now) is not None:
            return ALREADY_REVERSED
        if request.receiver_party != original.party:
            return NOT_PERMITTED
        return None

    def _collection(self, receipt: str, now: datetime) -> Transaction | None:
        """The paid STK or C2B collection with this receipt, if any."""
        for txn in self.transactions:
            collected = txn.kind in ("stk", "c2b")
            if collected and txn.receipt == receipt and txn.moved_money(now):
                return txn
        return None

    def _reversal_of(self, receipt: str | None, now: datetime) -> Transaction | None:
        """The completed reversal of this receipt, if any. A Transaction Status query naming a
        reversed receipt is answered with it (see docs/simulator.md: unverified)."""
        for txn in self.transactions:
            reverses_it = receipt and txn.kind == "reversal" and txn.reverses == receipt
            if reverses_it and txn.moved_money(now):
                return txn
        return None

    def handle_balance(self, call: Call) -> Answer:
        query = validate_balance_query(call.body)
        scenario = self._accept(call)
        ids = self._new_result_ids()
        refusal = initiator_refusal(query.initiator, BALANCE_ROLE, self.config)

        def build() -> dict:
            return balance_result_body(ids, self.balances(), utc_now(), self.config, refusal)

        timeout_body = (
            query.queue_timeout_url,
            lambda: queue_timeout_body(ids, BALANCE, self.config),
        )
        self._schedule_result(
            scenario, build, query.result_url, "result", queue_timeout=timeout_body
        )
        return Answer(200, accepted_body(ids), is_named(scenario, "accepted_no_response"))

    # ---------------------------------------------------------------- C2B and Pull Transactions

    def handle_c2b_register(self, call: Call) -> Answer:
        shortcode = numeric_field(call.body, "ShortCode", (5, 7))
        if shortcode != self.config.shortcode and shortcode not in self.config.tills:
            raise invalid("ShortCode")
        registration = C2BRegistration(
            shortcode=shortcode,
            response_type=choice_field(call.body, "ResponseType", ("Completed", "Cancelled")),
            confirmation_url=callback_url_field(call.body, "ConfirmationURL"),
            validation_url=callback_url_field(call.body, "ValidationURL"),
        )
        with self.lock:
            self.c2b_registrations[shortcode] = registration
        body = {
            "OriginatorCoversationID": gateway_id(),  # Daraja's own spelling
            "ConversationID": "",
            "ResponseCode": "0",
            "ResponseDescription": "Success",
        }
        return Answer(200, body)

    def handle_pull_register(self, call: Call) -> Answer:
        shortcode = numeric_field(call.body, "ShortCode", (5, 7))
        choice_field(call.body, "RequestType", ("Pull",))
        nominated = phone_field(call.body, "NominatedNumber")
        callback_url_field(call.body, "CallBackURL")
        with self.lock:
            self.pull_registrations[shortcode] = {"nominated_number": nominated}
        body = {
            "ResponseRefID": gateway_id(),
            "ResponseStatus": "1000",
            "ShortCode": shortcode,
            "ResponseDescription": "Shortcode Registered Successfully",
        }
        return Answer(200, body)

    def handle_pull_query(self, call: Call) -> Answer:
        """C2B transactions of the shortcode (and its tills) completed between StartDate and
        EndDate within the last 48 hours, oldest first, a page from OffSetValue."""
        shortcode = numeric_field(call.body, "ShortCode", (5, 7))
        start, end = pull_date_field(call.body, "StartDate"), pull_date_field(call.body, "EndDate")
        offset = call.body.get("OffSetValue", 0)
        if not is_number_like(offset):
            raise invalid("OffSetValue")
        now = utc_now()
        start = max(start, now - timedelta(hours=PULL_TRANSACTIONS_HOURS))
        parties = {shortcode} | {
            till for till, head in self.config.tills.items() if head == shortcode
        }
        with self.lock:
            found = [
                txn
                for txn in self.transactions
                if txn.kind == "c2b"
                and txn.party in parties
                and txn.moved_money(now)
                and start <= txn.completes_at.replace(microsecond=0) <= end
            ]
        found.sort(key=lambda txn: txn.completes_at)
        page = found[int(offset) : int(offset) + self.config.pull_page_size]
        body = {
            "ResponseRefID": gateway_id(),
            "ResponseCode": "1000",
            "ResponseMessage": "Success",
            "Response": [[pulled_item(txn, self.config) for txn in page]],
        }
        return Answer(200, body)

    def customer_pays(self, request: dict) -> dict:
        """A customer pays the paybill or till from the phone (the /simulator/c2b control
        route): validation first if the shortcode has URLs and validation on, then the money
        moves and the confirmation goes out, as the `scenario` says. ValueError names a bad
        field of `request`."""
        scenario = str(request.get("scenario") or "success")
        if scenario not in C2B_SCENARIOS:
            raise ValueError(f"scenario: one of {', '.join(C2B_SCENARIOS)}, not {scenario!r}")
        txn = self._c2b_transaction(request)
        with self.lock:
            txn.receipt = self._unique_receipt(txn.accepted_at)  # validation carries it too
            registration = self.c2b_registrations.get(txn.party)
            registration = registration or self.c2b_registrations.get(
                self.config.tills.get(txn.party, "")
            )
        verdict = self._c2b_validation(txn, registration, scenario)
        if verdict["status"] != "completed":
            return {**verdict, "TransID": None}
        with self.lock:
            self.transactions.append(txn)
        sent = self._c2b_confirm(txn, registration, scenario)
        return {**verdict, "TransID": txn.receipt, "confirmations": sent}

    def _c2b_transaction(self, request: dict) -> Transaction:
        amount = request.get("amount")
        if not is_number_like(amount) or not STK_LIMITS[0] <= int(amount) <= STK_LIMITS[1]:
            raise ValueError(f"amount: whole shillings from 1 to 250,000, not {amount!r}")
        phone = str(request.get("phone") or "254708374149")
        if not PHONE_PATTERN.fullmatch(phone):
            raise ValueError(f"phone: 2547XXXXXXXX or 2541XXXXXXXX, not {phone!r}")
        kind = str(request.get("kind") or "paybill")
        if kind not in C2B_TRANSACTION_TYPES:
            raise ValueError(f"kind: paybill or till, not {kind!r}")
        default_party = (
            self.config.shortcode if kind == "paybill" else next(iter(self.config.tills))
        )
        now = utc_now()
        return Transaction(
            kind="c2b",
            phone=phone,
            party=str(request.get("shortcode") or default_party),
            requested_amount=int(amount),
            paid_amount=int(amount),
            result_code=0,
            result_desc="Completed",
            accepted_at=now,
            completes_at=now,
            bill_ref_number=str(request.get("bill_ref") or ""),
            transaction_type=C2B_TRANSACTION_TYPES[kind],
        )

    def _c2b_validation(
        self, txn: Transaction, registration: C2BRegistration | None, scenario: str
    ) -> dict:
        """Ask the validation URL (if any, and validation is on): {"status": "completed",
        "rejected" or "cancelled", "validation": what came of asking}."""
        if registration is None or not self.config.c2b_validation_enabled:
            return {"status": "completed", "validation": "not asked"}
        answer = self._post_validation(txn, registration.validation_url)
        timed_out = scenario == "validation_timeout" or answer is None
        if timed_out:
            status = "completed" if registration.response_type == "Completed" else "cancelled"
            return {"status": status, "validation": f"no answer in time: {status}"}
        code = str(answer.get("ResultCode"))
        if code == "0":
            return {"status": "completed", "validation": "accepted"}
        return {"status": "rejected", "validation": f"rejected {code}", "result_code": code}

    def _post_validation(self, txn: Transaction, url: str) -> dict | None:
        """The validation URL's JSON answer, or None when it gave none in time."""
        body = c2b_payload(txn, self.config, confirmed=False)
        entry = {"time": utc_now().isoformat(timespec="milliseconds"), "purpose": "c2b_validation"}
        entry.update({"url": url, "body": body, "status": None, "error": None})
        answer = None
        try:
            response = requests.post(
                url, json=body, timeout=self.config.c2b_validation_timeout_seconds
            )
            entry["status"] = response.status_code
            answer = response.json() if response.status_code == 200 else None
        except Exception as error:  # noqa: BLE001 - M-Pesa treats any failure as no answer
            entry["error"] = f"{type(error).__name__}: {error}"
        with self.lock:
            self._callback_log.append(entry)
        return answer if isinstance(answer, dict) else None

    def _c2b_confirm(
        self, txn: Transaction, registration: C2BRegistration | None, scenario: str
    ) -> int:
        """Schedule the confirmation(s) the scenario says; how many."""
        if registration is None or scenario == "confirmation_dropped":
            return 0
        times = 2 if scenario == "confirmation_twice" else 1
        for sending in range(times):
            delivery = Delivery(
                registration.confirmation_url,
                "c2b_confirmation",
                lambda: c2b_payload(txn, self.config, confirmed=True),
                self.generation,
                txn.receipt or "",
            )
            with self.lock:
                if self.config.hold_callbacks:
                    self._held.append(delivery)
                    continue
            gap = sending * self.config.duplicate_callback_gap_seconds
            self.dispatcher.schedule(self.config.callback_delay_seconds + gap, delivery)
        return times

    def control_c2b(self) -> bottle.HTTPResponse:
        body = bottle.request.json if bottle.request.content_length else None
        if not isinstance(body, dict):
            return json_response({"error": "send a JSON object with an `amount`"}, 400)
        try:
            return json_response(self.customer_pays(body), 200)
        except ValueError as error:
            return json_response({"error": str(error)}, 400)

    def c2b_registered(self) -> dict:
        with self.lock:
            return {
                "registrations": [asdict(r) for r in self.c2b_registrations.values()],
                "pull_registrations": dict(self.pull_registrations),
            }

    # ---------------------------------------------------------------- transactions

    def _settle(self, txn: Transaction, scenario: Scenario | None, refusal: Refusal | None) -> None:
        """Decide the outcome: Daraja's own refusal of the request, else the scenario's failure
        code, else paid with a fresh receipt."""
        if refusal is None and scenario is not None and scenario.result_code is not None:
            refusal = Refusal(scenario.result_code, scenario.result_desc or "")
        if refusal is not None:
            txn.result_code, txn.result_desc = refusal.code, refusal.desc
            return
        txn.receipt = self._unique_receipt(txn.completes_at)
        if txn.kind == "b2c":
            txn.fee = b2c_fee(txn.paid_amount)

    def _unique_receipt(self, moment: datetime) -> str:
        receipt = receipt_number(moment)
        while receipt in self.receipts:
            receipt = receipt_number(moment)
        self.receipts.add(receipt)
        return receipt

    def _unique_checkout_id(self, moment: datetime, phone: str) -> str:
        taken = {txn.checkout_request_id for txn in self.transactions}
        candidate = checkout_request_id(moment, phone, next(self._sequence))
        while candidate in taken:
            candidate = checkout_request_id(moment, phone, next(self._sequence))
        return candidate

    def _find_transaction(self, *keys: str | None) -> Transaction | None:
        """By receipt or by any of its ids (OriginatorConversationID, CheckoutRequestID...)."""
        for key in filter(None, keys):
            for txn in self.transactions:
                if key == txn.receipt or key in txn.identifiers():
                    return txn
        return None

    def _new_result_ids(self) -> ResultIds:
        now = utc_now()
        return ResultIds(gateway_id(), conversation_id(now), placeholder_transaction_id(now))

    # ---------------------------------------------------------------- callbacks

    def _schedule_result(
        self,
        scenario: Scenario | None,
        build_body: Callable[[], dict],
        url: str,
        purpose: str,
        offset: float = 0.0,
        queue_timeout: tuple[str, Callable[[], dict]] | None = None,
        subject: str = "",
    ) -> None:
        """Schedule the result callback(s) the way the scenario says they go."""
        name = scenario.name if scenario else "success"
        config = self.config

        def schedule(delay: float, url: str, purpose: str, build: Callable[[], dict]) -> None:
            with self.lock:
                delivery = Delivery(url, purpose, build, self.generation, subject)
                if config.hold_callbacks:
                    self._held.append(delivery)
                    return
            self.dispatcher.schedule(offset + delay, delivery)

        if name == "callback_dropped":
            return
        if name in ("queue_timeout", "queue_timeout_never") and queue_timeout:
            timeout_url, timeout_body = queue_timeout
            schedule(config.callback_delay_seconds, timeout_url, "queue_timeout", timeout_body)
            if name == "queue_timeout_never":
                return
            schedule(config.delayed_callback_seconds, url, purpose, build_body)
            return
        delay = (
            config.delayed_callback_seconds
            if name == "callback_delayed"
            else config.callback_delay_seconds
        )
        schedule(delay, url, purpose, build_body)
        if name == "callback_twice":
            schedule(delay + config.duplicate_callback_gap_seconds, url, purpose, build_body)

    def _deliver(self, delivery: Delivery) -> dict:
        """POST one callback; failures are recorded, never raised. Returns the record."""
        with self.lock:
            if delivery.generation != self.generation:
                return {"status": None, "error": "reset since it was scheduled"}
        entry: dict[str, Any] = {
            "time": utc_now().isoformat(timespec="milliseconds"),
            "purpose": delivery.purpose,
            "url": delivery.url,
            "body": None,
            "status": None,
            "error": None,
        }
        try:
            entry["body"] = delivery.build_body()
            answer = requests.post(
                delivery.url, json=entry["body"], timeout=self.config.callback_timeout_seconds
            )
            entry["status"] = answer.status_code
        except Exception as error:  # a callback receiver's failure must not kill the sender
            entry["error"] = f"{type(error).__name__}: {error}"
            log.info("callback to %s failed: %s", delivery.url, entry["error"])
        with self.lock:
            if delivery.generation == self.generation:
                self._callback_log.append(entry)
        return entry

    # ---------------------------------------------------------------- control routes

    def control_arm(self) -> bottle.HTTPResponse:
        body = bottle.request.json if bottle.request.content_length else None
        if not isinstance(body, dict):
            return json_response({"error": "send a JSON object with a `scenario`"}, 400)
        try:
            arming = self.arm(
                body.get("scenario", ""),
                times=body.get("times", 1),
                phone=body.get("phone"),
                path=body.get("path"),
            )
        except ValueError as error:
            return json_response({"error": str(error)}, 400)
        return json_response({"armed": arming}, 201)

    def _build_app(self) -> bottle.Bottle:
        app = DarajaBottle()
        daraja_routes = (
            (OAUTH_PATH, "GET", self._endpoint(OAUTH, self.handle_oauth)),
            (STK_PUSH_PATH, "POST", self._bearer_endpoint(STK_PUSH, self.handle_stk_push)),
            (STK_QUERY_PATH, "POST", self._bearer_endpoint(STK_QUERY, self.handle_stk_query)),
            (B2C_V3_PATH, "POST", self._bearer_endpoint(B2C, self.handle_b2c)),
            (B2C_V1_PATH, "POST", self._bearer_endpoint(B2C, self.handle_b2c)),
            (STATUS_PATH, "POST", self._bearer_endpoint(STATUS, self.handle_status)),
            (BALANCE_PATH, "POST", self._bearer_endpoint(BALANCE, self.handle_balance)),
            (REVERSAL_PATH, "POST", self._bearer_endpoint(REVERSAL, self.handle_reversal)),
            (
                PULL_REGISTER_PATH,
                "POST",
                self._bearer_endpoint(PULL_REGISTER, self.handle_pull_register),
            ),
            (PULL_QUERY_PATH, "POST", self._bearer_endpoint(PULL_QUERY, self.handle_pull_query)),
        ) + tuple(
            (path, "POST", self._bearer_endpoint(C2B_REGISTER, self.handle_c2b_register))
            for path in C2B_REGISTER_PATHS
        )
        for path, method, callback in daraja_routes:
            app.route(path, method, callback)
        app.route("/simulator/scenarios", "GET", lambda: {"armed": self.armed()})
        app.route("/simulator/scenarios", "POST", self.control_arm)
        app.route("/simulator/scenarios", "DELETE", lambda: {"cleared": self.clear_scenarios()})
        app.route(
            "/simulator/requests",
            "GET",
            lambda: {"requests": self.requests(bottle.request.query.get("path") or None)},
        )
        app.route("/simulator/ledger", "GET", lambda: {"ledger": self.ledger()})
        app.route("/simulator/callbacks", "GET", lambda: {"callbacks": self.callbacks()})
        app.route("/simulator/reset", "POST", self._reset_route)
        app.route("/simulator/c2b", "POST", self.control_c2b)
        app.route("/simulator/c2b/registrations", "GET", self.c2b_registered)
        app.error(404)(lambda error: daraja_error_page("404.001.01", "Resource not found"))
        app.error(405)(lambda error: daraja_error_page("405.001", "Method Not Allowed"))
        return app

    def _reset_route(self) -> dict:
        self.reset()
        return {"reset": True}


def paid_amount(requested: int, scenario: Scenario | None, config: SimulatorConfig) -> int:
    if not is_named(scenario, "amount_mismatch"):
        return requested
    if config.mismatched_amount is not None:
        return config.mismatched_amount
    return requested - 1 if requested > 1 else requested + 1


def is_named(scenario: Scenario | None, name: str) -> bool:
    return scenario is not None and scenario.name == name


def parse_json_body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise DarajaError("400.002.05", "Invalid request payload")
    if "json" not in bottle.request.content_type:
        # Daraja rejects a JSON body sent without Content-Type: application/json (REFERENCE 8).
        raise invalid("Content-Type")
    return body


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme != "Basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, colon, secret = decoded.partition(":")
    return (key, secret) if colon else None


def json_response(body: dict, status: int) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        body=json.dumps(body), status=status, headers={"Content-Type": "application/json"}
    )


def daraja_error_page(code: str, message: str) -> str:
    bottle.response.content_type = "application/json"
    return json.dumps(DarajaError(code, message).body())


def make_app(config: SimulatorConfig | None = None) -> Simulator:
    """A simulator whose `.app` any WSGI server can serve; `start()` serves it for you."""
    return Simulator(config)


# ============================================================================================
# Serving
# ============================================================================================


class BackgroundServer:
    """A WSGI app served by waitress on a daemon thread; `stop()` closes it without hanging."""

    def __init__(
        self,
        app: Callable,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 8,
        create_server: Callable = waitress.create_server,
        **options,
    ) -> None:
        self._socket_map: dict = {}
        self.server = create_server(
            app, map=self._socket_map, host=host, port=port, threads=threads, **options
        )
        self.base_url = f"http://{host}:{self.server.effective_port}"
        self._thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)
        self._thread.start()

    def stop(self, drain_seconds: float = 3) -> None:
        """Stop, waiting up to `drain_seconds` for the requests being answered to finish."""
        # Workers first, so none pulls the trigger after it is closed; then the sockets, closed
        # from the loop's own thread so asyncore.loop ends at once.
        self.server.task_dispatcher.shutdown(timeout=drain_seconds)
        try:
            self.server.trigger.pull_trigger(self._close_sockets)
        except OSError:  # the trigger pipe is already gone: close from here instead
            log.warning("waitress trigger unusable at stop; closing sockets directly")
            self._close_sockets()
        self._thread.join(timeout=3)
        if self._thread.is_alive():
            try:
                self._close_sockets()
            except OSError:  # the loop thread closed them meanwhile
                log.warning("waitress sockets already closed at stop")

    def _close_sockets(self) -> None:
        for dispatcher in list(self._socket_map.values()):
            if isinstance(dispatcher, HTTPChannel):
                dispatcher.handle_close()  # also wakes a worker blocked writing to it
            else:
                dispatcher.close()


class RunningSimulator:
    """A simulator served in the background; `stop()` or use it as a context manager."""

    def __init__(self, simulator: Simulator, host: str, port: int) -> None:
        self.simulator = simulator
        self._server = BackgroundServer(simulator.app, host, port)
        self.base_url = self._server.base_url

    def stop(self) -> None:
        self.simulator.close()  # first, so held accepted_no_response handlers let go
        self._server.stop()

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def with_controls(app: Callable, simulator: Simulator) -> Callable:
    """A WSGI app answering the simulator's control routes (CONTROL_PREFIX) from `simulator`
    and every other path from `app`: how `python service.py` serves them on its own port. The
    Daraja routes stay on the simulator's own server, where the service calls them."""

    def dispatch(environ: dict, start_response: Callable):
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return simulator.app(environ, start_response)
        return app(environ, start_response)

    return dispatch


def start(
    host: str = "127.0.0.1", port: int = 0, config: SimulatorConfig | None = None
) -> RunningSimulator:
    """Serve a fresh simulator in a background thread; port 0 picks a free port."""
    return RunningSimulator(make_app(config), host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the Daraja simulator (waitress).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--callback-delay",
        type=float,
        default=SimulatorConfig.callback_delay_seconds,
        help="seconds between a transaction completing and its callback",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    simulator = make_app(SimulatorConfig(callback_delay_seconds=args.callback_delay))
    server = waitress.create_server(simulator.app, host=args.host, port=args.port, threads=8)
    config = simulator.config
    print(
        f"Daraja simulator on http://{args.host}:{server.effective_port}  "
        f"(consumer key {config.consumer_key}, secret {config.consumer_secret}, "
        f"shortcode {config.shortcode})",
        flush=True,
    )
    try:
        server.run()
    finally:
        simulator.close()


if __name__ == "__main__":
    main()
