"""Record ids belong to their source, and each record is routed once.

The first record the router routes with an id *claims* it for its source. A later record
with that id is a dead letter, whatever the policies in force then:

* ``record.id_taken``: the id is claimed by another source (a rival reusing an id it
  learned from its own feed, to shadow or retract another member's record);
* ``record.replay``: the same source sent the same bytes again;
* ``record.id_reused``: the same source sent other content under an id it already used.

Claims are kept in the ``action.record-ids`` topic (key: the record id; value JSON
``{"source": ..., "digest": ..., "at": ms}``), written in the same transaction as the
deliveries and read back at start-up and after a rebalance, like the delivery ledger.
They are kept for :attr:`RecordClaims.retention_ms` after the record was first routed
(the topic deletes older ones too), so memory stays bounded by that window's traffic.
Records whose own signed time (published, taken, observed, retracted) is older than the
window are refused as ``record.stale``, so a replay always meets its claim. Pure code:
no Kafka.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from typing import NamedTuple

ID_TAKEN = "record.id_taken"
REPLAY = "record.replay"
ID_REUSED = "record.id_reused"
STALE = "record.stale"

_DAY_MS = 24 * 3600 * 1000
#: How long the router remembers a record id after routing it, and so the oldest a
#: timestamped record may be. A year and a month: late reports and back-fills fit.
WINDOW_DAYS = 400
#: The topic keeps claims a week longer than the router needs them.
TOPIC_RETENTION_MS = (WINDOW_DAYS + 7) * _DAY_MS


class Claim(NamedTuple):
    source: str
    digest: str  # of the record's inbound bytes: tells a replay from a reused id
    at_ms: int  # when the router first routed it

    def encode(self) -> bytes:
        body = {"source": self.source, "digest": self.digest, "at": self.at_ms}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> Claim:
        document = json.loads(value)
        return cls(str(document["source"]), str(document["digest"]), int(document["at"]))


def content_digest(value: bytes) -> str:
    """The digest a claim keeps of a record's bytes (16 bytes of SHA-256, in hex)."""
    return hashlib.sha256(value).hexdigest()[:32]


class RecordClaims:
    """Claimed record ids, committed and staged, as :class:`broker.ledger.DeliveryLedger`
    keeps its entries: staged claims are seen at once (a replay may follow in the same
    batch) and join the committed view when the transaction commits.

    Memory is the cost of remembering (docs/router.md), so each claim is packed: the key
    is the id's 16 UUID bytes (record ids are UUIDs; any other text is kept as its
    UTF-8), the value 8 bytes of time, 2 of source number and 16 of digest. As a tuple
    of Python objects a claim took 351 MiB per million; packed, see bench_claims."""

    def __init__(self, retention_days: float = WINDOW_DAYS) -> None:
        self.retention_ms = int(retention_days * _DAY_MS)
        # Insertion order is routing order, so expired claims are at the front.
        self._committed: dict[bytes, bytes] = {}
        self._staged: dict[bytes, bytes] = {}
        self._sources: list[str] = []
        self._source_numbers: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._committed)

    def get(self, record_id: str) -> Claim | None:
        key = _key(record_id)
        packed = self._staged.get(key) or self._committed.get(key)
        return None if packed is None else self._unpack(packed)

    def refusal(
        self,
        source: str,
        record_id: str,
        value: bytes,
        *,
        event_ms: int | None,
        now_ms: int,
        indicator_owner: str | None = None,
    ) -> tuple[str, str] | None:
        """(reason, detail) when this record may not be routed, else None.
        ``indicator_owner``: the source of an indicator with this id, which the delivery
        ledger remembers for ever, after the claim window has forgotten the claim."""
        if event_ms is not None and event_ms < now_ms - self.retention_ms:
            days = self.retention_ms // _DAY_MS
            return STALE, (
                f"the record's own time is more than {days} days old, beyond "
                "the window in which the router remembers record ids"
            )
        claim = self.get(record_id)
        if claim is None:
            if indicator_owner is None:
                return None
            claim = Claim(indicator_owner, "", 0)  # no digest kept: not a replay, a reuse
        if claim.source != source:
            return ID_TAKEN, f"record id {record_id} belongs to another member's record"
        if claim.digest == content_digest(value):
            return REPLAY, f"record {record_id} was already routed (the same bytes again)"
        return ID_REUSED, (
            f"record id {record_id} was already used by {source} for other "
            "content; a new record needs a new id"
        )

    def stage(self, record_id: str, claim: Claim) -> None:
        self._staged[_key(record_id)] = self._pack(claim)

    def commit(self) -> None:
        self._committed.update(self._staged)
        self._staged.clear()

    def abort(self) -> None:
        self._staged.clear()

    def load(self, record_id: str, value: bytes | None) -> None:
        """Apply one record read back from the topic (None: a tombstone)."""
        key = _key(record_id)
        self._committed.pop(key, None)  # re-inserted at its place in routing order
        if value is not None:
            self._committed[key] = self._pack(Claim.decode(value))

    def expire(self, now_ms: int) -> int:
        """Forget claims older than the retention window; how many went."""
        horizon = now_ms - self.retention_ms
        expired = []
        for key, packed in self._committed.items():
            if _AT.unpack_from(packed)[0] >= horizon:
                break
            expired.append(key)
        for key in expired:
            del self._committed[key]
        return len(expired)

    def _pack(self, claim: Claim) -> bytes:
        number = self._source_numbers.get(claim.source)
        if number is None:
            number = self._source_numbers[claim.source] = len(self._sources)
            self._sources.append(claim.source)
        return _AT.pack(claim.at_ms) + _SOURCE.pack(number) + bytes.fromhex(claim.digest)

    def _unpack(self, packed: bytes) -> Claim:
        (at_ms,) = _AT.unpack_from(packed)
        (number,) = _SOURCE.unpack_from(packed, _AT.size)
        digest = packed[_AT.size + _SOURCE.size :].hex()
        return Claim(self._sources[number], digest, at_ms)


_AT = struct.Struct(">q")
_SOURCE = struct.Struct(">H")  # 65,536 sources: far more than any consortium has members


def _key(record_id: str) -> bytes:
    try:
        return uuid.UUID(record_id).bytes
    except ValueError:  # 20 bytes, so never a UUID's 16
        return hashlib.sha256(record_id.encode()).digest()[:20]
