"""Callback authenticity: Daraja does not sign callbacks, so a delivery must name the URL's
unguessable token and come from an allowed address (proxy-aware), within a size cap."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from mpesa_service.api_keys import persisted_secret
from mpesa_service.settings import Settings
from recon.rules import REJECTED_URL_WORDS

SAFARICOM_CALLBACK_IPS = [
    "196.201.214.200",
    "196.201.214.206",
    "196.201.213.114",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.128",
    "196.201.212.129",
    "196.201.212.132",
    "196.201.212.136",
    "196.201.212.138",
    "196.201.212.69",
    "196.201.212.74",
]


def parse_networks(entries: list[str]) -> list:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def in_networks(address: str, networks: list) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str, trusted_proxies: list) -> str:
    """The caller's address: the peer, unless the peer is a trusted proxy, in which case the
    right-most X-Forwarded-For entry that is not itself a trusted proxy."""
    if not in_networks(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted_proxies):
            return hop
    return peer


class Refusal(NamedTuple):
    """Why a delivery is refused, and the HTTP status it is answered with."""

    status: int
    reason: str


@dataclass(frozen=True)
class CallbackPolicy:
    """Who may deliver callbacks: the URL token, the allowed networks, the body cap."""

    token: str
    allowed: list | None  # None: any address
    trusted_proxies: list
    max_bytes: int

    def refusal(self, token: str, peer: str, forwarded_for: str) -> Refusal | None:
        """Why the delivery must be refused, or None."""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return Refusal(404, "wrong callback token")
        address = client_address(peer, forwarded_for, self.trusted_proxies)
        if self.allowed is not None and not in_networks(address, self.allowed):
            return Refusal(403, f"callback from {address}, which is not an allowed address")
        return None


def callback_policy(settings: Settings, token: str) -> CallbackPolicy:
    allowed_setting = settings.listing("CALLBACK_ALLOWED_IPS")
    if allowed_setting == ["*"]:
        allowed = None
    elif allowed_setting:
        allowed = parse_networks(allowed_setting)
    elif settings.environment == "production":
        allowed = parse_networks(SAFARICOM_CALLBACK_IPS)
    else:
        allowed = None
    return CallbackPolicy(
        token=token,
        allowed=allowed,
        trusted_proxies=parse_networks(settings.listing("TRUSTED_PROXIES")),
        max_bytes=settings.integer("CALLBACK_MAX_BYTES"),
    )


def callback_token(settings: Settings) -> str:
    """CALLBACK_TOKEN, or outside production a random token kept in data/callback_token so
    callback URLs handed to Daraja stay valid across restarts."""
    return settings["CALLBACK_TOKEN"] or persisted_secret("callback_token", url_token)


def url_token() -> str:
    """A random token for a callback URL, free of the words Daraja rejects in one (about one
    random token in a hundred holds "exe", "cmd" or "sql")."""
    while True:
        token = secrets.token_urlsafe(32)
        if not any(word in token.lower() for word in REJECTED_URL_WORDS):
            return token
