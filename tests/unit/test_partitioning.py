"""The router picks a keyed record's partition itself, exactly as the client would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from broker.feed_writer import default_partition


class _Cluster:
    """The little of kafka-python's ClusterMetadata its partitioner reads."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, set(range(partitions))

    def topics(self) -> set[str]:
        return {self.topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@given(key=st.binary(max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_default_partition_is_the_clients_choice(key: bytes, partitions: int) -> None:
    cluster = _Cluster("action.feed.x", partitions)
    expected = DefaultPartitioner().partition("action.feed.x", key, key, b"", b"", cluster)
    assert default_partition(key, partitions) == expected


def test_keys_spread_over_the_partitions() -> None:
    chosen = {default_partition(f"record-{n}".encode(), 6) for n in range(200)}
    assert chosen == set(range(6))
