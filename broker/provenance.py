"""Provenance that survives redaction: salted per-field commitments signed by the source.

The router changes records on the way (drops, hashes, masks, generalizes, encrypts), so
a signature over the whole record cannot travel to recipients. Instead:

1. The source commits to every *leaf* of its record (each top-level field, and each
   field of a nested record such as ``seller.email``)::

       c(path) = SHA-256("action.field.v1" 0x00 salt path 0x00 leaf_json(value))

   with a fresh random 16-byte salt per leaf, and signs the sorted list of
   ``path=c(path)`` lines (with the event type) with its Ed25519 key. Salts and signature
   travel in headers beside the record-wide signature (:mod:`broker.signing`).
2. The router recomputes the commitments from the record it decoded and checks that
   signature, so an inconsistent proof is a dead letter, not a broken promise later.
3. For each delivery the router forwards the *salt* of every leaf the recipient gets
   unchanged, and only the *commitment* of every leaf it changed or removed. The salt
   never travels for a redacted leaf: without it a commitment cannot be tested against
   guesses of a low-entropy value (a country, a phone prefix).
4. The recipient recomputes the commitments of what it received, takes the forwarded
   ones for the rest, and verifies the source's signature. It learns which leaves were
   withheld or transformed, and that everything it got in clear is what the source said.

Anonymous and sector-only deliveries carry no source proof: verifying it would need the
source's public key, which names the source. The router's own signature still vouches
for them (see docs/trust-model.md).

Pure code: no Kafka.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker import base64url
from broker.contract import (
    FIELDS_SALTS_HEADER,
    FIELDS_SIGNATURE_HEADER,
    SOURCE_KEY_ID_HEADER,
    SOURCE_PROOF_HEADER,
    SOURCE_SIGNATURE_HEADER,
)
from broker.errors import ProvenanceError

#: Scheme v2: the pseudo-leaf committing to the encoded record (Avro names cannot hold
#: "@", so no field collides with it).
RECORD_LEAF = "@record"
_RECORD_LEAF_BYTES = RECORD_LEAF.encode()
_LEAF_CONTEXT = b"action.field.v1\x00"
_MANIFEST_CONTEXT = b"action.fields.v1\x00"
SALT_BYTES = 16
#: The most JSON containers (``{`` or ``[``) a proof header may hold before it is parsed.
#: Inbound salts are one flat object and a feed proof three; base64url text and Avro
#: field names hold neither character, so counting them bounds the nesting depth (a
#: deeply nested header raised RecursionError in json.loads) at C speed.
MAX_PROOF_CONTAINERS = 4
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


# Salts are decoded strictly (base64url.decode): the text of a salt that verified is
# forwarded as it came and needs no escaping in JSON.
_b64, _unb64 = base64url.encode, base64url.decode


def _plain(value: Any) -> Any:
    """The one representation of a value, whoever decoded it: timestamps as epoch
    milliseconds (Avro's precision), UUIDs and enums as text, bytes as base64url."""
    if isinstance(value, dt.datetime):  # integer arithmetic: no float rounding at the edge
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return (aware - _EPOCH) // _ONE_MS
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return _b64(value)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot commit to a {type(value).__name__}")


# One encoder for every commitment (json.dumps with options builds a new one per call).
_LEAF_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
)


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def leaf_json(value: Any) -> bytes:
    """The leaf format every commitment covers: JSON with sorted keys, no spaces, UTF-8
    text (not escaped to ASCII), values in their one plain form (:func:`_plain`). The
    publisher, the router and the recipient all commit through this alone."""
    return _LEAF_JSON.encode(value).encode()


