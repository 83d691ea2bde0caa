"""Topic names and the topics a consortium needs, derived from its member registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.claims import TOPIC_RETENTION_MS
from broker.policy.model import MemberRegistry

INBOUND_PREFIX = "action.in."
FEED_PREFIX = "action.feed."
AUDIT_TOPIC = "action.audit"
DLQ_TOPIC = "action.dlq"
#: Compacted: who received each indicator, so a retraction reaches exactly them.
LEDGER_TOPIC = "action.ledger"
#: Compacted and expiring: the record ids routed, each claimed by its source
#: (broker.claims), so a replay or a rival's reuse of an id is refused.
RECORD_IDS_TOPIC = "action.record-ids"
#: Compacted: records held by an embargo until it ends (broker.embargo).
EMBARGO_TOPIC = "action.embargo"
INBOUND_PATTERN = r"^action\.in\..+$"

#: Inbound records up to the codec's 1 MiB limit plus headers; the DLQ keeps any inbound
#: record whole with its dead-letter headers, so it allows more.
INBOUND_MAX_BYTES = 1_100_000
DLQ_MAX_BYTES = 2_200_000


def inbound_topic(member: str) -> str:
    return INBOUND_PREFIX + member


def feed_topic(member: str) -> str:
    return FEED_PREFIX + member


def topic_owner(topic: str) -> str | None:
    """The member whose inbound topic this is, or None."""
    return topic[len(INBOUND_PREFIX) :] if topic.startswith(INBOUND_PREFIX) else None


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
