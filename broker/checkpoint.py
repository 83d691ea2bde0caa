"""Where each inbound partition stands: its committed offset and its audit chain's head.

A transaction commits the offsets it consumed with each partition's chain head as the
offset metadata (``audit:<seq>:<hash>``), so a restarted or rebalanced router continues
each chain exactly where the committed entries end. After an abort, the consumer is
rewound to the committed offsets and the heads to the committed ones (kafka-python does
not rewind by itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from broker.audit import ChainHead


def chain_of(tp: TopicPartition) -> str:
    """The audit chain of an inbound partition."""
    return f"{tp.topic}/{tp.partition}"


class Checkpoint:
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self.heads: dict[TopicPartition, ChainHead] = {}

    def head(self, tp: TopicPartition) -> ChainHead:
        """The head in force for ``tp``: the last committed one, read once."""
        head = self.heads.get(tp)
        if head is None:
            head = self.heads[tp] = self._committed_head(tp)
        return head

    def offsets(
        self, positions: Mapping[TopicPartition, int], heads: Mapping[TopicPartition, ChainHead]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """What a transaction commits: each partition's next offset and its chain head."""
        return {
            tp: OffsetAndMetadata(offset, heads[tp].to_metadata(), -1)
            for tp, offset in positions.items()
        }

    def committed(self, heads: Mapping[TopicPartition, ChainHead]) -> None:
        """A transaction committed: its heads are the ones in force."""
        self.heads.update(heads)

    def rewind(self) -> None:
        """Back to the committed offsets and chain heads of every assigned partition."""
        consumer = self._consumer
        for tp in consumer.assignment():
            committed = consumer.committed(tp, metadata=True)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed.offset)
            self.heads[tp] = ChainHead.from_metadata(
                chain_of(tp), committed.metadata if committed else None
            )

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.heads.pop(tp, None)

    def _committed_head(self, tp: TopicPartition) -> ChainHead:
        committed = self._consumer.committed(tp, metadata=True)
        return ChainHead.from_metadata(chain_of(tp), committed.metadata if committed else None)
