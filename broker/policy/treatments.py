"""Field treatments: how a value is changed before it reaches a recipient. Pure functions.

* hash: a match token (:mod:`broker.match_tokens`).
* mask: all but the last four characters replaced by ``*``.
* generalize: a coarser value (address -> country, IP -> network, phone -> country code,
  URL -> registrable domain, e-mail -> its domain).
* encrypt: sealed to the recipient's public key (:mod:`broker.sealing`, the format the
  recipient's SDK opens).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from broker import base64url
from broker.contract import MASK_CHARACTER
from broker.normalize import registrable_domain

MASK_KEEP_LAST = 4


@dataclass(frozen=True)
class RecipientKey:
    """A recipient's current X25519 encryption key."""

    kid: str
    public_key: X25519PublicKey = field(repr=False)

    @classmethod
    def from_base64(cls, kid: str, value: str) -> RecipientKey:
        raw = base64url.decode(value)
        return cls(kid, X25519PublicKey.from_public_bytes(raw))


def mask(value: str) -> str:
    if len(value) <= MASK_KEEP_LAST:
        return MASK_CHARACTER * len(value)
    return MASK_CHARACTER * (len(value) - MASK_KEEP_LAST) + value[-MASK_KEEP_LAST:]


def _generalize_ip(value: str) -> str:
    address = ipaddress.ip_address(value)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _generalize_phone(value: str) -> str:
    return f"+{phonenumbers.parse(value).country_code}"


def _generalize_address(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "lines": [],
        "city": None,
        "region": None,
        "postal_code": None,
        "country": value.get("country"),
    }


#: Fields that have a coarser form, and how to compute it (element-wise for lists).
GENERALIZERS: dict[str, Any] = {
    "seller.addresses": _generalize_address,
    "seller.ip_addresses": _generalize_ip,
    "seller.phone": _generalize_phone,
    "seller.store_url": lambda url: f"https://{registrable_domain(url)}/",
    "seller.email": lambda email: "@" + email.rpartition("@")[2],
}


def generalize(path: str, value: Any) -> Any:
    fn = GENERALIZERS[path]
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            coarse = fn(item)
            if coarse not in out:
                out.append(coarse)
        return out
    return fn(value)
