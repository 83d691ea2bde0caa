"""Record provenance: the source member signs what it publishes; the router verifies it.

Scheme (v1): Ed25519 over ``b"action.record.v1\\0" + value``, where ``value`` is the exact
framed Avro bytes written to the member's inbound topic. The signature travels in the
``action.sig`` header (64 raw bytes) and the signing key's id in ``action.kid``. Every key
a member has listed in members.yaml verifies, so records signed before a rotation still
verify after it. Pure code: no Kafka.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.errors import ProvenanceError
from broker.policy.model import MemberRegistry

SIGNATURE_HEADER = "action.sig"
KEY_ID_HEADER = "action.kid"
_CONTEXT = b"action.record.v1\x00"


def sign_record(value: bytes, key: Ed25519PrivateKey, kid: str) -> list[tuple[str, bytes]]:
    """The headers that carry ``value``'s signature."""
    return [(KEY_ID_HEADER, kid.encode()), (SIGNATURE_HEADER, key.sign(_CONTEXT + value))]


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Kafka headers as a dict (the last of a repeated name wins)."""
    return {name: value or b"" for name, value in headers or ()}


class SignatureVerifier:
    """Verifies records against the member registry's signing keys."""

    def __init__(self, registry: MemberRegistry) -> None:
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for member in registry.members:
            for key in member.signing_keys:
                raw = base64.urlsafe_b64decode(key.public_key + "=" * (-len(key.public_key) % 4))
                self._keys[key.kid] = (member.id, Ed25519PublicKey.from_public_bytes(raw))

    def verify(self, value: bytes, headers: Mapping[str, bytes], source: str) -> str:
        """Check that ``source`` signed ``value``; returns the key id, raises ProvenanceError."""
        kid_bytes, signature = headers.get(KEY_ID_HEADER), headers.get(SIGNATURE_HEADER)
        if not kid_bytes or not signature:
            raise ProvenanceError(
                f"record from {source} is unsigned: it needs the {KEY_ID_HEADER} and "
                f"{SIGNATURE_HEADER} headers",
                reason="signature.missing",
            )
        kid = kid_bytes.decode("utf-8", "replace")
        known = self._keys.get(kid)
        if known is None:
            raise ProvenanceError(
                f"record from {source} is signed with key {kid!r}, which is not in members.yaml",
                reason="signature.unknown_key",
            )
        owner, public_key = known
        if owner != source:
            raise ProvenanceError(
                f"record claims source {source} but is signed with {owner}'s key {kid!r}",
                reason="signature.wrong_signer",
            )
        try:
            public_key.verify(signature, _CONTEXT + value)
        except InvalidSignature:
            raise ProvenanceError(
                f"record from {source}: the signature made with key {kid!r} does not verify "
                "(altered in transit, or signed over other bytes)",
                reason="signature.invalid",
            ) from None
        return kid
