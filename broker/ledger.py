"""Who received each indicator, so its retraction reaches exactly them.

Kept in the compacted ``action.ledger`` topic (key ``<source>/<indicator id>``, value JSON
``{"recipients": {member: source as delivered}, "policy_version": ...}``), written in the
same transaction as the deliveries, and mirrored in memory by the router. Entries staged
during a transaction become visible to lookups at once (a retraction may follow its
indicator in the same batch) but only join the committed view when the transaction
commits; an abort discards them. Pure code: no Kafka.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)  # not slotted: pickled for routing workers (broker.routing PICKLING)
class LedgerEntry:
    recipients: Mapping[str, str]  # recipient -> source_member as it was delivered to it
    policy_version: str
    #: The indicator's TLP marking: what refers to it never travels under a wider one.
    #: Entries written before it was recorded read as RED (the strictest), failing closed.
    tlp: str = "RED"

    def encode(self) -> bytes:
        return json.dumps(
            {
                "recipients": dict(self.recipients),
                "policy_version": self.policy_version,
                "tlp": self.tlp,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> LedgerEntry:
        document = json.loads(value)
        return cls(
            dict(document["recipients"]),
            str(document["policy_version"]),
            str(document.get("tlp", "RED")),
        )


def ledger_key(source: str, indicator_id: str) -> str:
    return f"{source}/{indicator_id}"


class DeliveryLedger:
    """Entries are written once: the router refuses a second record with an indicator's
    id (:mod:`broker.claims`), so a later retraction reaches the original recipients."""

    def __init__(self) -> None:
        self._committed: dict[str, LedgerEntry] = {}
        self._staged: dict[str, LedgerEntry] = {}
        # indicator id -> its source, for ever: ids of indicators stay theirs after the
        # record-id window (broker.claims) has forgotten them.
        self._owners: dict[str, str] = {}
        self._staged_owners: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._committed)

    def get(self, key: str) -> LedgerEntry | None:
        staged = self._staged.get(key)
        return staged if staged is not None else self._committed.get(key)

    def owner_of(self, indicator_id: str) -> str | None:
        """The source whose indicator has this id, if any."""
        return self._staged_owners.get(indicator_id) or self._owners.get(indicator_id)

    def stage(self, key: str, entry: LedgerEntry) -> None:
        self._staged[key] = entry
        source, _, indicator = key.partition("/")
        self._staged_owners[indicator] = source

    def commit(self) -> None:
        self._committed.update(self._staged)
        self._owners.update(self._staged_owners)
        self._staged.clear()
        self._staged_owners.clear()

    def abort(self) -> None:
        self._staged.clear()
        self._staged_owners.clear()

    def load(self, key: str, value: bytes | None) -> None:
        """Apply one record read back from the ledger topic (None: a tombstone)."""
        source, _, indicator = key.partition("/")
        if value is None:
            self._committed.pop(key, None)
            if self._owners.get(indicator) == source:
                del self._owners[indicator]
        else:
            self._committed[key] = LedgerEntry.decode(value)
            self._owners.setdefault(indicator, source)
