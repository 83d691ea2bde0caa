"""The wire contract: what a member's SDK and the router agree on, in one place.

Topic names, every header name, the id functions and the record keys. A member's
publisher and feed reader import these, the router imports these, and nothing else
defines them, so a rename here is a rename on both sides of the wire and a rename
anywhere else cannot break a member. The signed encodings themselves live with their
schemes (:mod:`broker.signing`, :mod:`broker.provenance`, :mod:`broker.sealing`); the
router-internal topics' own keys with their owners (:mod:`broker.ledger`,
:mod:`broker.embargo`, :mod:`broker.claims`). Pure definitions: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

# --- topics ---------------------------------------------------------------------------

INBOUND_PREFIX = "action.in."
FEED_PREFIX = "action.feed."
INBOUND_PATTERN = r"^action\.in\..+$"
#: Every decision, hash-chained (broker.audit); readable by members with ``reads_audit``.
AUDIT_TOPIC = "action.audit"
#: Dead letters: a refused inbound record whole, with the DLQ_* headers below.
DLQ_TOPIC = "action.dlq"
#: Compacted: who received each indicator, so a retraction reaches exactly them.
LEDGER_TOPIC = "action.ledger"
#: Compacted and expiring: the record ids routed, each claimed by its source
#: (broker.claims), so a replay or a rival's reuse of an id is refused.
RECORD_IDS_TOPIC = "action.record-ids"
#: Compacted: records held by an embargo until it ends (broker.embargo).
EMBARGO_TOPIC = "action.embargo"


def inbound_topic(member: str) -> str:
    """Where ``member`` publishes (only it may write there)."""
    return INBOUND_PREFIX + member


def feed_topic(member: str) -> str:
    """Where ``member`` reads what the MOUs let it receive (only the router writes there)."""
    return FEED_PREFIX + member


def topic_owner(topic: str) -> str | None:
    """The member whose inbound topic this is, or None."""
    return topic[len(INBOUND_PREFIX) :] if topic.startswith(INBOUND_PREFIX) else None


# --- headers a member writes (inbound) ------------------------------------------------

#: The id of the member's signing key (members.yaml), on every signed record.
KEY_ID_HEADER = "action.kid"
#: Scheme v1 only: Ed25519 over the framed value (broker.signing).
SIGNATURE_HEADER = "action.sig"
#: The source's signature over its field commitments, and the salts (broker.provenance).
FIELDS_SIGNATURE_HEADER = "action.fields-sig"
FIELDS_SALTS_HEADER = "action.fields-salts"

# --- headers the router writes on every feed record -----------------------------------
# The source is deliberately not among them: an anonymous share must not be undone by a
# header.

DECISION_ID_HEADER = "action.decision-id"
POLICY_VERSION_HEADER = "action.policy-version"
EVENT_TYPE_HEADER = "action.event-type"
RECORD_ID_HEADER = "action.record-id"
SOURCE_TIMESTAMP_HEADER = "action.source-ts"  # ms since the epoch, as the source produced it
#: The router's signature of the delivery, bound to the decision and recipient.
ROUTER_SIGNATURE_HEADER = "action.router-sig"
ROUTER_KEY_ID_HEADER = "action.router-kid"
#: Named deliveries only: the source's key id, signature and the disclosed proof.
SOURCE_KEY_ID_HEADER = "action.src-kid"
SOURCE_SIGNATURE_HEADER = "action.src-fields-sig"
SOURCE_PROOF_HEADER = "action.src-proof"

# --- headers on a dead letter, beside the original record's own -----------------------

DLQ_REASON_HEADER = "action.dlq.reason"  # a stable code: wire.bad_magic, signature.invalid...
DLQ_DETAIL_HEADER = "action.dlq.detail"
DLQ_ORIGIN_HEADER = "action.dlq.origin"  # topic/partition@offset
DLQ_TIMESTAMP_HEADER = "action.dlq.source-ts"

# --- the forms a delivered identifier takes -------------------------------------------

#: A keyed hash of a normalized identifier: ``mt1.k<key version>.<base64url HMAC>``.
MATCH_TOKEN_PREFIX = "mt1"  # noqa: S105 - a format tag, not a secret
#: What a mask puts in place of every character but the last few.
MASK_CHARACTER = "*"
#: A value sealed to its recipient: ``hpke1.<kid>.<base64url ciphertext>`` (broker.sealing).
SEALED_PREFIX = "hpke1"


def is_match_token(value: str) -> bool:
    return value.startswith(MATCH_TOKEN_PREFIX + ".")


def is_masked(value: str) -> bool:
    return MASK_CHARACTER in value


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX + ".")


def delivered_in_clear(value: str) -> bool:
    """Whether a delivered identifier reached its recipient as the source typed it (or
    generalized, such as an IP network): not a match token, not masked, not sealed
    (to this recipient)."""
    return bool(value) and not (is_match_token(value) or is_masked(value) or is_sealed(value))


# --- ids and keys ---------------------------------------------------------------------

#: The fields that name a record, its own id first: a retraction, sighting or action also
#: names the indicator it is about.
RECORD_ID_FIELDS = ("retraction_id", "sighting_id", "action_id", "report_id", "indicator_id")
#: The fields a record's partition key comes from: the indicator it is about, so an
#: indicator and everything said of it stay in order on one partition.
PARTITION_KEY_FIELDS = ("indicator_id", "report_id")


def record_id_of(record: Mapping[str, Any]) -> str:
    """The id of the record itself ("?" when it has none)."""
    for name in RECORD_ID_FIELDS:
        if name in record:
            return str(record[name])
    return "?"


def inbound_key(record: Mapping[str, Any]) -> bytes:
    """The key a member's record is published under: the indicator it is about, else its
    own id (seizure reports)."""
    for name in PARTITION_KEY_FIELDS:
        if record.get(name):
            return str(record[name]).encode()
    return b""


def feed_key(record_id: str) -> bytes:
    """The key a delivery is written under in a feed."""
    return record_id.encode()


def decision_id_for(source: str, record_id: str, recipient: str, policy_version: str) -> str:
    """The id of the decision on one record for one recipient under one policy version.

    ``source`` is the source as the recipient sees it (``source_member`` of the delivered
    record: the member, or its anonymous label), so two members' records with the same id
    never share a decision id, the recipient can recompute it from what it received, and
    it names no source that the delivery itself does not."""
    key = f"{source}\x1f{record_id}\x1f{recipient}\x1f{policy_version}".encode()
    return hashlib.sha256(key).hexdigest()[:32]
