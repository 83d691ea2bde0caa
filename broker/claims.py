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
    batch) and join the committed view when the transaction commits."""

    def __init__(self, retention_days: float = WINDOW_DAYS) -> None:
        self.retention_ms = int(retention_days * _DAY_MS)
        # Insertion order is routing order, so expired claims are at the front.
        self._committed: dict[str, Claim] = {}
        self._staged: dict[str, Claim] = {}

    def __len__(self) -> int:
        return len(self._committed)

    def get(self, record_id: str) -> Claim | None:
        staged = self._staged.get(record_id)
        return staged if staged is not None else self._committed.get(record_id)

    def refusal(self, source: str, record_id: str, value: bytes, *, event_ms: int | None,
                now_ms: int) -> tuple[str, str] | None:  # fmt: skip
        """(reason, detail) when this record may not be routed, else None."""
        if event_ms is not None and event_ms < now_ms - self.retention_ms:
            days = self.retention_ms // _DAY_MS
            return STALE, (f"the record's own time is more than {days} days old, beyond "
                           "the window in which the router remembers record ids")  # fmt: skip
        claim = self.get(record_id)
        if claim is None:
            return None
        if claim.source != source:
            return ID_TAKEN, f"record id {record_id} belongs to another member's record"
        if claim.digest == content_digest(value):
            return REPLAY, f"record {record_id} was already routed (the same bytes again)"
        return ID_REUSED, (f"record id {record_id} was already used by {source} for other "
                           "content; a new record needs a new id")  # fmt: skip

    def stage(self, record_id: str, claim: Claim) -> None:
        self._staged[record_id] = claim

    def commit(self) -> None:
        self._committed.update(self._staged)
        self._staged.clear()

    def abort(self) -> None:
        self._staged.clear()

    def load(self, record_id: str, value: bytes | None) -> None:
        """Apply one record read back from the topic (None: a tombstone)."""
        if value is None:
            self._committed.pop(record_id, None)
            return
        claim = Claim.decode(value)
        self._committed.pop(record_id, None)  # re-inserted at its place in routing order
        self._committed[record_id] = claim

    def expire(self, now_ms: int) -> int:
        """Forget claims older than the retention window; how many went."""
        horizon = now_ms - self.retention_ms
        expired = []
        for record_id, claim in self._committed.items():
            if claim.at_ms >= horizon:
                break
            expired.append(record_id)
        for record_id in expired:
            del self._committed[record_id]
        return len(expired)
