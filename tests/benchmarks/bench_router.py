"""Benchmark: the router's throughput beside a raw kafka-python passthrough, and its
end-to-end latency at a fixed input rate, against a real local Kafka.

Run:  .venv/bin/python -m tests.benchmarks.bench_router [--records N] [--rate R]

1. N signed records from the example consortium are loaded into the inbound topics.
2. The router (``action-broker run``, its own process with its routing workers) routes
   them all: input records/s from its first commit to its last, read from its group's
   committed offsets. It takes turns with the passthrough (``--turns`` passthrough runs,
   each between two router runs, every run under a group of its own); the ratio compares
   their means, as the machine's speed drifts between runs.
   Before it, an unmeasured passthrough warms the broker's JVM up.
3. A raw passthrough reads the same input with a consumer and writes the same number of
   output records the router wrote (feeds + audit + ledger): copies of each input, all to
   the partition of its key, hashed once. It uses transactions of the same size, with no
   decoding, policy or crypto: the practical limit for kafka-python here.
   Timed the same way, from its first commit to its last.
   Both runs report the CPU per input record of every process involved (the router's
   main process and workers, the passthrough, Kafka) within that same window.
4. Latency: records published at a fixed rate; p50/p99 from the source's produce time to
   the feed record becoming visible to a read_committed consumer.
Uses ACTION_KAFKA_BOOTSTRAP when set, else starts a one-node Kafka in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from broker.connection import KafkaConnection
from broker.contract import INBOUND_PATTERN
from broker.feed_writer import default_partition
from broker.policy.loader import load_policies
from broker.provision import Consortium
from broker.settings import load_settings
from policies import POLICY_DIR
from tests.benchmarks.kafka import benchmark_kafka
from tests.integration.routers import RouterProcess, TopicReader, publish
from tests.members import indicator, mixed_stream, signed

TARGET_RATIO = 0.8
PASSTHROUGH_TOPIC = "bench.passthrough"


def committed_records(admin: KafkaAdminClient, group: str) -> int:
    """Inbound records whose transaction committed: the group's committed offsets."""
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
    group: str,
    log_dir: Path,
    workers: int | None,
    broker_pid: int | None,
    instance: str = "throughput",
) -> tuple[Timed, int]:
    """Run ``action-broker run`` until its group has committed ``expected_in`` records;
    the timed run and the output records it wrote."""
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
                "router main process": lambda: _process_cpu_s(main_pid),
                "routing workers": lambda: sum(_process_cpu_s(p) for p in worker_pids),
                "Kafka": lambda: _process_cpu_s(broker_pid),
            }
        )
        while (done := committed_records(admin, group)) < expected_in:
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
    return timed, int(decisions + delivered + expected_in)  # audit + feeds + ledger/dlq


def passthrough(
    kafka: KafkaConnection,
    expected_in: int,
    outputs: int,
    group: str,
    batch: int,
    broker_pid: int | None,
) -> Timed:
    """Read the inbound records, write ``outputs`` records of their bytes, transactionally.
    Timed like the router: from the first commit to the last."""
    consumer = KafkaConsumer(
        **kafka.client_config(),
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_poll_records=batch,
    )
    consumer.subscribe(pattern=INBOUND_PATTERN)
    # The router's producer settings, and like it the flush before each commit.
    producer = KafkaProducer(
        **kafka.client_config(),
        transactional_id=f"{group}.raw",
        acks="all",
        linger_ms=2000,
        batch_size=256 * 1024,
    )
    producer.init_transactions()
    # Every copy of an input record has its key, so the client's partitioner would hash
    # that key again for each copy. Hashed once per input instead (to the partition the
    # partitioner picks), as the router hashes an audit chain's key once for its entries:
    # per copy, it cost the passthrough a quarter of its throughput, which flattered the
    # router's ratio until session 8.
    partitions = len(producer.partitions_for(PASSTHROUGH_TOPIC))
    fan_out = outputs / expected_in
    read = written = 0
    window = CpuWindow(
        {
            "passthrough": lambda: _own_cpu_s(resource.RUSAGE_SELF),
            "Kafka": lambda: _process_cpu_s(broker_pid),
        }
    )
    while read < expected_in:
        polled = consumer.poll(timeout_ms=500)
        if not polled:
            continue
        producer.begin_transaction()
        offsets = {}
        for tp, records in polled.items():
            for record in records:
                read += 1
                key = record.key
                partition = None if key is None else default_partition(key, partitions)
                while written < read * fan_out:
                    producer.send(
                        PASSTHROUGH_TOPIC,
                        value=record.value,
                        key=key,
                        headers=record.headers,
                        partition=partition,
                    )
                    written += 1
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        producer.flush()
        producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
        producer.commit_transaction()
        if window.started is None:
            window.open(read)
    timed = window.close(read)
    consumer.close()
    producer.close()
    return timed


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
    parser.add_argument(
        "--turns", type=int, default=2, help="passthrough runs, each between two router runs"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="the router's routing processes (default: its setting)",
    )
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1 (one passthrough run between two router runs)")
    with benchmark_kafka() as (kafka, cluster, tmp):
        broker_pid = cluster.node_pid(1) if cluster is not None else None
        run(kafka, tmp / "credentials", args, broker_pid)


