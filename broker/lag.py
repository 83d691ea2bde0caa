"""How far behind the router is, per inbound topic: records not yet routed, and the age
of the oldest of them, as Prometheus gauges (alerts ActionRouterLagRecords and
ActionRouterLagSeconds)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import Consumer, TopicPartition

from broker.checkpoint import Partition
from broker.metrics import RouterMetrics


def report_lag(
    consumer: Consumer, metrics: RouterMetrics, last_routed_ms: Mapping[Partition, int]
) -> None:
    """Set the lag gauges from the consumer's positions and the high watermarks its
    fetches saw; ``last_routed_ms`` holds each partition's last routed record's time."""
    assigned = consumer.assignment()
    metrics.assigned_partitions.set(len(assigned))
    lag: dict[str, int] = {}
    age: dict[str, float] = {}
    now_ms = time.time() * 1000
    for at in consumer.position(assigned) if assigned else ():
        _, high = consumer.get_watermark_offsets(
            TopicPartition(at.topic, at.partition), cached=True
        )
        if high < 0 or at.offset < 0:
            continue  # nothing fetched from it yet
        behind = max(0, high - at.offset)
        lag[at.topic] = lag.get(at.topic, 0) + behind
        last = last_routed_ms.get((at.topic, at.partition))
        seconds = (now_ms - last) / 1000 if behind and last else 0.0
        age[at.topic] = max(age.get(at.topic, 0.0), seconds)
    for topic, value in lag.items():
        metrics.lag_records.labels(topic).set(value)
        metrics.lag_seconds.labels(topic).set(age.get(topic, 0.0))
