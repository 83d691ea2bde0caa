"""Only members get in, each only where its MOU lets it: the ACL matrix on the real,
secured Kafka, with a prefix-collision member, a fencing attempt and revocation.

The expected rights are written out here from the issue's rules, independently of
``broker.access`` which derives the ACLs: the test would catch a wrong derivation.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import TopicPartition

from broker.connection import KafkaConnection
from broker.contract import AUDIT_TOPIC, DLQ_TOPIC, EMBARGO_TOPIC, LEDGER_TOPIC, RECORD_IDS_TOPIC
from broker.membership import Member, MemberRegistry
from broker.provision import Consortium, admin_client, current_acls
from broker.quotas import current_quotas
from tests.integration.routers import ACTION_BROKER

ROUTER = "action-router"
OPERATIONS = ("READ", "WRITE", "DESCRIBE", "CREATE", "DELETE", "ALTER")


def _with_collision(registry: MemberRegistry) -> MemberRegistry:
    """The example consortium plus ``platform-ab``, whose id starts with ``platform-a``."""
    collider = Member(
        id="platform-ab",
        name="Platform AB (prefix collision)",
        sector="platform",
        principal="User:platform-ab",
    )
    return registry.model_copy(update={"members": (*registry.members, collider)})


@pytest.fixture(scope="module")
def extended(consortium: Consortium, kafka: KafkaConnection) -> Iterator[Consortium]:
    yield Consortium.provision(
        kafka, _with_collision(consortium.registry), consortium.credentials_dir
    )
    # Back to the example consortium for the rest of the session (a no-op if the
    # revocation test already did it).
    Consortium.provision(kafka, consortium.registry, consortium.credentials_dir)


def _members(consortium: Consortium) -> list[str]:
    return [m.id for m in consortium.registry.members]


def _topics(consortium: Consortium) -> list[str]:
    members = _members(consortium)
    return (
        [f"action.in.{m}" for m in members]
        + [f"action.feed.{m}" for m in members]
        + [AUDIT_TOPIC, DLQ_TOPIC, LEDGER_TOPIC, RECORD_IDS_TOPIC, EMBARGO_TOPIC]
    )


def _groups(consortium: Consortium) -> list[str]:
    return [f"{m}.feed" for m in _members(consortium)] + [ROUTER]


def expected_topic_rights(who: str, topic: str) -> set[str]:
    """The rules of the issue, spelled out: members write their own inbound topic and read
    their own feed; the IPR Center also reads the audit topic; the router reads inbound
    topics and writes the rest. Nobody creates, deletes or alters anything."""
    if who == ROUTER:
        if topic.startswith("action.in."):
            return {"READ", "DESCRIBE"}
        if topic in (LEDGER_TOPIC, RECORD_IDS_TOPIC, EMBARGO_TOPIC):
            return {"READ", "WRITE", "DESCRIBE"}
        return {"WRITE", "DESCRIBE"}
    if topic == f"action.in.{who}":
        return {"WRITE", "DESCRIBE"}
    if topic == f"action.feed.{who}" or (topic == AUDIT_TOPIC and who == "ipr-center"):
        return {"READ", "DESCRIBE"}
    return set()


def expected_group_rights(who: str, group: str) -> set[str]:
    if who == ROUTER:
        return {"READ", "DESCRIBE"} if group == ROUTER else set()
    if group == f"{who}.feed":
        return {"READ", "DESCRIBE"}
    if group == ROUTER and who == "ipr-center":
        return {"DESCRIBE"}  # the audit chain heads are the router's committed metadata
    return set()


def _principals(consortium: Consortium) -> list[str]:
    return [*_members(consortium), ROUTER]


def _connection(consortium: Consortium, who: str) -> KafkaConnection:
    return consortium.router if who == ROUTER else consortium.member(who)


def test_provision_cli_dry_run_reports_nothing_to_change(consortium: Consortium) -> None:
    """First in this module, before the collision member exists: `action-broker provision
    --dry-run` on the provisioned consortium finds every topic, user and ACL in place."""
    env = {
        **os.environ,
        **consortium.admin.environment(),
        "ACTION_CREDENTIALS_DIR": str(consortium.credentials_dir),
    }
    run = subprocess.run(
        [ACTION_BROKER, "provision", "--dry-run", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert {r["kind"] for r in rows} == {"topic"}, "no user or ACL would change"
    assert {r["action"] for r in rows} == {"exists"}
    assert "acls exists" in run.stderr
    as_member = {**env, **consortium.member("platform-a").environment()}
    refused = subprocess.run(
        [ACTION_BROKER, "provision"],
        env=as_member,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "error: User:platform-a may not create topics" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_authorizer_grants_exactly_the_expected_rights(extended: Consortium) -> None:
    """For every principal x topic x operation, the brokers' own answer (the authorized
    operations Kafka reports for the principal) equals the rule; for every principal x
    consumer group, real describe, delete and join attempts succeed exactly as the rule
    says (groups have no write, create or alter operations in Kafka)."""
    wrong: list[str] = []
    checked = 0
    for who in _principals(extended):
        kafka = _connection(extended, who)
        with admin_client(kafka, f"matrix-{who}") as admin:
            for topic in admin.describe_topics(_topics(extended)):
                granted = set(topic.get("authorized_operations") or ())
                expected = expected_topic_rights(who, topic["name"])
                for op in OPERATIONS:
                    checked += 1
                    if (op in granted) != (op in expected):
                        wrong.append(f"{who} {op} topic {topic['name']}: granted={op in granted}")
            for group in _groups(extended):
                expected = expected_group_rights(who, group)
                readable = _any_readable_topic(extended, who)
                tried = {
                    "DESCRIBE": _can_describe_group(admin, group),
                    "DELETE": _can_delete_group(admin, group),
                    "READ": _can_join(kafka, group, readable),
                }
                for op, allowed in tried.items():
                    checked += 1
                    if allowed != (op in expected):
                        wrong.append(f"{who} {op} group {group}: allowed={allowed}")
    per_principal = len(_topics(extended)) * len(OPERATIONS) + len(_groups(extended)) * 3
    assert checked == len(_principals(extended)) * per_principal
    assert not wrong, "\n".join(wrong)


def _any_readable_topic(consortium: Consortium, who: str) -> str:
    return next(t for t in _topics(consortium) if "READ" in expected_topic_rights(who, t))


def _retrying_coordinator(call: Any) -> Any:
    for _ in range(30):  # the first lookup on a fresh cluster creates __consumer_offsets
        try:
            return call()
        except kafka_errors.CoordinatorNotAvailableError:
            time.sleep(1)
    raise AssertionError("no group coordinator after 30 s")


def _can_describe_group(admin: Any, group: str) -> bool:
    try:
        described = _retrying_coordinator(lambda: admin.describe_groups([group]))
    except kafka_errors.GroupAuthorizationFailedError:
        return False
    return "Authorization" not in str(described[group].get("error"))


def _can_delete_group(admin: Any, group: str) -> bool:
    """Deleting an empty or absent group: refused, or allowed (GroupIdNotFound counts as
    allowed: the authorizer let the request through)."""
    try:
        outcome = _retrying_coordinator(lambda: admin.delete_groups([group]))[group]
    except kafka_errors.GroupAuthorizationFailedError:
        return False
    return bool(outcome != "GroupAuthorizationFailedError")


def test_no_member_writes_or_reads_beyond_its_own_topics(extended: Consortium) -> None:
    """Real produce and fetch attempts by every member on every consortium topic: the only
    successes are its own inbound topic (write) and its own feed (read), plus the audit
    topic for the IPR Center. Zero unauthorized successes."""
    unauthorized: list[str] = []
    topics = _topics(extended)
    for who in _members(extended):
        kafka = extended.member(who)
        written, read = _writable(kafka, topics), _readable(kafka, topics)
        for topic in topics:
            rights = expected_topic_rights(who, topic)
            if (topic in written) != ("WRITE" in rights):
                unauthorized.append(f"{who} write {topic}: {topic in written}")
            if (topic in read) != ("READ" in rights):
                unauthorized.append(f"{who} read {topic}: {topic in read}")
    assert not unauthorized, "\n".join(unauthorized)


def _writable(kafka: KafkaConnection, topics: list[str]) -> set[str]:
    """The topics a produce request (acks=all) succeeded on."""
    producer = KafkaProducer(**kafka.client_config(), acks="all", max_block_ms=10_000, retries=0)
    futures = {}
    for topic in topics:
        try:
            futures[topic] = producer.send(topic, key=b"acl-probe", value=b"not an event")
        except (kafka_errors.TopicAuthorizationFailedError, kafka_errors.KafkaTimeoutError):
            continue
    written = set()
    for topic, future in futures.items():
        try:
            future.get(timeout=15)
            written.add(topic)
        except (kafka_errors.TopicAuthorizationFailedError, kafka_errors.KafkaTimeoutError):
            pass
    producer.close(timeout=5)
    return written


def _readable(kafka: KafkaConnection, topics: list[str], rounds: int = 8) -> set[str]:
    """The topics a fetch succeeded on: the consumer learns a partition's high watermark
    only from a fetch response, so a known one proves the broker served the fetch."""
    consumer = KafkaConsumer(
        **kafka.client_config(), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    partitions = [TopicPartition(topic, 0) for topic in topics]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    refused: set[str] = set()
    for _ in range(rounds):
        try:
            consumer.poll(timeout_ms=500)
        except kafka_errors.TopicAuthorizationFailedError as exc:
            refused |= set(exc.args[0]) if exc.args and isinstance(exc.args[0], set) else set()
    read = {tp.topic for tp in partitions if consumer.highwater(tp) is not None} - refused
    consumer.close()
    return read


def test_prefix_collision_gives_platform_a_nothing_of_platform_ab(extended: Consortium) -> None:
    """``platform-a`` and ``platform-ab``: neither reaches the other's topics or groups,
    because topics are granted by literal name and group prefixes end with a delimiter."""
    a, ab = extended.member("platform-a"), extended.member("platform-ab")
    pair_in, pair_feed = (
        ["action.in.platform-a", "action.in.platform-ab"],
        ["action.feed.platform-a", "action.feed.platform-ab"],
    )
    assert _writable(a, pair_in) == {"action.in.platform-a"}
    assert _readable(a, pair_feed) == {"action.feed.platform-a"}
    assert _writable(ab, pair_in) == {"action.in.platform-ab"}
    assert _readable(ab, pair_feed) == {"action.feed.platform-ab"}
    assert not _can_join(a, "platform-ab.feed", "action.feed.platform-a")
    assert not _can_join(ab, "platform-a.feed", "action.feed.platform-ab")
    assert _can_join(a, "platform-a.analysts", "action.feed.platform-a"), "its own prefix"


def _can_join(kafka: KafkaConnection, group: str, topic: str) -> bool:
    """Join ``group`` subscribed to ``topic`` (one the principal may read)."""
    consumer = KafkaConsumer(
        topic,
        **kafka.client_config(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        for _ in range(20):
            consumer.poll(timeout_ms=1_000)
            if consumer.assignment():
                return True
        return False
    except kafka_errors.GroupAuthorizationFailedError:
        return False
    finally:
        consumer.close()


def test_no_member_can_fence_the_router_or_join_its_group(extended: Consortium) -> None:
    """WRITE on the router's transactional id would let a member fence it; READ on its
    group would let a member take its partitions. Every member is refused both, and may
    not even describe the router's transactions."""
    for who in _members(extended):
        kafka = extended.member(who)
        producer = KafkaProducer(
            **kafka.client_config(), transactional_id=f"{ROUTER}.0", max_block_ms=15_000
        )
        with pytest.raises(kafka_errors.TransactionalIdAuthorizationFailedError):
            producer.init_transactions()
        with contextlib.suppress(kafka_errors.KafkaError):
            producer.close(timeout=5)
        with (
            admin_client(kafka, f"txn-probe-{who}") as admin,
            pytest.raises(kafka_errors.TransactionalIdAuthorizationFailedError),
        ):
            admin.describe_transactions([f"{ROUTER}.0"])
        assert not _can_join(kafka, ROUTER, f"action.feed.{who}"), who
    # The router itself may describe its transactional ids: not found, or no coordinator
    # yet on a fresh cluster, but never refused.
    with (
        admin_client(extended.router, "txn-probe-router") as admin,
        contextlib.suppress(
            kafka_errors.TransactionalIdNotFoundError, kafka_errors.CoordinatorNotAvailableError
        ),
    ):
        admin.describe_transactions([f"{ROUTER}.0"])


