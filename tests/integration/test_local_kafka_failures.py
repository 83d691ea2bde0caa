"""The local Kafka's failure paths give clear, typed errors (real Maven, real JVM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import BrokerStartError, KafkaDownloadError
from broker.localkafka import LocalCluster
from broker.localkafka.distribution import fetch_from_maven
from broker.settings import load_settings


def test_unresolvable_kafka_version_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(KafkaDownloadError, match=r"Maven could not fetch Kafka 0\.0\.1-nope"):
        fetch_from_maven("0.0.1-nope", tmp_path)
    assert not (tmp_path / "kafka-0.0.1-nope" / ".complete").exists()
    assert not (tmp_path / "kafka-0.0.1-nope" / "libs").exists()


def test_broker_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "broken", load_settings())
    cluster.up()
    cluster.down()
    config = cluster.node_dir(1) / "server.properties"
    config.write_text(config.read_text() + "num.network.threads=0\n")
    with pytest.raises(BrokerStartError) as info:
        cluster.up()
    message = str(info.value)
    assert "exited during start-up" in message
    assert "num.network.threads" in message, "the log tail names the bad setting"
    assert not cluster.node_running(1)
