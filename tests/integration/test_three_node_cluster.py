"""The 3-node cluster is configured for no data loss and survives a hard-killed node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from broker.localkafka import ClusterState, LocalCluster
from broker.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_nodes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, ClusterState]]:
    cluster = LocalCluster(Path(tmp_path_factory.mktemp("kafka3")), load_settings())
    state = cluster.up(nodes=3)
    try:
        yield cluster, state
    finally:
        cluster.down()


def _broker_config(admin: KafkaAdminClient, broker_id: int) -> dict[str, str]:
    resource = ConfigResource(ConfigResourceType.BROKER, str(broker_id))
    response = admin.describe_configs([resource], config_filter="all")
    return {key: entry["value"] for key, entry in response["broker"][str(broker_id)].items()}


def test_durability_settings(three_nodes: tuple[LocalCluster, ClusterState]) -> None:
    cluster, state = three_nodes
    admin = KafkaAdminClient(**cluster.connection().client_config())
    try:
        for node in state.nodes:
            config = _broker_config(admin, node.node_id)
            assert config["default.replication.factor"] == "3"
            assert config["min.insync.replicas"] == "2"
            assert config["unclean.leader.election.enable"] == "false"
            assert config["offsets.topic.replication.factor"] == "3"
            assert config["transaction.state.log.replication.factor"] == "3"
            assert config["transaction.state.log.min.isr"] == "2"
            assert config["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
        features = admin.describe_features()
        assert features["eligible.leader.replicas.version"]["finalized"][1] >= 1
    finally:
        admin.close()


def test_a_user_without_acls_is_denied_on_every_node(
    three_nodes: tuple[LocalCluster, ClusterState],
) -> None:
    """The 3-node cluster is secured too: a SCRAM user with no ACL gets nothing, whichever
    node it bootstraps from."""
    from kafka.admin import UserScramCredentialUpsertion

    cluster, state = three_nodes
    admin = KafkaAdminClient(**cluster.connection().client_config())
    admin.create_topics([NewTopic("guarded", 1, 3)], timeout_ms=30_000)
    admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("stranger", "SCRAM-SHA-512", "pw")]
    )
    admin.close()
    for node in state.nodes:
        stranger = cluster.connection(node.node_id).as_user("stranger", "pw")
        for _ in range(50):  # the new user reaches every broker through the metadata log
            try:
                producer = KafkaProducer(**stranger.client_config(), max_block_ms=5_000)
                break
            except KafkaError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"node {node.node_id} never accepted the new user")
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("guarded", b"x").get(timeout=15)
        producer.close()


def test_hard_killed_node_restarts_and_nothing_is_lost(
    three_nodes: tuple[LocalCluster, ClusterState],
) -> None:
    cluster, _ = three_nodes
    admin = KafkaAdminClient(**cluster.connection().client_config())
    admin.create_topics([NewTopic("durable", 3, 3)], timeout_ms=30_000)
    admin.close()
    producer = KafkaProducer(
        **cluster.connection().client_config(), acks="all", enable_idempotence=True, retries=20
    )
    for i in range(500):
        producer.send("durable", key=str(i % 7).encode(), value=str(i).encode())
    producer.flush(timeout=60)

    cluster.kill_node(2)
    assert not cluster.node_running(2)
    # Two of three replicas remain: min.insync.replicas=2 still accepts acks=all writes.
    futures = [producer.send("durable", value=str(i).encode()) for i in range(500, 1000)]
    producer.flush(timeout=120)
    for future in futures:
        future.get(timeout=60)

    cluster.start_node(2)
    assert cluster.node_running(2)
    for i in range(1000, 1100):
        producer.send("durable", value=str(i).encode())
    producer.flush(timeout=60)
    producer.close()

    consumer = KafkaConsumer(
        **cluster.connection().client_config(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20_000,
    )
    consumer.assign([TopicPartition("durable", p) for p in range(3)])
    values = sorted(int(m.value) for m in consumer)
    consumer.close()
    assert values == list(range(1100))
