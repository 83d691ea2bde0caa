"""The Kafka a benchmark measures against: ACTION_KAFKA_BOOTSTRAP's, else a local
single-node cluster in a temporary folder, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from broker.connection import KafkaConnection
from broker.localkafka import LocalCluster
from broker.settings import load_settings


@contextlib.contextmanager
def benchmark_kafka() -> Iterator[tuple[KafkaConnection, LocalCluster | None, Path]]:
    """(super-user connection, the local cluster or None, a scratch folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        address = os.environ.get("ACTION_KAFKA_BOOTSTRAP")
        if address:  # an existing cluster, reached as the ACTION_KAFKA_* super user
            yield load_settings().connection_to(address), None, Path(tmp)
            return
        cluster = LocalCluster(Path(tmp) / "kafka", load_settings())
        cluster.up(nodes=1)
        try:
            yield cluster.connection(), cluster, Path(tmp)
        finally:
            cluster.down()


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; NaN when unknown."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
