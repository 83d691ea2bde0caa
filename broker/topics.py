"""The topics a consortium needs, derived from its member registry (their names are
:mod:`broker.contract`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.claims import TOPIC_RETENTION_MS
from broker.contract import (
    AUDIT_TOPIC,
    DLQ_TOPIC,
    EMBARGO_TOPIC,
    LEDGER_TOPIC,
    RECORD_IDS_TOPIC,
    feed_topic,
    inbound_topic,
)
from broker.membership import MemberRegistry

#: Inbound records up to the codec's 1 MiB limit plus headers; the DLQ keeps any inbound
#: record whole with its dead-letter headers, so it allows more.
INBOUND_MAX_BYTES = 1_100_000
DLQ_MAX_BYTES = 2_200_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)


def durability(brokers: int) -> tuple[int, int]:
    """Replication factor and min.insync.replicas for a cluster of ``brokers`` nodes:
    three copies, two of which must have every write, when there are three brokers."""
    replication = min(3, brokers)
    return replication, (2 if replication >= 3 else 1)


def consortium_topics(
    registry: MemberRegistry, *, brokers: int, partitions: int
) -> list[TopicSpec]:
    replication, min_isr = durability(brokers)
    common = {"min.insync.replicas": str(min_isr), "unclean.leader.election.enable": "false"}
    specs = []
    for member in registry.members:
        specs.append(
            TopicSpec(
                inbound_topic(member.id),
                partitions,
                replication,
                {**common, "max.message.bytes": str(INBOUND_MAX_BYTES)},
            )
        )
        specs.append(TopicSpec(feed_topic(member.id), partitions, replication, dict(common)))
    specs += [
        # The audit trail is kept for good; the ledger keeps each indicator's last entry.
        TopicSpec(AUDIT_TOPIC, partitions, replication, {**common, "retention.ms": "-1"}),
        TopicSpec(
            DLQ_TOPIC,
            partitions,
            replication,
            {
                **common,
                "max.message.bytes": str(DLQ_MAX_BYTES),
                "retention.ms": str(90 * 24 * 3600 * 1000),
            },
        ),
        TopicSpec(LEDGER_TOPIC, partitions, replication, {**common, "cleanup.policy": "compact"}),
        TopicSpec(
            EMBARGO_TOPIC,
            partitions,
            replication,
            {**common, "cleanup.policy": "compact", "max.message.bytes": str(DLQ_MAX_BYTES)},
        ),
        TopicSpec(
            RECORD_IDS_TOPIC,
            partitions,
            replication,
            {**common, "cleanup.policy": "compact,delete", "retention.ms": str(TOPIC_RETENTION_MS)},
        ),
    ]
    return specs
