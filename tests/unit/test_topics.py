"""The topics a registry implies (broker.topics)."""

from __future__ import annotations

from broker.contract import topic_owner
from broker.policy.engine import PolicySet
from broker.topics import consortium_topics, durability


def test_topics_follow_the_registry_and_the_cluster_size(policies: PolicySet) -> None:
    assert durability(1) == (1, 1)
    assert durability(3) == (3, 2)
    specs = {s.name: s for s in consortium_topics(policies.registry, brokers=3, partitions=6)}
    assert len(specs) == 2 * len(policies.members) + 5
    assert specs["action.ledger"].configs["cleanup.policy"] == "compact"
    # Record ids are remembered a bounded time: compacted, and deleted after the window.
    ids = specs["action.record-ids"].configs
    assert ids["cleanup.policy"] == "compact,delete"
    assert int(ids["retention.ms"]) > 400 * 24 * 3600 * 1000
    assert specs["action.in.platform-a"].configs["min.insync.replicas"] == "2"
    assert topic_owner("action.in.platform-ab") == "platform-ab"
    assert topic_owner("action.feed.platform-a") is None
