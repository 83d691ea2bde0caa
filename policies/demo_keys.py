"""Deterministic key pairs for the example consortium: DEMO AND TESTS ONLY.

The example member registry (policies/members.yaml) lists public keys derived here from a
public seed, so the demo and the tests can recreate the private halves without shipping
key files. Real members generate their own keys; never use these outside the example.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

_SEED = "action-broker example consortium, public seed, not a secret"


def _seed(member: str, purpose: str) -> bytes:
    return hashlib.sha256(f"{_SEED}:{member}:{purpose}".encode()).digest()


def demo_signing_key(member: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_seed(member, "signing"))


def demo_encryption_key(member: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_seed(member, "encryption"))


def public_b64(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode()


def demo_match_secret() -> bytes:
    """The example consortium's match-token secret (public: demo and tests only)."""
    return _seed("consortium", "match-token")


def demo_router_key() -> Ed25519PrivateKey:
    """The example consortium's router signing key (public: demo and tests only)."""
    return Ed25519PrivateKey.from_private_bytes(_seed("router", "signing"))
