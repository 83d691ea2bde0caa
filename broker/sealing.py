"""Fields encrypted to one recipient: the one format the router writes and the
recipient's SDK opens.

HPKE (RFC 9180: X25519, HKDF-SHA-256, AES-128-GCM) to the recipient's public key, bound
to the record id and the field's path, so a sealed value cannot be moved to another
field or record: ``hpke1.<kid>.<base64url ciphertext>``. Pure code: no Kafka.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from broker import base64url
from broker.contract import SEALED_PREFIX

_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)


def _context(record_id: str, path: str) -> bytes:
    return f"{record_id}:{path}".encode()


def seal(value: str, kid: str, key: X25519PublicKey, *, record_id: str, path: str) -> str:
    """``value`` encrypted to the holder of ``kid``'s private key."""
    ciphertext = _SUITE.encrypt(value.encode(), key, info=_context(record_id, path))
    return f"{SEALED_PREFIX}.{kid}.{base64url.encode(ciphertext)}"


def sealed_kid(value: str) -> str:
    """The key id a sealed value was encrypted to."""
    return value.split(".", 2)[1] if value.count(".") >= 2 else ""


def unseal(value: str, key: X25519PrivateKey, *, record_id: str, path: str) -> str:
    """The plain text of a sealed value; raises ValueError when it does not open (another
    recipient's key, another field or record, or altered bytes)."""
    try:
        _, _, body = value.split(".", 2)
        ciphertext = base64url.decode(body)
        return _SUITE.decrypt(ciphertext, key, info=_context(record_id, path)).decode()
    except Exception as exc:
        raise ValueError(f"sealed value at {path} does not open with this key") from exc
