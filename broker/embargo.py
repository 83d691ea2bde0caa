"""Records held by an embargo, to be decided again when it ends. Pure code: no Kafka.

A share rule's ``embargo_minutes`` gives the source time to act on its own platform before
others learn of a seller. A record withheld from a recipient *only* by an embargo is held:
the router writes it (its inbound bytes, headers and origin, and when each held recipient's
embargo ends) to the compacted ``action.embargo`` topic, key ``<source>/<record id>``, in
the same transaction as the record's other writes. When an embargo ends, the instance that
owns the record's inbound partition decides it again for those recipients under the
policies in force then (a revoked MOU stops it), and writes the deliveries, their audit
entries and the updated (or, when nothing is left, tombstoned) entry in one transaction.
So a held record is delivered exactly once, after router restarts and rebalances too: the
entries are read back at start-up like the ledger. A retraction of a held indicator
cancels what is still held of it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)  # not slotted: crosses from routing workers (broker.routing PICKLING)
class HeldRecord:
    """One inbound record and, per held recipient, when its embargo ends (ms)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    due: Mapping[str, int] = field(default_factory=dict)  # recipient -> release time

    def encode(self) -> bytes:
        return json.dumps(
            {
                "origin": [self.topic, self.partition, self.offset],
                "key": _b64(self.key) if self.key is not None else None,
                "value": _b64(self.value),
                "headers": [[name, _b64(value)] for name, value in self.headers],
                "timestamp_ms": self.timestamp_ms,
                "due": dict(self.due),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> HeldRecord:
        document = json.loads(value)
        topic, partition, offset = document["origin"]
        key = document["key"]
        return cls(
            str(topic),
            int(partition),
            int(offset),
            None if key is None else _unb64(key),
            _unb64(document["value"]),
            tuple((str(n), _unb64(v)) for n, v in document["headers"]),
            int(document["timestamp_ms"]),
            {str(r): int(t) for r, t in document["due"].items()},
        )

    def with_due(self, due: Mapping[str, int]) -> HeldRecord:
        return HeldRecord(
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self.value,
            self.headers,
            self.timestamp_ms,
            dict(due),
        )


def embargo_key(source: str, record_id: str) -> str:
    return f"{source}/{record_id}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class EmbargoBook:
    """Held records, committed and staged, as the delivery ledger keeps its entries."""

    def __init__(self) -> None:
        self._committed: dict[str, HeldRecord] = {}
        self._staged: dict[str, HeldRecord | None] = {}  # None: released or cancelled

    def __len__(self) -> int:
        return len(self._committed)

    def get(self, key: str) -> HeldRecord | None:
        if key in self._staged:
            return self._staged[key]
        return self._committed.get(key)

    def stage(self, key: str, held: HeldRecord | None) -> None:
        self._staged[key] = held

    def commit(self) -> None:
        for key, held in self._staged.items():
            if held is None:
                self._committed.pop(key, None)
            else:
                self._committed[key] = held
        self._staged.clear()

    def abort(self) -> None:
        self._staged.clear()

    def load(self, key: str, value: bytes | None) -> None:
        """Apply one record read back from the topic (None: a tombstone)."""
        if value is None:
            self._committed.pop(key, None)
        else:
            self._committed[key] = HeldRecord.decode(value)

    def due(self, now_ms: int, partitions: Collection[tuple[str, int]]) -> list[tuple[str, Any]]:
        """(key, record) of committed records with an embargo ended by ``now_ms`` whose
        inbound partition is among ``partitions`` (the ones this instance owns)."""
        return [
            (key, held)
            for key, held in self._committed.items()
            if (held.topic, held.partition) in partitions
            and any(at <= now_ms for at in held.due.values())
        ]
