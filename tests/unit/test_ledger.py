"""The delivery ledger (broker.ledger): who received each indicator."""

from __future__ import annotations

from broker.ledger import DeliveryLedger, LedgerEntry


def test_ledger_entries_count_only_once_committed() -> None:
    ledger = DeliveryLedger()
    entry = LedgerEntry({"platform-b": "anonymous-platform"}, "pv-1")
    ledger.stage("platform-a/1", entry)
    assert ledger.get("platform-a/1") == entry, "visible to a retraction in the same batch"
    ledger.abort()
    assert ledger.get("platform-a/1") is None
    ledger.stage("platform-a/1", entry)
    ledger.commit()
    assert LedgerEntry.decode(entry.encode()) == ledger.get("platform-a/1")
    ledger.load("platform-a/1", None)
    assert len(ledger) == 0
