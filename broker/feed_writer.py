"""What the router writes inside a transaction, each record on its partition: feed
records, audit entries, dead letters, ledger entries, record-id claims and embargo holds.

The router picks every partition itself, as the Java and kafka-python default
partitioner would (murmur2 of the key, modulo the partition count), without the
partitioner's per-record lookups: some 20 us a record. Each audit chain keeps one
partition, so a chain stays in order and existing chains continue.
"""

from __future__ import annotations

from kafka.partitioner.default import murmur2

from broker.claims import Claim
from broker.contract import (
    AUDIT_TOPIC,
    DLQ_DETAIL_HEADER,
    DLQ_ORIGIN_HEADER,
    DLQ_REASON_HEADER,
    DLQ_TIMESTAMP_HEADER,
    DLQ_TOPIC,
    EMBARGO_TOPIC,
    LEDGER_TOPIC,
    RECORD_IDS_TOPIC,
)
from broker.embargo import HeldRecord
from broker.ledger import LedgerEntry
from broker.routing import DeadLetter, FeedRecord, Inbound
from broker.transactional_producer import TransactionalProducer

#: How much of a dead letter's detail travels in its header.
DLQ_DETAIL_CHARS = 2000


def default_partition(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` kafka-python's (and Java's) default partitioner
    picks for ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class FeedWriter:
    def __init__(self, producer: TransactionalProducer) -> None:
        self.producer = producer
        self._partition_counts: dict[str, int] = {}
        self._audit_partitions: dict[bytes, int] = {}

    def dead_letter(self, inbound: Inbound, letter: DeadLetter) -> None:
        """The inbound record whole, with why it was refused and where it came from."""
        headers = [
            *inbound.headers,
            (DLQ_REASON_HEADER, letter.reason.encode()),
            (DLQ_DETAIL_HEADER, letter.detail[:DLQ_DETAIL_CHARS].encode()),
            (DLQ_ORIGIN_HEADER, inbound.position.encode()),
            (DLQ_TIMESTAMP_HEADER, str(inbound.timestamp_ms).encode()),
        ]
        self.producer.send(DLQ_TOPIC, value=inbound.value, key=inbound.key, headers=headers)

    def feed(self, feed: FeedRecord) -> None:
        self.producer.send(
            feed.topic,
            value=feed.value,
            key=feed.key,
            headers=feed.headers,
            partition=self.partition(feed.topic, feed.key),
        )

    def audit(self, chain: str, entries: list[bytes]) -> None:
        """A chain's entries, in order, on the chain's one partition."""
        key = chain.encode()
        partition = self._audit_partitions.get(key)
        if partition is None:
            partition = self._audit_partitions[key] = self.partition(AUDIT_TOPIC, key)
        for entry in entries:
            self.producer.send(AUDIT_TOPIC, value=entry, key=key, partition=partition)

    def ledger(self, key: str, entry: LedgerEntry) -> None:
        self._keyed(LEDGER_TOPIC, key.encode(), entry.encode())

    def claim(self, record_id: str, claim: Claim) -> None:
        self._keyed(RECORD_IDS_TOPIC, record_id.encode(), claim.encode())

    def embargo(self, key: str, held: HeldRecord | None) -> None:
        """Hold a record, or end the hold (a tombstone)."""
        self._keyed(EMBARGO_TOPIC, key.encode(), None if held is None else held.encode())

    def _keyed(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.producer.send(topic, value=value, key=key, partition=self.partition(topic, key))

    def partition(self, topic: str, key: bytes) -> int:
        """The partition count is read once per topic; partitions added to a topic later
        are used after a restart, and a key keeps its partition meanwhile."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = self.producer.partition_count(topic)
        return default_partition(key, count)
