"""``action-broker provision``: the consortium's topics, SCRAM users, ACLs and client
quotas, idempotently.

Run as a super user. Each step compares what the registry asks for with what the cluster
has and changes only the difference, so running it twice changes nothing the second time,
and removing a member from ``members.yaml`` revokes its ACLs and credentials.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.access import AclBinding, desired_acls, managed_principals
from broker.connection import KafkaConnection
from broker.errors import ActionError, RouterError
from broker.membership import MemberRegistry
from broker.quotas import desired_quotas, provision_quotas
from broker.settings import Settings
from broker.topics import TopicSpec, consortium_topics

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

_DEFAULTS = Settings.model_fields
DEFAULT_PRODUCE_BYTE_RATE: int = _DEFAULTS["member_produce_byte_rate"].default
DEFAULT_REQUEST_PERCENTAGE: float = _DEFAULTS["member_request_percentage"].default


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    topic: str
    action: str  # created | exists | would-create | too-few-partitions
    partitions: int
    replication: int

    kind = "topic"

    def to_row(self) -> dict[str, object]:
        detail = f"{self.partitions} partitions, replication {self.replication}"
        return {"kind": "topic", "name": self.topic, "detail": detail, "action": self.action}


@dataclass(frozen=True, slots=True)
class AccessOutcome:
    """One change (or non-change) to a SCRAM user or an ACL."""

    kind: str  # user | acl
    principal: str
    what: str
    action: str  # created | exists | deleted | rotated | would-*

    def to_row(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.principal,
            "detail": self.what,
            "action": self.action,
        }


@contextlib.contextmanager
def admin_client(kafka: KafkaConnection, client_id: str) -> Iterator[KafkaAdminClient]:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            **kafka.client_config(), client_id=client_id, bootstrap_timeout_ms=15_000
        )
    except KafkaError as exc:
        raise RouterError(f"cannot reach Kafka at {kafka}: {exc}") from exc
    try:
        yield admin
    finally:
        admin.close()


def provision_topics(
    kafka: KafkaConnection, registry: MemberRegistry, *, partitions: int, dry_run: bool
) -> list[TopicOutcome]:
    """Create every missing topic; existing ones are left as they are and reported."""
    from kafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError

    with admin_client(kafka, "action-provision") as admin:
        brokers = len(admin.describe_cluster()["brokers"])
        specs = consortium_topics(registry, brokers=brokers, partitions=partitions)
        existing = {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics()
            if t.get("error_code", 0) == 0
        }
        outcomes: list[TopicOutcome] = []
        missing: list[TopicSpec] = []
        for spec in specs:
            if spec.name in existing:
                have = existing[spec.name]
                action = "exists" if have >= spec.partitions else "too-few-partitions"
                outcomes.append(TopicOutcome(spec.name, action, have, spec.replication))
            else:
                missing.append(spec)
        if missing and not dry_run:
            request = {
                s.name: {
                    "num_partitions": s.partitions,
                    "replication_factor": s.replication,
                    "configs": s.configs,
                }
                for s in missing
            }
            # Another provisioner may win the race: the topics are there either way.
            try:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(request, timeout_ms=30_000, wait_for_metadata=True)
            except TopicAuthorizationFailedError as exc:
                raise ActionError(
                    f"{kafka.principal} may not create topics at {kafka.bootstrap}",
                    hint="run provisioning as a super user (ACTION_KAFKA_SASL_USERNAME)",
                ) from exc
        action = "would-create" if dry_run else "created"
        outcomes += [TopicOutcome(s.name, action, s.partitions, s.replication) for s in missing]
        return sorted(outcomes, key=lambda o: o.topic)


# --- SCRAM users -------------------------------------------------------------------------


def _user(principal: str) -> str:
    return principal.removeprefix("User:")


def password_file(credentials_dir: Path, user: str) -> Path:
    return credentials_dir / f"{user}.password"


def read_password(credentials_dir: Path, user: str) -> str:
    """A user's SCRAM password as provisioning wrote it (for the demo and tests)."""
    path = password_file(credentials_dir, user)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ActionError(
            f"no password for {user} in {credentials_dir}: {exc.strerror}",
            hint="run `action-broker provision` first",
        ) from exc