def leaves(record: Mapping[str, Any]) -> dict[str, Any]:
    """path -> value for every top-level field, nested records opened one level."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                out[f"{name}.{sub}"] = inner
        else:
            out[name] = value
    return out


def _leaf_digest(salt: bytes, path: bytes, body: bytes) -> bytes:
    """The one layout of every commitment: SHA-256(context salt path 0x00 body)."""
    return hashlib.sha256(b"".join((_LEAF_CONTEXT, salt, path, b"\x00", body))).digest()


def commitment(path: str, value: Any, salt: bytes) -> bytes:
    return _leaf_digest(salt, path.encode(), leaf_json(value))


def _manifest(event_type: str, commitments: Mapping[str, str]) -> bytes:
    """What the source signs; ``commitments`` maps each path to its base64url commitment."""
    lines = "".join(f"{path}={commitments[path]}\n" for path in sorted(commitments))
    return _MANIFEST_CONTEXT + event_type.encode() + b"\x00" + lines.encode()


def _commitments(values: Mapping[str, Any], salts: Mapping[str, bytes]) -> dict[str, str]:
    return {path: _b64(commitment(path, value, salts[path])) for path, value in values.items()}


def record_commitment(encoded: bytes, salt: bytes) -> bytes:
    """The commitment to the encoded record itself: its bytes, not a canonical form."""
    return _leaf_digest(salt, _RECORD_LEAF_BYTES, encoded)


def sign_fields(
    record: Mapping[str, Any],
    event_type: str,
    key: Ed25519PrivateKey,
    *,
    salts: Mapping[str, bytes] | None = None,
    encoded: bytes | None = None,
) -> list[tuple[str, bytes]]:
    """The source's headers: a fresh salt per leaf and the signature over the commitments.
    With ``encoded`` (the record's bytes as published), the proof also commits to them
    (:data:`RECORD_LEAF`), so its one signature stands for the record-wide one too."""
    values = leaves(record)
    paths = [*values, RECORD_LEAF] if encoded is not None else list(values)
    salts = salts or {path: os.urandom(SALT_BYTES) for path in paths}
    commitments = _commitments(values, salts)
    if encoded is not None:
        commitments[RECORD_LEAF] = _b64(record_commitment(encoded, salts[RECORD_LEAF]))
    signature = key.sign(_manifest(event_type, commitments))
    salts_json = _COMPACT.encode({p: _b64(s) for p, s in salts.items()})
    return [(FIELDS_SIGNATURE_HEADER, signature), (FIELDS_SALTS_HEADER, salts_json.encode())]


@dataclass(frozen=True, slots=True)
class FieldProof:
    """A verified inbound proof: one record's leaves with their commitments and salts,
    both in base64url as they travel (encoded once per record, not once per delivery)."""

    kid: str
    signature: bytes
    values: dict[str, Any]
    commitments: dict[str, str]
    salts: dict[str, str]

    @property
    def covers_record(self) -> bool:
        """Whether the proof also commits to the encoded record (scheme v2)."""
        return RECORD_LEAF in self.commitments

    @classmethod
    def verify(
        cls,
        record: Mapping[str, Any],
        event_type: str,
        headers: Mapping[str, bytes],
        kid: str,
        public_key: Ed25519PublicKey,
        *,
        encoded: bytes | None = None,
    ) -> FieldProof | None:
        """The proof in ``headers`` checked against ``record`` and, when the proof commits
        to it, ``encoded`` (the bytes ``record`` was decoded from); None when there is no
        proof (a publisher without field provenance). Raises ProvenanceError when it is
        wrong: ``signature.invalid`` when the proof covers the encoded record, whose own
        signature it then is, ``signature.fields_invalid`` otherwise."""
        signature, salts_json = (
            headers.get(FIELDS_SIGNATURE_HEADER),
            headers.get(FIELDS_SALTS_HEADER),
        )
        if signature is None and salts_json is None:
            return None
        values = leaves(record)
        salts_json = _bounded_json(salts_json or b"", FIELDS_SALTS_HEADER)
        try:
            salts_b64 = {str(p): str(s) for p, s in json.loads(salts_json).items()}
            salts = {p: _unb64(s) for p, s in salts_b64.items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ProvenanceError(
                f"unreadable {FIELDS_SALTS_HEADER} header: {exc}", reason="signature.fields_invalid"
            ) from None
        _check_salts(salts)
        covers_record = RECORD_LEAF in salts
        paths = set(values) | {RECORD_LEAF} if covers_record else set(values)
        if set(salts) != paths or not signature or (covers_record and encoded is None):
            missing = sorted(paths - set(salts)) or sorted(set(salts) - paths)
            raise ProvenanceError(
                f"the field proof does not cover the record's fields "
                f"(differs at {', '.join(missing[:5]) or 'the signature'})",
                reason="signature.fields_invalid",
            )
        commitments = _commitments(values, salts)
        if covers_record:
            assert encoded is not None
            commitments[RECORD_LEAF] = _b64(record_commitment(encoded, salts[RECORD_LEAF]))
        try:
            public_key.verify(signature, _manifest(event_type, commitments))
        except InvalidSignature:
            if covers_record:
                raise ProvenanceError(
                    "the signature over the record and its field commitments does not verify "
                    "(altered in transit, or signed over other bytes)",
                    reason="signature.invalid",
                ) from None
            raise ProvenanceError(
                "the signature over the field commitments does not verify",
                reason="signature.fields_invalid",
            ) from None
        return cls(kid, signature, values, commitments, salts_b64)

    def disclose(
        self, delivered: Mapping[str, Any], changed: Iterable[str]
    ) -> list[tuple[str, bytes]]:
        """Feed headers for one delivery: salts of the leaves delivered unchanged, only
        commitments for those in ``changed`` (paths the policy treated) or otherwise
        different from what the source sent."""
        # A leaf is hidden when it, a field holding it or a field inside it was treated.
        treated = set(changed)
        holding_treated = {prefix for path in treated for prefix in _prefixes(path)}
        now = leaves(delivered)
        salts: dict[str, str] = {}
        # The encoded record's commitment always travels: the recipient gets other bytes.
        hidden = {RECORD_LEAF: self.commitments[RECORD_LEAF]} if self.covers_record else {}
        for path, original in self.values.items():
            overlaps = (
                path in treated
                or path in holding_treated
                or not treated.isdisjoint(_prefixes(path))
            )
            if overlaps or path not in now or now[path] != original:
                hidden[path] = self.commitments[path]
            else:
                salts[path] = self.salts[path]
        proof = _COMPACT.encode({"salts": salts, "commitments": hidden})
        return [
            (SOURCE_KEY_ID_HEADER, self.kid.encode()),
            (SOURCE_SIGNATURE_HEADER, self.signature),
            (SOURCE_PROOF_HEADER, proof.encode()),
        ]


def _bounded_json(data: bytes, header: str) -> bytes:
    """``data`` if it is shallow enough to parse; a dead letter's error otherwise."""
    if data.count(b"{") + data.count(b"[") > MAX_PROOF_CONTAINERS:
        raise ProvenanceError(
            f"the {header} header nests JSON deeper than a field proof does",
            reason="proof.too_complex",
        )
    return data


def _check_salts(salts: Mapping[str, bytes]) -> None:
    """Salts must be long and unique: a short or shared salt lets a recipient that sees
    one leaf's salt brute-force another withheld leaf with few possible values (a
    country, a category) from its commitment."""
    short = sorted(path for path, salt in salts.items() if len(salt) < SALT_BYTES)
    if short:
        raise ProvenanceError(
            f"field proof salts shorter than {SALT_BYTES} bytes: {', '.join(short[:5])}",
            reason="signature.fields_invalid",
        )
    if len(set(salts.values())) != len(salts):
        raise ProvenanceError(
            "the field proof repeats a salt: every leaf needs its own",
            reason="signature.fields_invalid",
        )


@functools.lru_cache(maxsize=4096)  # leaf paths are the schemas' field names: a few dozen
def _prefixes(path: str) -> tuple[str, ...]:
    """The fields that hold ``path``: "a" and "a.b" for "a.b.c"."""
    parts = path.split(".")
    return tuple(".".join(parts[:n]) for n in range(1, len(parts)))


def verify_delivered(
    record: Mapping[str, Any],
    event_type: str,
    headers: Mapping[str, bytes],
    source_keys: Mapping[str, Ed25519PublicKey],
) -> list[str] | None:
    """A recipient's check that the leaves it received in clear are what the source
    signed. Returns the paths the router withheld or transformed, None when the record
    carries no source proof; raises ProvenanceError when the proof fails."""
    kid_bytes = headers.get(SOURCE_KEY_ID_HEADER)
    if kid_bytes is None:
        return None
    kid = kid_bytes.decode("utf-8", "replace")
    key = source_keys.get(kid)
    if key is None:
        raise ProvenanceError(
            f"field proof made with unknown source key {kid!r}", reason="source_proof.unknown_key"
        )
    try:
        proof = json.loads(
            _bounded_json(headers.get(SOURCE_PROOF_HEADER) or b"", SOURCE_PROOF_HEADER)
        )
        salts = {str(p): _unb64(str(s)) for p, s in proof["salts"].items()}
        hidden = {str(p): str(c) for p, c in proof["commitments"].items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProvenanceError(
            f"unreadable {SOURCE_PROOF_HEADER} header: {exc}", reason="source_proof.invalid"
        ) from None
    values = leaves(record)
    missing = [p for p in salts if p not in values]
    if missing:
        raise ProvenanceError(
            f"the proof discloses fields the record lacks: {missing[:5]}",
            reason="source_proof.invalid",
        )
    commitments = {p: _b64(commitment(p, values[p], salt)) for p, salt in salts.items()}
    commitments.update(hidden)
    try:
        key.verify(headers.get(SOURCE_SIGNATURE_HEADER) or b"", _manifest(event_type, commitments))
    except InvalidSignature:
        raise ProvenanceError(
            "the source's signature over the fields does not verify: a value received in "
            "clear is not what the source published",
            reason="source_proof.invalid",
        ) from None
    return sorted(path for path in hidden if path != RECORD_LEAF)