def test_members_cannot_create_delete_or_reconfigure_topics(extended: Consortium) -> None:
    kafka = extended.member("platform-a")
    with admin_client(kafka, "acl-admin-probe") as admin:
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            admin.create_topics([NewTopic("action.in.platform-a2", 1, 1)], timeout_ms=10_000)
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            admin.delete_topics(["action.in.platform-a"], timeout_ms=10_000)
        resource = ConfigResource(
            ConfigResourceType.TOPIC, "action.in.platform-a", configs={"retention.ms": "1"}
        )
        answer = admin.alter_configs([resource], raise_on_unknown=False, incremental=True)
        assert "TopicAuthorizationFailed" in answer["topic"]["action.in.platform-a"]
    with admin_client(extended.admin, "acl-admin-check") as admin:
        names = {
            t["name"]
            for t in admin.describe_topics(["action.in.platform-a"])
            if t["error_code"] == 0
        }
    assert names == {"action.in.platform-a"}, "the topic is still there"


def test_wrong_password_and_unknown_users_are_refused(extended: Consortium) -> None:
    from broker.localkafka.cluster import live_broker_ids

    real = extended.member("platform-a")
    assert live_broker_ids(real) != set()
    assert live_broker_ids(real.as_user("platform-a", "guessed"), timeout_s=3) == set()
    assert live_broker_ids(real.as_user("nobody", "x"), timeout_s=3) == set()


