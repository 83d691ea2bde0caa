"""Benchmark: ``action-broker audit verify`` on a long audit trail, against a bare read of
the same topic, in one run on a real local Kafka.

Run:  .venv/bin/python -m tests.benchmarks.bench_audit_verify [--entries 575000]

1. ``--entries`` hash-chained entries shaped like the router's (a decision with a dozen
   field treatments, about 650 bytes) are written to a new 3-partition topic, one chain
   per partition, in transactions of 1,000, uncompressed, as the router writes them.
2. ``action-broker audit verify`` (the installed console script) reads and verifies them
   all, with a worker process per core and with one: wall time, entries/s, and CPU per
   entry of the command (all its processes) and of Kafka.
3. References, the same topic read in this process without verifying: with
   confluent-kafka (what verify reads with now) and with kafka-python (what it read with
   before).

Goal (issue 23): >= 50,000 entries/s. Uses ACTION_KAFKA_BOOTSTRAP when set, else a
one-node Kafka in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from broker.audit import ChainHead, prepare_entry
from broker.connection import KafkaConnection
from tests.benchmarks.kafka import benchmark_kafka, process_cpu_s

GOAL_PER_S = 50_000
PARTITIONS = 3
TRANSACTION = 1_000


def _content(n: int) -> dict[str, Any]:
    return {
        "decision_id": str(uuid.uuid4()),
        "record_id": str(uuid.uuid4()),
        "event_type": "SellerIndicator",
        "source": "platform-a",
        "recipient": "ipr-center",
        "outcome": "delivered",
        "rule_ids": ["platform-a.ipr-center.indicators"],
        "fields": {f"seller.field{k}": "KEEP" for k in range(12)},
        "reasons": [],
        "policy_version": "bench",
        "decided_at_ms": 1_764_000_000_000 + n,
        "input": f"action.inbound.platform-a/0@{n}",
    }


def write_trail(kafka: KafkaConnection, entries: int) -> str:
    topic = f"bench.audit.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.librdkafka_config())
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    producer = Producer(
        kafka.librdkafka_config() | {"transactional.id": f"bench-{topic}", "linger.ms": 20}
    )
    producer.init_transactions()
    heads = [ChainHead(f"bench.inbound/{p}") for p in range(PARTITIONS)]
    written = 0
    while written < entries:
        producer.begin_transaction()
        for partition in range(PARTITIONS):
            count = min(TRANSACTION // PARTITIONS, entries - written)
            prepared = [prepare_entry(_content(written + i)) for i in range(count)]
            heads[partition], encoded = heads[partition].extend(prepared)
            for value in encoded:
                producer.produce(topic, value=value, partition=partition)
            written += count
            producer.poll(0)
        producer.commit_transaction()
    producer.flush()
    return topic


def bare_read_confluent(kafka: KafkaConnection, topic: str, entries: int) -> None:
    reader = Consumer(
        kafka.librdkafka_config()
        | {"group.id": "bench", "isolation.level": "read_committed", "enable.auto.commit": False}
    )
    reader.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = 0
    while seen < entries:
        for message in reader.consume(num_messages=10_000, timeout=1.0):
            if message.error() is None:
                json.loads(message.value() or b"")
                seen += 1
    reader.close()


def bare_read_kafka_python(kafka: KafkaConnection, topic: str, entries: int) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition as KafkaPythonPartition

    reader = KafkaConsumer(**kafka.client_config(), group_id=None, isolation_level="read_committed")
    reader.assign([KafkaPythonPartition(topic, p) for p in range(PARTITIONS)])
    reader.seek_to_beginning()
    seen = 0
    while seen < entries:
        for records in reader.poll(timeout_ms=500).values():
            for record in records:
                json.loads(record.value)
                seen += 1
    reader.close()


def _timed(
    work: Callable[[], None], cpu: Callable[[], float], broker_pid: int | None
) -> tuple[float, float, float]:
    """(wall s, CPU s of the work, CPU s of Kafka)."""
    broker_at, cpu_at, started = process_cpu_s(broker_pid), cpu(), time.perf_counter()
    work()
    return time.perf_counter() - started, cpu() - cpu_at, process_cpu_s(broker_pid) - broker_at


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=575_000)
    args = parser.parse_args()
    with benchmark_kafka() as (kafka, cluster, _tmp):
        broker_pid = cluster.node_pid(1) if cluster is not None else None
        started = time.perf_counter()
        topic = write_trail(kafka, args.entries)
        print(f"wrote {args.entries:,} entries in {time.perf_counter() - started:.1f} s")
        env = {**os.environ, **kafka.environment()}
        verify = [
            str(Path(sys.executable).parent / "action-broker"),
            *("audit", "verify", "--topic", topic, "--group", f"bench-{uuid.uuid4().hex}"),
            *("-o", "json"),
        ]
        outcome: list[subprocess.CompletedProcess[str]] = []

        def run_verify(*extra: str) -> Callable[[], None]:
            def run() -> None:
                done = subprocess.run([*verify, *extra], capture_output=True, text=True, env=env)
                outcome.append(done)

            return run

        rows = [
            (
                f"audit verify ({os.cpu_count()} workers)",
                _timed(run_verify(), _children_cpu_s, broker_pid),
            ),
            (
                "audit verify --workers 1",
                _timed(run_verify("--workers", "1"), _children_cpu_s, broker_pid),
            ),
            (
                "reference: bare read, confluent-kafka",
                _timed(
                    lambda: bare_read_confluent(kafka, topic, args.entries),
                    time.process_time,
                    broker_pid,
                ),
            ),
            (
                "reference: bare read, kafka-python",
                _timed(
                    lambda: bare_read_kafka_python(kafka, topic, args.entries),
                    time.process_time,
                    broker_pid,
                ),
            ),
        ]
        for done in outcome:
            if done.returncode != 0:
                raise SystemExit(f"audit verify failed ({done.returncode}):\n{done.stderr}")
        verdicts = {row["status"] for done in outcome for row in json.loads(done.stdout)}
    n = args.entries
    print(f"\n{n:,} audit entries, {PARTITIONS} chains; {os.cpu_count()} cores")
    print(f"{'':<40} {'wall s':>8} {'entries/s':>11} {'us CPU/entry':>13} {'+ Kafka':>9}")
    for label, (wall, cpu, broker) in rows:
        print(
            f"{label:<40} {wall:>8.1f} {n / wall:>11,.0f} {cpu / n * 1e6:>13.1f} "
            f"{broker / n * 1e6:>9.1f}"
        )
    rate = n / rows[0][1][0]
    verdict = "ok" if rate >= GOAL_PER_S else "UNDER"
    print(f"\naudit verify: {rate:,.0f} entries/s (goal >= {GOAL_PER_S:,}): {verdict}")
    print(f"chains: {', '.join(sorted(verdicts))}")


if __name__ == "__main__":
    main()
