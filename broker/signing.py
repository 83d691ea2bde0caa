"""Record provenance: the source member signs what it publishes; the router verifies it.

Scheme v1: Ed25519 over ``b"action.record.v1\\0" + value``, where ``value`` is the exact
framed Avro bytes written to the member's inbound topic. The signature travels in the
``action.sig`` header (64 raw bytes) and the signing key's id in ``action.kid``.

Scheme v2 (what the SDK publishes): no ``action.sig``; the field proof
(:mod:`broker.provenance`) also commits to ``value`` as one more, salted leaf, so its one
signature covers the exact bytes and every field, and the router checks one signature
per record instead of two. A record that carries ``action.sig`` has it checked, whatever
else it carries.

Every key a member has listed in members.yaml verifies, so records signed before a
rotation still verify after it. Pure code: no Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker import base64url
from broker.contract import (
    KEY_ID_HEADER,
    ROUTER_KEY_ID_HEADER,
    ROUTER_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
)
from broker.errors import ProvenanceError
from broker.membership import MemberKey, MemberRegistry

_CONTEXT = b"action.record.v1\x00"
# Feed records: the router signs what it delivered, bound to the decision and the recipient,
# so a record cannot be moved into another member's feed or another decision's place.
_FEED_CONTEXT = b"action.feed.v1\x00"


def sign_record(value: bytes, key: Ed25519PrivateKey, kid: str) -> list[tuple[str, bytes]]:
    """The headers that carry ``value``'s signature."""
    return [(KEY_ID_HEADER, kid.encode()), (SIGNATURE_HEADER, key.sign(_CONTEXT + value))]


def key_id_header(kid: str) -> list[tuple[str, bytes]]:
    """The header naming the signing key, all a scheme-v2 record carries beside its proof."""
    return [(KEY_ID_HEADER, kid.encode())]


def _feed_message(value: bytes, decision_id: str, recipient: str) -> bytes:
    return _FEED_CONTEXT + decision_id.encode() + b"\x00" + recipient.encode() + b"\x00" + value


def sign_feed_record(
    value: bytes, decision_id: str, recipient: str, key: Ed25519PrivateKey, kid: str
) -> list[tuple[str, bytes]]:
    """The headers that carry the router's signature of one delivered record."""
    signature = key.sign(_feed_message(value, decision_id, recipient))
    return [(ROUTER_KEY_ID_HEADER, kid.encode()), (ROUTER_SIGNATURE_HEADER, signature)]


def public_keys(keys: Iterable[MemberKey]) -> dict[str, Ed25519PublicKey]:
    out = {}
    for key in keys:
        raw = base64url.decode(key.public_key)
        out[key.kid] = Ed25519PublicKey.from_public_bytes(raw)
    return out


def verify_feed_record(
    value: bytes,
    headers: Mapping[str, bytes],
    decision_id: str,
    recipient: str,
    router_keys: Mapping[str, Ed25519PublicKey],
) -> None:
    """Check that the router delivered ``value`` to ``recipient`` under ``decision_id``."""
    kid = headers.get(ROUTER_KEY_ID_HEADER, b"").decode("utf-8", "replace")
    signature = headers.get(ROUTER_SIGNATURE_HEADER)
    if not kid or not signature:
        raise ProvenanceError(
            "feed record is not signed by the router", reason="router_signature.missing"
        )
    key = router_keys.get(kid)
    if key is None:
        raise ProvenanceError(
            f"feed record signed with unknown router key {kid!r}",
            reason="router_signature.unknown_key",
        )
    try:
        key.verify(signature, _feed_message(value, decision_id, recipient))
    except InvalidSignature:
        raise ProvenanceError(
            "the router's signature does not verify: the record was altered, or delivered "
            "to another member or under another decision",
            reason="router_signature.invalid",
        ) from None


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Kafka headers as a dict (the last of a repeated name wins)."""
    return {name: value or b"" for name, value in headers or ()}


class SignatureVerifier:
    """Verifies records against the member registry's signing keys."""

    def __init__(self, registry: MemberRegistry) -> None:
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for member in registry.members:
            for kid, public_key in public_keys(member.signing_keys).items():
                self._keys[kid] = (member.id, public_key)

    def public_key(self, kid: str) -> Ed25519PublicKey:
        return self._keys[kid][1]

    def verify(self, value: bytes, headers: Mapping[str, bytes], source: str) -> str:
        """Check that ``source`` signed ``value``; returns the key id, raises ProvenanceError."""
        if not headers.get(SIGNATURE_HEADER):
            raise ProvenanceError(
                f"record from {source} is unsigned: it needs the {KEY_ID_HEADER} and "
                f"{SIGNATURE_HEADER} headers",
                reason="signature.missing",
            )
        kid, public_key = self.signer(headers, source)
        self.check(value, headers, kid, public_key)
        return kid

    def signer(self, headers: Mapping[str, bytes], source: str) -> tuple[str, Ed25519PublicKey]:
        """The key id and key that signed a record from ``source``: the header names a key
        listed for ``source`` in members.yaml. Checks no signature yet."""
        kid_bytes = headers.get(KEY_ID_HEADER)
        if not kid_bytes:
            raise ProvenanceError(
                f"record from {source} is unsigned: it needs the {KEY_ID_HEADER} header and "
                f"a signature ({SIGNATURE_HEADER}, or a field proof over the record)",
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
        return kid, public_key

    @staticmethod
    def check(
        value: bytes, headers: Mapping[str, bytes], kid: str, public_key: Ed25519PublicKey
    ) -> None:
        """Check the record-wide signature (scheme v1) of ``value`` with the signer's key."""
        try:
            public_key.verify(headers.get(SIGNATURE_HEADER) or b"", _CONTEXT + value)
        except InvalidSignature:
            raise ProvenanceError(
                f"the record's signature made with key {kid!r} does not verify "
                "(altered in transit, or signed over other bytes)",
                reason="signature.invalid",
            ) from None
