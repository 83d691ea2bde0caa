"""Who may touch which Kafka resource: the ACLs the member registry implies.

Pure: computes the desired set of ALLOW bindings; :mod:`broker.provision` compares it
with the cluster and creates or deletes the difference. Everything else is denied by the
brokers' StandardAuthorizer (``allow.everyone.if.no.acl.found=false``).

The rules, and the pitfalls they avoid:

* A member writes only its own inbound topic and reads only its own feed. Topics are
  granted by LITERAL name, so ``platform-a`` gets nothing of ``platform-ab``.
* A member's consumer groups are the PREFIXED pattern ``<member>.``: the delimiter
  keeps ``platform-a.`` from matching ``platform-ab.feed``. READ on a group lets a
  principal join it and take its partitions, so nobody gets READ on anyone else's group,
  the router's included.
* Only the router's principal reads inbound topics and writes feeds, audit, dead-letter
  and ledger topics, and only it may use transactional ids ``<router group>.``: whoever
  may write a transactional id can fence the producer that holds it.
* Members with ``reads_audit`` (the IPR Center) also read the audit topic and describe
  the router's group, whose committed offsets carry the audit chain heads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.contract import (
    AUDIT_TOPIC,
    DLQ_TOPIC,
    EMBARGO_TOPIC,
    FEED_PREFIX,
    INBOUND_PREFIX,
    LEDGER_TOPIC,
    RECORD_IDS_TOPIC,
    feed_topic,
    inbound_topic,
)
from broker.errors import PolicyError
from broker.membership import MemberRegistry

TOPIC = "TOPIC"
GROUP = "GROUP"
TRANSACTIONAL_ID = "TRANSACTIONAL_ID"
LITERAL = "LITERAL"
PREFIXED = "PREFIXED"
#: A principal with any right on a member's inbound topic or feed is a member (or the
#: router) as far as provisioning is concerned, so one removed from the registry loses
#: all of its rights. Rights on the audit, DLQ or ledger topics alone (an operator's
#: monitoring user) do not make a principal managed.
MEMBER_TOPIC_PREFIXES = (INBOUND_PREFIX, FEED_PREFIX)


@dataclass(frozen=True, order=True, slots=True)
class AclBinding:
    """One ALLOW rule for any host: ``principal`` may ``operation`` on the resource."""

    principal: str
    resource_type: str
    resource_name: str
    pattern: str
    operation: str

    def to_row(self) -> dict[str, str]:
        return {
            "principal": self.principal,
            "resource": f"{self.resource_type}:{self.resource_name}"
            + ("*" if self.pattern == PREFIXED else ""),
            "operation": self.operation,
        }

    def matches(self, resource_type: str, name: str) -> bool:
        """Whether this binding covers the resource ``name`` (as Kafka's authorizer does)."""
        if resource_type != self.resource_type:
            return False
        if self.pattern == PREFIXED:
            return name.startswith(self.resource_name)
        return name == self.resource_name


def member_group_prefix(member: str) -> str:
    """The consumer-group id prefix a member owns; the trailing delimiter is the point."""
    return f"{member}."


def router_transactional_prefix(router_group: str) -> str:
    return f"{router_group}."


def _grants(
    principal: str, resource_type: str, name: str, pattern: str, operations: Iterable[str]
) -> list[AclBinding]:
    return [AclBinding(principal, resource_type, name, pattern, op) for op in operations]


def desired_acls(
    registry: MemberRegistry, *, router_principal: str, router_group: str
) -> frozenset[AclBinding]:
    """Every ALLOW binding the consortium needs, derived from the registry."""
    principals = [m.principal for m in registry.members]
    if router_principal in principals:
        raise PolicyError(
            f"the router's principal {router_principal} is also a member's principal",
            problems=[f"members.yaml: {router_principal} must belong to the router alone"],
        )
    if len(set(principals)) != len(principals):
        raise PolicyError(
            "two members share a Kafka principal",
            problems=[
                f"members.yaml: principal {p} appears twice"
                for p in sorted({p for p in principals if principals.count(p) > 1})
            ],
        )
    acls: list[AclBinding] = []
    router = router_principal
    for member in registry.members:
        inbound, feed = inbound_topic(member.id), feed_topic(member.id)
        acls += _grants(member.principal, TOPIC, inbound, LITERAL, ("WRITE", "DESCRIBE"))
        acls += _grants(member.principal, TOPIC, feed, LITERAL, ("READ", "DESCRIBE"))
        acls += _grants(
            member.principal, GROUP, member_group_prefix(member.id), PREFIXED, ("READ", "DESCRIBE")
        )
        if member.reads_audit:
            acls += _grants(member.principal, TOPIC, AUDIT_TOPIC, LITERAL, ("READ", "DESCRIBE"))
            acls += _grants(member.principal, GROUP, router_group, LITERAL, ("DESCRIBE",))
        acls += _grants(router, TOPIC, inbound, LITERAL, ("READ", "DESCRIBE"))
        acls += _grants(router, TOPIC, feed, LITERAL, ("WRITE", "DESCRIBE"))
    for topic in (AUDIT_TOPIC, DLQ_TOPIC):
        acls += _grants(router, TOPIC, topic, LITERAL, ("WRITE", "DESCRIBE"))
    for topic in (LEDGER_TOPIC, RECORD_IDS_TOPIC, EMBARGO_TOPIC):
        acls += _grants(router, TOPIC, topic, LITERAL, ("READ", "WRITE", "DESCRIBE"))
    acls += _grants(router, GROUP, router_group, LITERAL, ("READ", "DESCRIBE"))
    acls += _grants(
        router,
        TRANSACTIONAL_ID,
        router_transactional_prefix(router_group),
        PREFIXED,
        ("WRITE", "DESCRIBE"),
    )
    return frozenset(acls)


def managed_principals(
    registry: MemberRegistry, router_principal: str, existing: Iterable[AclBinding]
) -> frozenset[str]:
    """Principals whose ACLs provisioning owns: the registry's, the router's, and anyone
    holding a right on a member's inbound topic or feed (a member since removed from the
    registry). Everyone else's ACLs are left alone."""
    managed = {m.principal for m in registry.members} | {router_principal}
    managed |= {
        acl.principal
        for acl in existing
        if acl.resource_type == TOPIC and acl.resource_name.startswith(MEMBER_TOPIC_PREFIXES)
    }
    return frozenset(managed)
