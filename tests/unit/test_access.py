"""The ACLs the registry implies (pure), and the connection that carries credentials."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.access import (
    PREFIXED,
    AclBinding,
    desired_acls,
    managed_principals,
)
from broker.connection import KafkaConnection
from broker.errors import ConfigError, PolicyError
from broker.match_tokens import MatchTokenKey, match_token
from broker.membership import Member, MemberRegistry
from broker.policy.loader import load_policies
from policies import POLICY_DIR


def is_allowed(  # the authorizer, as these tests model it
    acls: Iterable[AclBinding], principal: str, resource_type: str, name: str, operation: str
) -> bool:
    """What the authorizer answers under these ALLOW bindings (deny by default), with
    Kafka's implications: READ, WRITE, DELETE and ALTER each imply DESCRIBE."""
    implied = {operation}
    if operation == "DESCRIBE":
        implied |= {"READ", "WRITE", "DELETE", "ALTER"}
    return any(
        acl.principal == principal and acl.operation in implied and acl.matches(resource_type, name)
        for acl in acls
    )


REGISTRY = load_policies(POLICY_DIR).registry
ROUTER = "User:action-router"


def _acls(registry: MemberRegistry = REGISTRY) -> frozenset[AclBinding]:
    return desired_acls(registry, router_principal=ROUTER, router_group="action-router")


def _with(member_id: str) -> MemberRegistry:
    extra = Member(id=member_id, name=member_id, sector="platform", principal=f"User:{member_id}")
    return REGISTRY.model_copy(update={"members": (*REGISTRY.members, extra)})


def test_members_write_only_their_inbound_topic_and_read_only_their_feed() -> None:
    acls = _acls()
    for member in REGISTRY.members:
        me = member.principal
        for other in REGISTRY.members:
            mine = other.id == member.id
            assert is_allowed(acls, me, "TOPIC", f"action.in.{other.id}", "WRITE") == mine
            assert is_allowed(acls, me, "TOPIC", f"action.feed.{other.id}", "READ") == mine
            assert not is_allowed(acls, me, "TOPIC", f"action.in.{other.id}", "READ")
            assert not is_allowed(acls, me, "TOPIC", f"action.feed.{other.id}", "WRITE")
        assert not is_allowed(acls, me, "TRANSACTIONAL_ID", "action-router.0", "WRITE")
        assert not is_allowed(acls, me, "GROUP", "action-router", "READ")
        readers = is_allowed(acls, me, "TOPIC", "action.audit", "READ")
        assert readers == member.reads_audit


def test_nobody_but_the_admin_creates_deletes_or_alters() -> None:
    assert {acl.operation for acl in _acls()} <= {"READ", "WRITE", "DESCRIBE"}


def test_every_prefix_ends_with_a_delimiter_so_platform_a_gets_nothing_of_platform_ab() -> None:
    acls = _acls(_with("platform-ab"))
    assert all(acl.resource_name.endswith(".") for acl in acls if acl.pattern == PREFIXED)
    assert not is_allowed(acls, "User:platform-a", "GROUP", "platform-ab.feed", "READ")
    assert is_allowed(acls, "User:platform-a", "GROUP", "platform-a.feed", "READ")
    assert not is_allowed(acls, "User:platform-a", "TOPIC", "action.in.platform-ab", "WRITE")


def test_only_the_router_may_use_its_transactional_ids_and_group() -> None:
    acls = _acls()
    assert is_allowed(acls, ROUTER, "TRANSACTIONAL_ID", "action-router.3", "WRITE")
    assert not is_allowed(acls, ROUTER, "TRANSACTIONAL_ID", "action-routerX", "WRITE")
    holders = {a.principal for a in acls if a.resource_type in ("TRANSACTIONAL_ID",)}
    assert holders == {ROUTER}
    group_readers = {
        a.principal
        for a in acls
        if a.resource_type == "GROUP"
        and a.resource_name == "action-router"
        and a.operation == "READ"
    }
    assert group_readers == {ROUTER}


def test_a_removed_member_is_still_managed_so_its_rights_can_be_revoked() -> None:
    old = _acls(_with("gone-member"))
    managed = managed_principals(REGISTRY, ROUTER, old)
    assert "User:gone-member" in managed
    unrelated = AclBinding("User:other-app", "TOPIC", "billing.events", "LITERAL", "READ")
    assert "User:other-app" not in managed_principals(REGISTRY, ROUTER, {unrelated})
    monitoring = AclBinding("User:ops-monitor", "TOPIC", "action.dlq", "LITERAL", "READ")
    assert "User:ops-monitor" not in managed_principals(REGISTRY, ROUTER, {monitoring})


def test_the_router_cannot_share_a_principal_with_a_member() -> None:
    with pytest.raises(PolicyError, match="also a member's principal"):
        desired_acls(REGISTRY, router_principal="User:platform-a", router_group="action-router")


@given(st.sampled_from([m.id for m in REGISTRY.members]), st.text(min_size=1, max_size=12))
def test_no_member_reaches_a_resource_outside_its_own_names(member: str, suffix: str) -> None:
    principal = f"User:{member}"
    acls = _acls()
    for name in (f"action.in.{member}{suffix}", f"action.feed.{member}{suffix}"):
        for op in ("READ", "WRITE"):
            assert not is_allowed(acls, principal, "TOPIC", name, op)
    if not suffix.startswith("."):
        assert not is_allowed(acls, principal, "GROUP", f"{member}{suffix}", "READ")


def test_passwords_never_show_in_logs_or_reprs() -> None:
    kafka = KafkaConnection("h:9092", "SASL_PLAINTEXT", username="platform-a", password="s3cr3t")
    assert "s3cr3t" not in repr(kafka)
    assert "s3cr3t" not in str(kafka)
    assert kafka.client_config()["sasl_plain_password"] == "s3cr3t"
    assert kafka.principal == "User:platform-a"
    with pytest.raises(ConfigError, match="needs a SASL username and password"):
        KafkaConnection("h:9092", "SASL_SSL")
    with pytest.raises(ConfigError, match="unknown Kafka security protocol"):
        KafkaConnection("h:9092", "SASL_TLS")


def test_match_tokens_carry_the_key_version_and_change_with_a_rotation() -> None:
    old, new = MatchTokenKey(1, b"first secret"), MatchTokenKey(2, b"second secret")
    before = match_token(old, "email", "seller@shop.example")
    after = match_token(new, "email", "seller@shop.example")
    assert before.startswith("mt1.k1.")
    assert after.startswith("mt1.k2.")
    assert before.split(".")[2] != after.split(".")[2]
    assert "first secret" not in repr(old)