def _mean(runs: list[Timed]) -> Timed:
    """The mean rate and CPU per record of several runs of one side."""
    cpu = {k: sum(run.cpu_ms[k] for run in runs) / len(runs) for k in runs[0].cpu_ms}
    return Timed(sum(run.rate for run in runs) / len(runs), cpu)


def _process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; NaN when unknown."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run(kafka: KafkaConnection, credentials: Path, args: Any, broker_pid: int | None) -> None:
    """Members publish as themselves; the router and the passthrough run as the admin,
    whose rights cover the benchmark's own group and transactional ids."""
    policies = load_policies(POLICY_DIR)
    consortium = Consortium.provision(kafka, policies.registry, credentials)
    admin = KafkaAdminClient(**kafka.client_config())
    with contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics({PASSTHROUGH_TOPIC: {"num_partitions": 3, "replication_factor": 1}})
    admin.close()
    tag = str(int(time.time()))
    logs = credentials.parent / "logs"
    logs.mkdir(exist_ok=True)
    publish(consortium, mixed_stream(args.records))
    # A fresh broker's JVM compiles its hot paths during the first minute of traffic, on
    # the same two cores: an unmeasured passthrough pays for that, so neither measured
    # run does (the router would otherwise, as it runs first).
    batch = load_settings().router_batch_records  # the passthrough's transactions too
    passthrough(kafka, args.records, args.records * 8, f"bench-warm-up-{tag}", batch, None)
    # Router and passthrough in turns, starting and ending with the router: this machine's
    # speed drifts by up to a half within minutes, so each side is measured across the
    # same stretch of time and the ratio compares their means.
    router_group = f"bench-router-{tag}"
    routed_runs: list[Timed] = []
    raw_runs: list[Timed] = []
    outputs = 0
    for turn in range(args.turns + 1):
        group = router_group if turn == 0 else f"{router_group}-{turn}"
        timed, outputs = route_all(
            kafka,
            args.records,
            group,
            logs,
            args.workers,
            broker_pid,
            instance=f"throughput-{turn}",
        )
        routed_runs.append(timed)
        if turn < args.turns:
            raw_runs.append(
                passthrough(
                    kafka, args.records, outputs, f"bench-raw-{tag}-{turn}", batch, broker_pid
                )
            )
    routed, raw = _mean(routed_runs), _mean(raw_runs)
    runs = [
        (rate, *latency(kafka, rate, args.seconds, router_group, logs, args.workers))
        for rate in (args.low_rate, args.rate)
    ]  # no backlog before the low rate
    ratio = routed.rate / raw.rate
    workers = args.workers if args.workers is not None else load_settings().router_workers
    print(
        f"{args.records:,} input records, example consortium; {outputs:,} output records "
        f"(feeds + audit + ledger); router with {workers} routing worker(s); "
        f"{os.cpu_count()} cores"
    )
    print(f"{'measure':<44} {'value':>10}")
    turns = [f"{run.rate:,.0f}" for run in routed_runs]
    print(f"{'router input records/s, each run':<44} {' / '.join(turns):>10}")
    print(f"{'router input records/s, mean':<44} {routed.rate:>10,.0f}")
    turns = [f"{run.rate:,.0f}" for run in raw_runs]
    print(f"{'raw passthrough input records/s, each run':<44} {' / '.join(turns):>10}")
    print(f"{'raw passthrough input records/s, mean':<44} {raw.rate:>10,.0f}")
    verdict = "ok" if ratio >= TARGET_RATIO else "UNDER"
    print(f"{'ratio (goal >= 0.8)':<44} {ratio:>10.3f}  {verdict}")
    for who, timed in (("router", routed), ("passthrough", raw)):
        for process, ms in timed.cpu_ms.items():
            print(f"{f'CPU ms/record, {who} run: {process}':<44} {ms:>10.2f}")
        print(f"{f'CPU ms/record, {who} run: all':<44} {sum(timed.cpu_ms.values()):>10.2f}")
    for rate, p50, p99, seen in runs:
        print(f"{f'end-to-end p50 at {rate}/s (ms)':<44} {p50:>10.1f}")
        print(f"{f'end-to-end p99 at {rate}/s (ms, n={seen})':<44} {p99:>10.1f}")


if __name__ == "__main__":
    main()