def _write_password(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(password + "\n", encoding="utf-8")


def provision_users(
    admin: KafkaAdminClient,
    principals: list[str],
    removed: list[str],
    credentials_dir: Path,
    *,
    rotate: bool,
    dry_run: bool,
) -> list[AccessOutcome]:
    """A SCRAM-SHA-512 user per principal, with its password in ``credentials_dir`` (0600):
    created when missing, kept when present, replaced with ``rotate``; the users of
    ``removed`` principals are deleted."""
    from kafka.admin import UserScramCredentialDeletion, UserScramCredentialUpsertion

    users = [_user(p) for p in principals]
    on_cluster = _scram_users(admin)
    outcomes: list[AccessOutcome] = []
    changes: list[Any] = []
    for user in users:
        path = password_file(credentials_dir, user)
        if user in on_cluster and path.is_file() and not rotate:
            outcomes.append(AccessOutcome("user", f"User:{user}", "SCRAM-SHA-512", "exists"))
            continue
        action = "rotate" if user in on_cluster else "create"
        outcomes.append(
            AccessOutcome(
                "user",
                f"User:{user}",
                "SCRAM-SHA-512",
                f"would-{action}" if dry_run else f"{action}d",
            )
        )
        if dry_run:
            continue
        if rotate or not path.is_file():
            _write_password(path, secrets.token_urlsafe(24))
        password = read_password(credentials_dir, user)
        changes.append(UserScramCredentialUpsertion(user, "SCRAM-SHA-512", password))
    for user in (_user(p) for p in removed):
        if user not in on_cluster:
            continue
        outcomes.append(
            AccessOutcome(
                "user", f"User:{user}", "SCRAM-SHA-512", "would-delete" if dry_run else "deleted"
            )
        )
        if not dry_run:
            changes.append(UserScramCredentialDeletion(user, "SCRAM-SHA-512"))
            password_file(credentials_dir, user).unlink(missing_ok=True)
    if changes:
        failed = {u: e for u, e in admin.alter_user_scram_credentials(changes).items() if e}
        if failed:
            raise ActionError(f"Kafka refused SCRAM changes: {failed}")
        gone = {_user(p) for p in removed}
        _await(
            lambda: (now := _scram_users(admin)) >= set(users) and not now & gone,
            "the SCRAM user changes",
        )
    return outcomes


def _scram_users(admin: KafkaAdminClient) -> set[str]:
    described = admin.describe_user_scram_credentials(None)
    return {
        name for name, info in described.items() if not info["error"] and info["credential_infos"]
    }


# --- ACLs --------------------------------------------------------------------------------


def _to_kafka(acl: AclBinding) -> Any:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return ACL(
        acl.principal,
        "*",
        ACLOperation[acl.operation],
        ACLPermissionType.ALLOW,
        ResourcePattern(
            ResourceType[acl.resource_type], acl.resource_name, ACLResourcePatternType[acl.pattern]
        ),
    )


def current_acls(admin: KafkaAdminClient) -> set[AclBinding]:
    """Every ALLOW binding for any host on the cluster; DENY and host-specific rules are
    never provisioning's and are left alone."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    everything = ACLFilter(
        None,
        None,
        ACLOperation.ANY,
        ACLPermissionType.ANY,
        ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    found, _ = admin.describe_acls(everything)
    return {
        AclBinding(
            acl.principal,
            acl.resource_pattern.resource_type.name,
            acl.resource_pattern.resource_name,
            acl.resource_pattern.pattern_type.name,
            acl.operation.name,
        )
        for acl in found
        if acl.permission_type == ACLPermissionType.ALLOW and acl.host == "*"
    }


def provision_acls(
    admin: KafkaAdminClient,
    wanted: frozenset[AclBinding],
    have: set[AclBinding],
    managed: frozenset[str],
    *,
    dry_run: bool,
) -> list[AccessOutcome]:
    """Create the missing bindings; delete the managed principals' bindings not wanted.
    ``have`` is what :func:`current_acls` found on the cluster."""
    from kafka.admin import ACLFilter

    missing = sorted(wanted - have)
    stale = sorted(acl for acl in have - wanted if acl.principal in managed)
    created, deleted = ("would-create", "would-delete") if dry_run else ("created", "deleted")
    kept = sorted(wanted & have)
    outcomes = [AccessOutcome("acl", a.principal, _what(a), "exists") for a in kept]
    outcomes += [AccessOutcome("acl", a.principal, _what(a), created) for a in missing]
    outcomes += [AccessOutcome("acl", a.principal, _what(a), deleted) for a in stale]
    if dry_run:
        return outcomes
    if missing:
        result = admin.create_acls([_to_kafka(a) for a in missing])
        if result["failed"]:
            raise ActionError(f"Kafka refused {len(result['failed'])} ACL(s): {result['failed']}")
    if stale:
        exact = [
            ACLFilter(k.principal, k.host, k.operation, k.permission_type, k.resource_pattern)
            for k in map(_to_kafka, stale)
        ]
        for _, _, error in admin.delete_acls(exact):
            if error.errno:
                raise ActionError(f"Kafka refused to delete an ACL: {error.__name__}")
    _await(
        lambda: (now := current_acls(admin)) >= wanted and not now & set(stale), "the ACL changes"
    )
    return outcomes


def _await(done: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """ACLs and SCRAM users reach the brokers through the metadata log a moment after the
    controller accepts them; wait until they are in force, so provisioning returns only
    once clients can rely on them (and a second run finds them)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise ActionError(f"{what} were accepted but not in force after {timeout_s:.0f}s")
        time.sleep(0.2)


def _what(acl: AclBinding) -> str:
    row = acl.to_row()
    return f"{row['operation']} {row['resource']}"


def provision_access(
    kafka: KafkaConnection,
    registry: MemberRegistry,
    *,
    router_principal: str,
    router_group: str,
    credentials_dir: Path,
    rotate: bool = False,
    dry_run: bool,
    produce_byte_rate: int = DEFAULT_PRODUCE_BYTE_RATE,
    request_percentage: float = DEFAULT_REQUEST_PERCENTAGE,
) -> list[AccessOutcome]:
    """SCRAM users for every member and the router, the ACLs the registry implies, and
    each member's client quotas (the defaults given, or its own in members.yaml)."""
    from kafka.errors import ClusterAuthorizationFailedError, SecurityDisabledError

    wanted = desired_acls(registry, router_principal=router_principal, router_group=router_group)
    with admin_client(kafka, "action-provision") as admin:
        try:
            existing = current_acls(admin)
        except SecurityDisabledError as exc:
            raise ActionError(
                f"Kafka at {kafka.bootstrap} has no authorizer: ACLs cannot be applied",
                hint="configure the StandardAuthorizer, pass --topics-only, or recreate a "
                "local cluster with `action-broker kafka up --fresh` (secured)",
            ) from exc
        except ClusterAuthorizationFailedError as exc:
            raise ActionError(
                f"{kafka.principal} may not manage ACLs at {kafka.bootstrap}",
                hint="run provisioning as a super user (ACTION_KAFKA_SASL_USERNAME)",
            ) from exc
        managed = managed_principals(registry, router_principal, existing)
        present = [m.principal for m in registry.members] + [router_principal]
        removed = sorted(managed - set(present))
        outcomes = provision_users(
            admin, present, removed, credentials_dir, rotate=rotate, dry_run=dry_run
        )
        outcomes += provision_acls(admin, wanted, existing, managed, dry_run=dry_run)
        quotas = desired_quotas(
            registry, produce_byte_rate=produce_byte_rate, request_percentage=request_percentage
        )
        outcomes += provision_quotas(admin, quotas, [_user(p) for p in removed], dry_run=dry_run)
    return outcomes


@dataclass(frozen=True)
class Consortium:
    """A provisioned consortium: how its members and its router reach Kafka, each with
    its own SCRAM user. Used by the demo, the tests and the benchmarks."""

    admin: KafkaConnection
    registry: MemberRegistry
    credentials_dir: Path
    router_user: str = "action-router"
    router_group: str = "action-router"

    @classmethod
    def provision(
        cls,
        admin: KafkaConnection,
        registry: MemberRegistry,
        credentials_dir: Path,
        *,
        partitions: int = 3,
        router_user: str = "action-router",
        router_group: str = "action-router",
    ) -> Consortium:
        """Topics, users and ACLs for ``registry``, created as ``admin``."""
        provision_topics(admin, registry, partitions=partitions, dry_run=False)
        if admin.uses_sasl:
            provision_access(
                admin,
                registry,
                router_principal=f"User:{router_user}",
                router_group=router_group,
                credentials_dir=credentials_dir,
                dry_run=False,
            )
        return cls(admin, registry, credentials_dir, router_user, router_group)

    def user(self, name: str) -> KafkaConnection:
        """The cluster as SCRAM user ``name`` (the admin's connection on an open cluster)."""
        if not self.admin.uses_sasl:
            return self.admin
        return self.admin.as_user(name, read_password(self.credentials_dir, name))

    def member(self, member_id: str) -> KafkaConnection:
        """The cluster as the member's own principal from the registry."""
        for member in self.registry.members:
            if member.id == member_id:
                return self.user(_user(member.principal))
        raise ActionError(f"{member_id!r} is not a member of this consortium")

    @property
    def router(self) -> KafkaConnection:
        return self.user(self.router_user)
