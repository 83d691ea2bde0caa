"""One session-wide Kafka for the integration tier.

Where the bootstrap address comes from, in order:
1. ``ACTION_KAFKA_BOOTSTRAP``: an existing cluster (nothing is started or stopped);
2. testcontainers' Kafka container, when a Docker daemon answers;
3. the local Apache Kafka from deploy/kafka, started in a temporary folder.
When none can be had, every integration test fails with the reason: never a silent skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from broker.errors import ActionError
from broker.localkafka import LocalCluster
from broker.settings import load_settings

_CONTAINER_IMAGE = "confluentinc/cp-kafka:7.7.1"


def _docker_daemon_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no docker SDK, no socket, no daemon: all mean "not available"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("ACTION_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    if _docker_daemon_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(_CONTAINER_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("kafka"), load_settings())
    try:
        state = cluster.up(nodes=1)
    except ActionError as exc:
        pytest.fail(
            "no Kafka broker for the integration tests: ACTION_KAFKA_BOOTSTRAP is unset, "
            f"no Docker daemon answers, and the local Kafka failed to start:\n{exc}",
            pytrace=False,
        )
    try:
        yield state.bootstrap
    finally:
        cluster.down()


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test and delete them afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
    created: list[str] = []

    def create(partitions: int = 3, replication: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(name, partitions, replication)], timeout_ms=30_000)
        created.append(name)
        return name

    try:
        yield create
    finally:
        if created:
            admin.delete_topics(created, timeout_ms=30_000)
        admin.close()


@pytest.fixture(scope="session")
def consortium_bootstrap(kafka_bootstrap: str) -> str:
    """The session's Kafka with the example consortium's topics provisioned (checked
    idempotent: provisioning twice creates nothing the second time)."""
    from broker.policy.loader import load_policies
    from broker.provision import provision_topics
    from policies import POLICY_DIR

    registry = load_policies(POLICY_DIR).registry
    provision_topics(kafka_bootstrap, registry, partitions=3, dry_run=False)
    again = provision_topics(kafka_bootstrap, registry, partitions=3, dry_run=False)
    assert {o.action for o in again} == {"exists"}, "provisioning is idempotent"
    return kafka_bootstrap
