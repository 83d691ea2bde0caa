"""What remembering record ids costs the router: memory and start-up per million records.

    .venv/bin/python -m tests.benchmarks.bench_claims [--records 200000]

The router keeps one claim per record routed in the last 400 days (broker.claims) and
reads them all back from ``action.record-ids`` at start-up and after a rebalance. This
program measures, in one run: the Python memory the claims take (tracemalloc), the CPU to
decode and load them, and the time and CPU to read them from a real Kafka (a local
cluster it starts, or ACTION_KAFKA_BOOTSTRAP) the way the router's catch-up reads them;
then prints one table, scaled per million records.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import uuid

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table

from broker.claims import Claim, RecordClaims, content_digest
from broker.connection import KafkaConnection
from tests.benchmarks.kafka import benchmark_kafka

SOURCES = ("platform-a", "platform-b", "platform-c", "payments-x", "brand-owner")


def _claims(count: int) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    return [
        (
            str(uuid.uuid4()).encode(),
            Claim(SOURCES[n % len(SOURCES)], content_digest(b"%d" % n), now - n).encode(),
        )
        for n in range(count)
    ]


def _in_memory(records: list[tuple[bytes, bytes]]) -> tuple[float, float, float]:
    """(bytes of Python memory, CPU seconds to load, reference bytes) for ``records``
    in RecordClaims; the reference keeps each claim as a Claim tuple under its id text,
    the plain way (what the packed form saves)."""
    gc.collect()
    started = time.process_time()
    claims = RecordClaims()
    for key, value in records:
        claims.load(key.decode(), value)
    cpu = time.process_time() - started  # without tracemalloc, which slows allocation
    del claims
    gc.collect()
    tracemalloc.start()
    claims = RecordClaims()
    for key, value in records:
        claims.load(key.decode(), value)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(claims) == len(records)
    del claims
    gc.collect()
    tracemalloc.start()
    plain = {key.decode(): Claim.decode(value) for key, value in records}
    reference, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(plain) == len(records)
    return float(size), cpu, float(reference)


def _from_kafka(kafka: KafkaConnection, records: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to read ``records`` back from a topic."""
    topic = f"bench.record-ids.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**kafka.client_config())
    admin.create_topics([NewTopic(topic, 3, 1, topic_configs={"cleanup.policy": "compact,delete"})])
    admin.close()
    producer = KafkaProducer(**kafka.client_config(), acks=1, linger_ms=50, batch_size=512 * 1024)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    reader = KafkaConsumer(
        **kafka.client_config(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    partitions = [TopicPartition(topic, p) for p in range(3)]
    reader.assign(partitions)
    claims = RecordClaims()
    wall, cpu = time.monotonic(), time.process_time()
    end = reader.end_offsets(partitions)
    while any(reader.position(tp) < end[tp] for tp in partitions):
        for batch in reader.poll(timeout_ms=200).values():
            for record in batch:
                claims.load(record.key.decode(), record.value)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    reader.close()
    assert len(claims) == len(records)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    records = _claims(args.records)
    memory, load_cpu, reference = _in_memory(records)
    with benchmark_kafka() as (kafka, _, _):
        wall, read_cpu = _from_kafka(kafka, records)
    per_million = 1_000_000 / args.records
    table = Table(title=f"record-id claims, measured on {args.records:,}, per million")
    for column in ("measure", "per million records"):
        table.add_column(column)
    table.add_row("Python memory of the claims", f"{memory * per_million / 2**20:,.0f} MiB")
    table.add_row(
        "  reference: as Claim tuples keyed by id text",
        f"{reference * per_million / 2**20:,.0f} MiB",
    )
    table.add_row("decode and load, CPU", f"{load_cpu * per_million:,.1f} s")
    table.add_row("read back from Kafka at start-up, wall", f"{wall * per_million:,.1f} s")
    table.add_row(
        "read back from Kafka at start-up, router CPU", f"{read_cpu * per_million:,.1f} s"
    )
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
