"""How far behind the router is, per inbound topic: records not yet routed, and the age
of the oldest of them, as Prometheus gauges (alerts ActionRouterLagRecords and
ActionRouterLagSeconds)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from broker.metrics import RouterMetrics


def report_lag(
    consumer: KafkaConsumer, metrics: RouterMetrics, last_routed_ms: Mapping[TopicPartition, int]
) -> None:
    """Set the lag gauges from the consumer's positions and high watermarks;
    ``last_routed_ms`` holds each partition's last routed record's timestamp."""
    assigned = consumer.assignment()
    metrics.assigned_partitions.set(len(assigned))
    lag: dict[str, int] = {}
    age: dict[str, float] = {}
    now_ms = time.time() * 1000
    for tp in assigned:
        high = consumer.highwater(tp)
        if high is None:
            continue
        behind = max(0, high - consumer.position(tp))
        lag[tp.topic] = lag.get(tp.topic, 0) + behind
        last = last_routed_ms.get(tp)
        seconds = (now_ms - last) / 1000 if behind and last else 0.0
        age[tp.topic] = max(age.get(tp.topic, 0.0), seconds)
    for topic, value in lag.items():
        metrics.lag_records.labels(topic).set(value)
        metrics.lag_seconds.labels(topic).set(age.get(topic, 0.0))
