"""Benchmark: the router's throughput beside a raw kafka-python passthrough, and its
end-to-end latency at a fixed input rate, against a real local Kafka.

Run:  .venv/bin/python -m tests.benchmarks.bench_router [--records N] [--rate R]

1. N signed records from the example consortium are loaded into the inbound topics.
2. The router (in this process, one core's worth of Python) routes them all: input
   records/s from its first to its last commit.
3. A raw passthrough reads the same input with a consumer and writes the same number of
   output records the router wrote (feeds + audit + ledger), in transactions of the same
   size, with no decoding, policy or crypto: the practical limit for kafka-python here.
4. Latency: records published at a fixed rate; p50/p99 from the source's produce time to
   the feed record becoming visible to a read_committed consumer.
Uses ACTION_KAFKA_BOOTSTRAP when set, else starts a one-node Kafka in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from broker.connection import KafkaConnection, connection_from_settings
from broker.localkafka import LocalCluster
from broker.metrics import RouterMetrics
from broker.policy.loader import load_policies
from broker.provision import Consortium
from broker.router import RouterService
from broker.settings import load_settings
from broker.topics import INBOUND_PATTERN
from policies import POLICY_DIR
from tests.integration.routers import TopicReader, publish
from tests.members import indicator, mixed_stream, signed

TARGET_RATIO = 0.8
PASSTHROUGH_TOPIC = "bench.passthrough"


def _counter(metrics: RouterMetrics, name: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def route_all(kafka: KafkaConnection, expected_in: int, group: str) -> tuple[float, int]:
    """Run the router until it has read ``expected_in`` records; (records/s, outputs)."""
    settings = load_settings(router_group=group, metrics_port=0)
    metrics = RouterMetrics()
    service = RouterService(settings, kafka, metrics)
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    first = None
    while _counter(metrics, "action_router_records_in_total") < expected_in:
        if first is None and _counter(metrics, "action_router_records_in_total") > 0:
            first = time.perf_counter()
        time.sleep(0.01)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    decisions = _counter(metrics, "action_router_decisions_total")
    delivered = sum(
        s.value for f in metrics.registry.collect() for s in f.samples
        if s.name == "action_router_decisions_total" and s.labels.get("outcome") == "delivered"
    )  # fmt: skip
    service.request_stop()
    worker.join(60)
    outputs = int(decisions + delivered + expected_in)  # audit + feeds + ledger/dlq
    return expected_in / max(elapsed, 1e-9), outputs


def passthrough(
    kafka: KafkaConnection, expected_in: int, outputs: int, group: str, batch: int
) -> float:
    """Read the inbound records, write ``outputs`` records of their bytes, transactionally."""
    consumer = KafkaConsumer(**kafka.client_config(), group_id=group,
                             enable_auto_commit=False, isolation_level="read_committed",
                             auto_offset_reset="earliest", max_poll_records=batch)  # fmt: skip
    consumer.subscribe(pattern=INBOUND_PATTERN)
    producer = KafkaProducer(**kafka.client_config(), transactional_id=f"{group}.raw",
                             acks="all", linger_ms=5, batch_size=256 * 1024)  # fmt: skip
    producer.init_transactions()
    fan_out = outputs / expected_in
    read = written = 0
    first = None
    while read < expected_in:
        polled = consumer.poll(timeout_ms=500)
        if not polled:
            continue
        first = first or time.perf_counter()
        producer.begin_transaction()
        offsets = {}
        for tp, records in polled.items():
            for record in records:
                read += 1
                while written < read * fan_out:
                    producer.send(PASSTHROUGH_TOPIC, value=record.value, key=record.key,
                                  headers=record.headers)  # fmt: skip
                    written += 1
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
        producer.commit_transaction()
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    producer.close()
    return expected_in / max(elapsed, 1e-9)


def latency(
    kafka: KafkaConnection, rate: int, seconds: int, group: str
) -> tuple[float, float, int]:
    settings = load_settings(router_group=group, metrics_port=0)
    service = RouterService(settings, kafka, RouterMetrics())
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    started = time.monotonic()
    while not service.health.ready:  # joined the group, producer initialized
        if time.monotonic() - started > 120:
            raise SystemExit("the in-process router did not become ready within 120 s")
        time.sleep(0.1)
    reader = TopicReader(kafka, ["action.feed.ipr-center"])
    reader.read_until_quiet(quiet_s=1)  # skip what earlier phases delivered
    events = [indicator("platform-a", i) for i in range(rate * seconds)]
    prepared = [signed(e) for e in events]
    ids = {str(e.to_avro()["indicator_id"]) for e in events}
    producer = KafkaProducer(**kafka.client_config(), acks="all", linger_ms=0)
    latencies: list[float] = []

    def read() -> None:
        deadline = time.monotonic() + seconds + 60
        while len(latencies) < len(ids) and time.monotonic() < deadline:
            for record in reader.poll(100):
                if record.key.decode() in ids:
                    sent = int(dict(record.headers)["action.source-ts"])
                    latencies.append(time.time() * 1000 - sent)

    reading = threading.Thread(target=read, daemon=True)
    reading.start()
    start = time.perf_counter()
    for n, (key, value, headers) in enumerate(prepared):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.send("action.in.platform-a", value=value, key=key, headers=headers)
    producer.flush()
    reading.join()
    service.request_stop()
    worker.join(60)
    reader.close()
    ordered = sorted(latencies)
    if not ordered:
        return float("nan"), float("nan"), 0
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99) - 1], len(ordered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--low-rate", type=int, default=100,
                        help="a second latency run at a rate this machine sustains")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        address = os.environ.get("ACTION_KAFKA_BOOTSTRAP")
        cluster = None
        if address:  # an existing cluster, reached as the ACTION_KAFKA_* super user
            kafka = connection_from_settings(address, load_settings())
        else:
            cluster = LocalCluster(Path(tmp) / "kafka", load_settings())
            cluster.up(nodes=1)
            kafka = cluster.connection()
        try:
            run(kafka, Path(tmp) / "credentials", args)
        finally:
            if cluster is not None:
                cluster.down()


def run(kafka: KafkaConnection, credentials: Path, args: Any) -> None:
    """Members publish as themselves; the router and the passthrough run as the admin,
    whose rights cover the benchmark's own group and transactional ids."""
    policies = load_policies(POLICY_DIR)
    consortium = Consortium.provision(kafka, policies.registry, credentials)
    admin = KafkaAdminClient(**kafka.client_config())
    with contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics({PASSTHROUGH_TOPIC: {"num_partitions": 3, "replication_factor": 1}})
    admin.close()
    tag = str(int(time.time()))
    publish(consortium, mixed_stream(args.records))
    router_rate, outputs = route_all(kafka, args.records, f"bench-router-{tag}")
    raw_rate = passthrough(kafka, args.records, outputs, f"bench-raw-{tag}", 500)
    runs = [
        (rate, *latency(kafka, rate, args.seconds, f"bench-router-{tag}"))
        for rate in (args.low_rate, args.rate)
    ]  # fmt: skip  (no backlog before the low rate)
    ratio = router_rate / raw_rate
    print(f"{args.records:,} input records, example consortium; {outputs:,} output records "
          f"(feeds + audit + ledger)")  # fmt: skip
    print(f"{'measure':<38} {'value':>12}")
    print(f"{'router input records/s':<38} {router_rate:>12,.0f}")
    print(f"{'raw passthrough input records/s':<38} {raw_rate:>12,.0f}")
    verdict = "ok" if ratio >= TARGET_RATIO else "UNDER"
    print(f"{'ratio (goal >= 0.8)':<38} {ratio:>12.3f}  {verdict}")
    for rate, p50, p99, seen in runs:
        print(f"{f'end-to-end p50 at {rate}/s (ms)':<38} {p50:>12.1f}")
        print(f"{f'end-to-end p99 at {rate}/s (ms, n={seen})':<38} {p99:>12.1f}")


if __name__ == "__main__":
    main()
