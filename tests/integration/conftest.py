"""One session-wide, secured Kafka for the integration tier.

Where it comes from, in order:
1. ``ACTION_KAFKA_BOOTSTRAP``: an existing cluster (nothing is started or stopped), reached
   with the ACTION_KAFKA_* security settings, which must name a super user;
2. the local Apache Kafka from deploy/kafka, started in a temporary folder with SCRAM
   authentication and the StandardAuthorizer, exactly as the demo and deployments run it.
When neither can be had, every integration test fails with the reason: never a silent
skip. (A testcontainers Kafka is not used: the project's tests need the authorizer and
SCRAM users, which the local cluster sets up the same way on every machine.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from broker.connection import KafkaConnection
from broker.errors import ActionError
from broker.localkafka import LocalCluster
from broker.policy.engine import PolicySet
from broker.provision import Consortium
from broker.settings import load_settings


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster | None:
    """The local cluster the session runs (None with ACTION_KAFKA_BOOTSTRAP)."""
    if os.environ.get("ACTION_KAFKA_BOOTSTRAP"):
        return None
    return LocalCluster(tmp_path_factory.mktemp("kafka"), load_settings())


@pytest.fixture(scope="session")
def kafka(local_kafka: LocalCluster | None) -> Iterator[KafkaConnection]:
    """The session's Kafka, reached as a super user."""
    if local_kafka is None:
        yield load_settings().connection_to(os.environ["ACTION_KAFKA_BOOTSTRAP"])
        return
    cluster = local_kafka
    try:
        state = cluster.up(nodes=1)
    except ActionError as exc:
        pytest.fail(
            "no Kafka broker for the integration tests: ACTION_KAFKA_BOOTSTRAP is unset, "
            f"no Docker daemon answers, and the local Kafka failed to start:\n{exc}",
            pytrace=False,
        )
    assert state.security_protocol == "SASL_PLAINTEXT", "the tests run against a secured Kafka"
    try:
        yield cluster.connection()
    finally:
        cluster.down()


@pytest.fixture
def new_topic(kafka: KafkaConnection) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test and delete them afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**kafka.client_config(), client_id="tests-admin")
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
def consortium(
    kafka: KafkaConnection, tmp_path_factory: pytest.TempPathFactory, policies: PolicySet
) -> Consortium:
    """The session's Kafka with the example consortium provisioned: topics, a SCRAM user
    per member and for the router, and the ACLs (checked idempotent: provisioning twice
    changes nothing the second time)."""
    from broker.provision import provision_access, provision_topics

    registry = policies.registry
    credentials = tmp_path_factory.mktemp("credentials")
    consortium = Consortium.provision(kafka, registry, credentials)
    again = provision_topics(kafka, registry, partitions=3, dry_run=False)
    assert {o.action for o in again} == {"exists"}, "provisioning topics is idempotent"
    access = provision_access(
        kafka,
        registry,
        router_principal="User:action-router",
        router_group="action-router",
        credentials_dir=credentials,
        dry_run=False,
    )
    assert {o.action for o in access} == {"exists"}, "provisioning access is idempotent"
    return consortium
