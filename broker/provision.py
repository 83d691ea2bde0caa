"""``action-broker provision``: create the consortium's topics, idempotently."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from broker.errors import RouterError
from broker.policy.model import MemberRegistry
from broker.topics import TopicSpec, consortium_topics


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    topic: str
    action: str  # created | exists | would-create | too-few-partitions
    partitions: int
    replication: int

    def to_row(self) -> dict[str, object]:
        return {"topic": self.topic, "action": self.action, "partitions": self.partitions,
                "replication": self.replication}  # fmt: skip


def provision_topics(
    bootstrap: str, registry: MemberRegistry, *, partitions: int, dry_run: bool
) -> list[TopicOutcome]:
    """Create every missing topic; existing ones are left as they are and reported."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="action-provision",
                                 bootstrap_timeout_ms=15_000)  # fmt: skip
    except KafkaError as exc:
        raise RouterError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        brokers = len(admin.describe_cluster()["brokers"])
        specs = consortium_topics(registry, brokers=brokers, partitions=partitions)
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()
                    if t.get("error_code", 0) == 0}  # fmt: skip
        outcomes: list[TopicOutcome] = []
        missing: list[TopicSpec] = []
        for spec in specs:
            if spec.name in existing:
                have = existing[spec.name]
                action = "exists" if have >= spec.partitions else "too-few-partitions"
                outcomes.append(TopicOutcome(spec.name, action, have, spec.replication))
            else:
                missing.append(spec)
        if missing and not dry_run:
            request = {s.name: {"num_partitions": s.partitions,
                                "replication_factor": s.replication, "configs": s.configs}
                       for s in missing}  # fmt: skip
            # Another provisioner may win the race: the topics are there either way.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(request, timeout_ms=30_000, wait_for_metadata=True)
        action = "would-create" if dry_run else "created"
        outcomes += [TopicOutcome(s.name, action, s.partitions, s.replication) for s in missing]
        return sorted(outcomes, key=lambda o: o.topic)
    finally:
        admin.close()
