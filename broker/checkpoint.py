"""Where each inbound partition stands: its committed offset and its audit chain's head.

A transaction commits the offsets it consumed with each partition's chain head as the
offset metadata (``audit:<seq>:<hash>``), so a restarted or rebalanced router continues
each chain exactly where the committed entries end. After an abort, the consumer is
rewound to the committed offsets and the heads to the committed ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from broker.audit import ChainHead

Partition = tuple[str, int]  # (topic, partition): hashable, unlike librdkafka's TopicPartition

#: Bound on reading committed offsets (a coordinator that moves answers within it).
_COMMITTED_TIMEOUT_S = 30.0


def chain_of(tp: Partition) -> str:
    """The audit chain of an inbound partition."""
    return f"{tp[0]}/{tp[1]}"


class Checkpoint:
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self.heads: dict[Partition, ChainHead] = {}

    def head(self, tp: Partition) -> ChainHead:
        """The head in force for ``tp``: the last committed one, read once."""
        head = self.heads.get(tp)
        if head is None:
            committed = self._committed([tp])[tp]
            head = self.heads[tp] = ChainHead.from_metadata(chain_of(tp), committed.metadata)
        return head

    @staticmethod
    def offsets(
        positions: Mapping[Partition, int], heads: Mapping[Partition, ChainHead]
    ) -> list[TopicPartition]:
        """What a transaction commits: each partition's next offset and its chain head."""
        return [
            TopicPartition(
                topic, partition, offset, metadata=heads[(topic, partition)].to_metadata()
            )
            for (topic, partition), offset in positions.items()
        ]

    def committed(self, heads: Mapping[Partition, ChainHead]) -> None:
        """A transaction committed: its heads are the ones in force."""
        self.heads.update(heads)

    def position(self, tp: Partition) -> int:
        """The next offset to route on ``tp``: where the consumer is, else the committed
        one (a partition nothing was read from since it was assigned)."""
        (at,) = self._consumer.position([TopicPartition(*tp)])
        if at.offset >= 0:
            return int(at.offset)
        return max(0, int(self._committed([tp])[tp].offset))

    def rewind(self) -> dict[Partition, int]:
        """Back to the committed offsets and chain heads of every assigned partition;
        where each partition now stands."""
        assigned = [(tp.topic, tp.partition) for tp in self._consumer.assignment()]
        positions = {}
        for tp, committed in self._committed(assigned).items():
            offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            # A seek that fails raises: the router then replaces the consumer, which starts
            # at the committed offsets, rather than skip what the abort took back.
            self._consumer.seek(TopicPartition(tp[0], tp[1], offset))
            self.heads[tp] = ChainHead.from_metadata(chain_of(tp), committed.metadata)
            positions[tp] = int(committed.offset)
        return positions

    def forget(self, partitions: Iterable[Partition]) -> None:
        for tp in partitions:
            self.heads.pop(tp, None)

    def _committed(self, partitions: list[Partition]) -> dict[Partition, TopicPartition]:
        """Each partition's committed offset (negative: none) and metadata."""
        if not partitions:
            return {}
        asked = [TopicPartition(topic, partition) for topic, partition in partitions]
        got = self._consumer.committed(asked, timeout=_COMMITTED_TIMEOUT_S)
        return {(tp.topic, tp.partition): tp for tp in got}
