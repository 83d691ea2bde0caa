"""Benchmark: what the router costs per input record, in CPU of every process, against the
crypto it cannot avoid, and its end-to-end latency at fixed input rates, against a real
local Kafka.

Run:  .venv/bin/python -m tests.benchmarks.bench_router [--records N] [--turns T]

1. N signed records from the example consortium are loaded into the inbound topics.
2. The router (``action-broker run``: its main process with the Kafka I/O on
   librdkafka, and its routing workers) routes them all, ``--turns`` times, each under a
   group of its own: input records/s from its first commit to its last, read from the
   group's committed offsets, and the CPU each process used in that window (router main
   process, routing workers, Kafka), per input record.
3. The crypto floor, measured in this process in the same run: per input record, one
   Ed25519 verification (the source's proof) and one Ed25519 signature per delivery (the
   router's feed signature), the deliveries per record taken from the router's metrics.
4. Latency: records published at ``--low-rate`` and ``--rate`` records/s; p50/p99 from the
   source's produce time to the feed record becoming visible to a read_committed reader.

Goals (issue 21): <= 450 us of CPU per input record in all processes, p99 <= 200 ms at
500 records/s. Uses ACTION_KAFKA_BOOTSTRAP when set, else a one-node Kafka in a
temporary folder.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from broker.connection import KafkaConnection
from broker.contract import topic_owner
from broker.policy.loader import load_policies
from broker.provision import Consortium
from broker.settings import load_settings
from policies import POLICY_DIR
from producers.publisher import PUBLISH_LINGER_MS
from tests.benchmarks.kafka import benchmark_kafka, process_cpu_s
from tests.integration.routers import RouterProcess, TopicReader, publish
from tests.members import indicator, mixed_stream, signed

CPU_GOAL_US = 450
P99_GOAL_MS = 200


def start_at_end(kafka: KafkaConnection, group: str) -> int:
    """Commit ``group``'s offsets at the current end of every inbound topic, so a router
    in that group routes only what is published afterwards; the offsets' sum."""
    consumer = KafkaConsumer(**kafka.client_config(), group_id=group, enable_auto_commit=False)
    partitions = [
        TopicPartition(topic, p)
        for topic in consumer.topics()
        if topic_owner(topic)
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    consumer.close()
    return sum(ends.values())


def committed_records(admin: KafkaAdminClient, group: str) -> int:
    """The sum of the group's committed offsets: less where it started (start_at_end),
    the inbound records whose transactions committed."""
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return sum(o.offset for o in offsets.values() if o.offset > 0)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` with ``labels`` in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class Timed:
    """One run, measured from its first commit to its last: input records/s and CPU
    milliseconds per input record of each process involved, within that window."""

    rate: float
    cpu_ms: dict[str, float]


class CpuWindow:
    """CPU seconds of some processes between two moments, and the records done between."""

    def __init__(self, probes: dict[str, Callable[[], float]]) -> None:
        self.probes = probes
        self.started: tuple[float, int, dict[str, float]] | None = None

    def open(self, done: int) -> None:
        self.started = (time.perf_counter(), done, {k: probe() for k, probe in self.probes.items()})

    def close(self, done: int) -> Timed:
        finished, cpu = time.perf_counter(), {k: probe() for k, probe in self.probes.items()}
        started, at_start, cpu_at_start = self.started or (finished, 0, cpu)
        records = max(done - at_start, 1)
        return Timed(
            records / max(finished - started, 1e-9),
            {k: (cpu[k] - cpu_at_start[k]) * 1000 / records for k in cpu},
        )


def route_all(
    kafka: KafkaConnection,
    expected_in: int,
    start: int,
    group: str,
    log_dir: Path,
    workers: int | None,
    broker_pid: int | None,
    instance: str = "throughput",
) -> tuple[Timed, int, int]:
    """Run ``action-broker run`` until its group has committed ``expected_in`` records;
    the timed run, the output records it wrote and the deliveries among them."""
    settings: dict[str, Any] = {"router_group": group}
    if workers is not None:
        settings["router_workers"] = workers
    router = RouterProcess(kafka, log_dir, instance=instance, **settings).start()
    admin = KafkaAdminClient(**kafka.client_config())
    deadline = time.monotonic() + 1800
    try:
        router.wait_ready(120)
        assert router.process is not None
        main_pid, worker_pids = router.process.pid, router.workers()
        window = CpuWindow(
            {
                "router main process": lambda: process_cpu_s(main_pid),
                "routing workers": lambda: sum(process_cpu_s(p) for p in worker_pids),
                "Kafka": lambda: process_cpu_s(broker_pid),
            }
        )
        while (done := committed_records(admin, group) - start) < expected_in:
            if window.started is None and done > 0:
                window.open(done)
            if time.monotonic() > deadline or router.exited():
                raise SystemExit(f"the router stopped at {done:,} records:\n{router.log()[-3000:]}")
            time.sleep(0.25)
        timed = window.close(done)
        text = router.metrics()
    finally:
        admin.close()
        router.stop()
    decisions = metric_sum(text, "action_router_decisions_total")
    delivered = metric_sum(text, "action_router_decisions_total", outcome="delivered")
    # audit + feeds + ledger/dlq, and the deliveries (each one router signature)
    return timed, int(decisions + delivered + expected_in), int(delivered)


def latency(
    kafka: KafkaConnection, rate: int, seconds: int, group: str, log_dir: Path, workers: int | None
) -> tuple[float, float, int]:
    settings: dict[str, Any] = {"router_group": group}
    if workers is not None:
        settings["router_workers"] = workers
    router = RouterProcess(kafka, log_dir, instance=f"latency-{rate}", **settings)
    router.start().wait_ready(120)  # joined the group, producer initialized
    reader = TopicReader(kafka, ["action.feed.ipr-center"])
    reader.read_until_quiet(quiet_s=1)  # skip what earlier phases delivered
    events = [indicator("platform-a", i) for i in range(rate * seconds)]
    prepared = [signed(e) for e in events]
    ids = {str(e.to_avro()["indicator_id"]) for e in events}
    # Batched as a member's publisher batches (producers/publisher.py): its linger counts
    # in the latency, as the clock starts when the record is created.
    producer = KafkaProducer(**kafka.client_config(), acks="all", linger_ms=PUBLISH_LINGER_MS)
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
    router.stop()
    reader.close()
    producer.close()
    ordered = sorted(latencies)
    if not ordered:
        return float("nan"), float("nan"), 0
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99) - 1], len(ordered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--low-rate",
        type=int,
        default=100,
        help="a second latency run at a rate this machine sustains",
    )
    parser.add_argument("--turns", type=int, default=2, help="router runs, averaged")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="the router's routing processes (default: its setting)",
    )
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    with benchmark_kafka() as (kafka, cluster, tmp):
        broker_pid = cluster.node_pid(1) if cluster is not None else None
        run(kafka, tmp / "credentials", args, broker_pid)


def _mean(runs: list[Timed]) -> Timed:
    """The mean rate and CPU per record of several runs of one side."""
    cpu = {k: sum(run.cpu_ms[k] for run in runs) / len(runs) for k in runs[0].cpu_ms}
    return Timed(sum(run.rate for run in runs) / len(runs), cpu)


def crypto_floor_us(deliveries_per_record: float, samples: int = 2_000) -> float:
    """Microseconds of Ed25519 per input record: one verification, and one signature per
    delivery, measured here (OpenSSL through ``cryptography``, as the router uses)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public, message = key.public_key(), bytes(600)
    signature = key.sign(message)
    started = time.process_time()
    for _ in range(samples):
        public.verify(signature, message)
    verify_s = (time.process_time() - started) / samples
    started = time.process_time()
    for _ in range(samples):
        key.sign(message)
    sign_s = (time.process_time() - started) / samples
    return (verify_s + deliveries_per_record * sign_s) * 1e6


def run(kafka: KafkaConnection, credentials: Path, args: Any, broker_pid: int | None) -> None:
    """Members publish as themselves; the router runs as the admin, whose rights cover
    the benchmark's own groups and transactional ids."""
    policies = load_policies(POLICY_DIR)
    consortium = Consortium.provision(kafka, policies.registry, credentials)
    tag = str(int(time.time()))
    logs = credentials.parent / "logs"
    logs.mkdir(exist_ok=True)
    router_group = f"bench-router-{tag}"
    routed_runs: list[Timed] = []
    outputs = deliveries = 0
    for turn in range(args.turns):
        # Each turn routes a fresh stream from where the inbound topics end: records a
        # router already routed are replays (record.replay), so a turn cannot reuse them.
        group = f"{router_group}-{turn}"
        start = start_at_end(kafka, group)
        publish(consortium, mixed_stream(args.records))
        timed, outputs, deliveries = route_all(
            kafka,
            args.records,
            start,
            group,
            logs,
            args.workers,
            broker_pid,
            instance=f"throughput-{turn}",
        )
        routed_runs.append(timed)
    latency_group = f"{router_group}-latency"
    start_at_end(kafka, latency_group)  # no backlog before the low rate
    routed = _mean(routed_runs)
    floor = crypto_floor_us(deliveries / args.records)
    runs = [
        (rate, *latency(kafka, rate, args.seconds, latency_group, logs, args.workers))
        for rate in (args.low_rate, args.rate)
    ]
    workers = args.workers if args.workers is not None else load_settings().router_workers
    print(
        f"{args.records:,} input records, example consortium; {outputs:,} output records "
        f"(feeds + audit + ledger), {deliveries / args.records:.1f} deliveries per record; "
        f"router with {workers} routing worker(s); {os.cpu_count()} cores"
    )
    print(f"{'measure':<48} {'value':>12}")
    each = " / ".join(f"{run.rate:,.0f}" for run in routed_runs)
    print(f"{'input records/s, each run':<48} {each:>12}")
    print(f"{'input records/s, mean':<48} {routed.rate:>12,.0f}")
    for process, ms in routed.cpu_ms.items():
        print(f"{f'CPU us per input record: {process}':<48} {ms * 1000:>12,.0f}")
    total_us = sum(routed.cpu_ms.values()) * 1000
    verdict = "ok" if total_us <= CPU_GOAL_US else "OVER"
    label = f"CPU us per input record: all (goal <= {CPU_GOAL_US})"
    print(f"{label:<48} {total_us:>12,.0f}  {verdict}")
    print(f"{'crypto floor us per input record (Ed25519)':<48} {floor:>12,.0f}")
    print(f"{'all / crypto floor':<48} {total_us / floor:>12.1f}")
    for rate, p50, p99, seen in runs:
        print(f"{f'end-to-end p50 at {rate}/s (ms)':<48} {p50:>12.1f}")
        goal = f" (goal <= {P99_GOAL_MS})" if rate == args.rate else ""
        mark = ("  ok" if p99 <= P99_GOAL_MS else "  OVER") if goal else ""
        print(f"{f'end-to-end p99 at {rate}/s (ms, n={seen}){goal}':<48} {p99:>12.1f}{mark}")


if __name__ == "__main__":
    main()