def test_removing_a_member_revokes_all_of_its_rights(
    extended: Consortium, kafka: KafkaConnection
) -> None:
    """Last in this module: provisioning the registry without ``platform-ab`` deletes its
    ACLs and its SCRAM user, and leaves everyone else's rights as they were."""
    from broker.localkafka.cluster import live_broker_ids

    collider = extended.member("platform-ab")
    with admin_client(kafka, "acl-revoke") as admin:
        before = current_acls(admin)
        quotas_before = current_quotas(admin)
    assert any(acl.principal == "User:platform-ab" for acl in before)
    assert "platform-ab" in quotas_before, "a member's principal gets quotas"
    original = [m for m in extended.registry.members if m.id != "platform-ab"]
    Consortium.provision(
        kafka,
        extended.registry.model_copy(update={"members": tuple(original)}),
        extended.credentials_dir,
    )
    with admin_client(kafka, "acl-revoke") as admin:
        after = current_acls(admin)
        quotas_after = current_quotas(admin)
    assert not any(acl.principal == "User:platform-ab" for acl in after)
    assert quotas_after == {u: q for u, q in quotas_before.items() if u != "platform-ab"}
    # Gone too: the router's rights on the removed member's topics.
    assert after == {
        acl
        for acl in before
        if acl.principal != "User:platform-ab" and not acl.resource_name.endswith(".platform-ab")
    }
    assert live_broker_ids(collider, timeout_s=3) == set(), "its credentials no longer work"
    assert not (extended.credentials_dir / "platform-ab.password").exists()
