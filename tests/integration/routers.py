"""Run the router as the real console script, and read topics back, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from broker.connection import KafkaConnection
from broker.events import Event
from broker.membership import load_trust_store
from broker.policy.engine import PolicySet
from broker.provision import Consortium
from demo.consortium import expected_deliveries
from policies import POLICY_DIR
from tests.members import signed

MEMBERS = [m.id for m in load_trust_store(POLICY_DIR).members]
FEEDS = [f"action.feed.{m}" for m in MEMBERS]


def feed_key(record: Any) -> tuple[str, str]:
    """(recipient, record id) of a feed record."""
    return record.topic.removeprefix("action.feed."), record.key.decode()


ACTION_BROKER = str(Path(sys.executable).parent / "action-broker")


class RouterProcess:
    """``action-broker run`` in a subprocess, logging to a file."""

    def __init__(
        self,
        kafka: KafkaConnection,
        log_dir: Path,
        instance: str = "0",
        args: Iterable[str] = (),
        **settings: Any,
    ) -> None:
        self.log_path = log_dir / f"router-{instance}.log"
        self.env = {
            **os.environ,
            **kafka.environment(),
            "ACTION_ROUTER_INSTANCE": instance,
            "ACTION_METRICS_PORT": "0",
            "ACTION_DEMO_KEYS": "true",  # the example consortium's match secret and router key
            **{f"ACTION_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.args = list(args)  # command-line options after `action-broker run`
        self.group = str(settings.get("router_group", "action-router"))
        self.transactional_id = f"{self.group}.{instance}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_start = 0

    def start(self) -> RouterProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        # What this start prints comes after here: an earlier process's metrics URL does not.
        self._log_start = log.tell()
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [ACTION_BROKER, "run", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def catches(self, signum: int) -> bool:
        """Whether the process has a handler for ``signum`` (SigCgt in /proc)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def workers(self) -> list[int]:
        """The routing worker processes (children running multiprocessing's spawn_main)."""
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
                command = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == self.process.pid and b"spawn_main" in command:
                found.append(int(stat.parent.name))
        return sorted(found)

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics_url(self, timeout: float = 30) -> str:
        """The metrics URL of the process last started, never an earlier one's."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                this_start = log.read().decode(errors="replace")
            found = re.findall(r"metrics: (http://\S+)/metrics", this_start)
            if found:
                return str(found[-1])
            time.sleep(0.2)
        raise AssertionError(f"the router printed no metrics URL:\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 60) -> RouterProcess:
        """Until /readyz answers 200: joined the group, producer initialized, ledger read."""
        url = self.metrics_url(timeout) + "/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the router never became ready:\n{self.log()[-3000:]}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url() + "/metrics", timeout=5) as response:
            return str(response.read().decode())


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0


def publish(consortium: Consortium, events: Iterable[Event]) -> int:
    """Each event signed and sent by its source member, under the member's own principal."""
    producers: dict[str, KafkaProducer] = {}
    sent: list[Any] = []
    count = 0
    for event in events:
        member = event.source_member
        if member not in producers:
            producers[member] = KafkaProducer(
                **consortium.member(member).client_config(),
                acks="all",
                linger_ms=20,
                max_request_size=1_200_000,
            )
        key, value, headers = signed(event)
        sent.append(
            producers[member].send(f"action.in.{member}", value=value, key=key, headers=headers)
        )
        count += 1
    for producer in producers.values():
        producer.flush(120)
    for future in sent:
        future.get(timeout=120)  # a record Kafka did not take fails the test here
    for producer in producers.values():
        producer.close()
    return count


def send_raw(
    kafka: KafkaConnection,
    topic: str,
    value: bytes | None,
    key: bytes,
    headers: list[tuple[str, bytes]],
) -> None:
    producer = KafkaProducer(**kafka.client_config(), acks="all", max_request_size=1_200_000)
    producer.send(topic, value=value, key=key, headers=headers)
    producer.flush(30)
    producer.close()


class TopicReader:
    """A read_committed reader of whole topics, from the beginning, without a group."""

    def __init__(self, kafka: KafkaConnection, topics: list[str]) -> None:
        self.consumer = KafkaConsumer(
            **kafka.client_config(),
            group_id=None,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=3_000_000,
        )
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)

    def poll(self, timeout_ms: int = 500) -> list[Any]:
        return [r for rs in self.consumer.poll(timeout_ms=timeout_ms).values() for r in rs]

    def read_until_quiet(self, quiet_s: float = 3.0, limit_s: float = 120.0) -> list[Any]:
        out: list[Any] = []
        deadline = time.monotonic() + limit_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            got = self.poll()
            if got:
                out += got
                last = time.monotonic()
        return out

    def close(self) -> None:
        self.consumer.close()


class FeedWatcher(threading.Thread):
    """A read_committed consumer counting deliveries of ``events`` while the faults happen;
    ``expected`` is what the policy engine says they must be."""

    def __init__(self, consortium: Consortium, policies: PolicySet, events: list[Event]) -> None:
        super().__init__(daemon=True)
        self.reader = TopicReader(consortium.admin, FEEDS)
        self.expected = set(expected_deliveries(policies, events))
        self.ids = {str(e.to_avro()["indicator_id"]) for e in events}
        self.seen: Counter[tuple[str, str]] = Counter()
        self.halt = threading.Event()
        self.start()

    def await_share(self, share: float, limit_s: float = 300) -> None:
        """Until ``share`` of the expected deliveries have been seen; fails at the limit."""
        deadline = time.monotonic() + limit_s
        while len(self.seen) < share * len(self.expected):
            assert time.monotonic() < deadline, f"no progress past {len(self.seen)}"
            time.sleep(0.05)

    def run(self) -> None:
        while not self.halt.is_set():
            for record in self.reader.poll(300):
                key = feed_key(record)
                if key[1] in self.ids:
                    self.seen[key] += 1
        self.reader.close()

    @property
    def duplicates(self) -> list[tuple[str, str]]:
        return [k for k, n in self.seen.items() if n > 1]


def assert_exactly_once(consortium: Consortium, watcher: FeedWatcher) -> None:
    """Every expected delivery exactly once: while the faults happened and afterwards."""
    expected, ids = watcher.expected, watcher.ids
    deadline = time.monotonic() + 300
    while not expected <= set(watcher.seen) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    watcher.halt.set()
    watcher.join(30)
    assert not watcher.duplicates, f"duplicates seen during the faults: {watcher.duplicates[:5]}"
    missing = expected - set(watcher.seen)
    assert not missing, f"{len(missing)} deliveries missing, e.g. {sorted(missing)[:3]}"
    after = TopicReader(consortium.admin, FEEDS)
    final = Counter(
        feed_key(r) for r in after.read_until_quiet(quiet_s=3, limit_s=300) if feed_key(r)[1] in ids
    )
    after.close()
    assert set(final) == expected, "a fresh read_committed consumer sees exactly the expected"
    assert max(final.values()) == 1, "and each once"


def wait_for(
    reader: TopicReader, wanted: set[tuple[str, str]], seen: Counter[Any], limit_s: float = 180
) -> list[Any]:
    """Read feeds until every wanted delivery has been seen; the records read."""
    records: list[Any] = []
    wanted_ids = {record_id for _, record_id in wanted}
    deadline = time.monotonic() + limit_s
    while not wanted <= set(seen) and time.monotonic() < deadline:
        for record in reader.poll():
            key = feed_key(record)
            if key[1] in wanted_ids:
                seen[key] += 1
                records.append(record)
    return records
