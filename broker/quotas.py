"""Kafka client quotas per member principal: one member flooding its inbound topic is
throttled by the brokers, and the router keeps reading every other member's records.

What the registry and settings ask for (:func:`desired_quotas`) is pure; applying it
(:func:`provision_quotas`) compares with what the cluster has, like the ACLs: missing or
different quotas are set, and those of principals provisioning no longer manages (a
member removed from the registry) are removed. kafka-python speaks the protocol
(AlterClientQuotas, DescribeClientQuotas, KIP-546) but its admin client has no method
for it, so the requests are sent through the client's connection manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from broker.errors import ActionError
from broker.membership import MemberRegistry

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

    from broker.provision import AccessOutcome

PRODUCE_BYTE_RATE = "producer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
_USER = "user"

Quotas = Mapping[str, float]


def desired_quotas(
    registry: MemberRegistry, *, produce_byte_rate: int, request_percentage: float
) -> dict[str, dict[str, float]]:
    """Kafka user name -> its quotas: the defaults, or the member's own from members.yaml."""
    wanted: dict[str, dict[str, float]] = {}
    for member in registry.members:
        own = member.quotas
        user = member.principal.removeprefix("User:")
        wanted[user] = {
            PRODUCE_BYTE_RATE: float(own.produce_byte_rate or produce_byte_rate),
            REQUEST_PERCENTAGE: float(own.request_percentage or request_percentage),
        }
    return wanted


def current_quotas(admin: KafkaAdminClient) -> dict[str, dict[str, float]]:
    """Every user's quotas on the cluster (users with none are absent)."""
    from kafka.protocol.admin import DescribeClientQuotasRequest

    request = DescribeClientQuotasRequest(
        # match_type 2: every user that has quotas (0 would be one name, 1 the default).
        components=[
            DescribeClientQuotasRequest.ComponentData(entity_type=_USER, match_type=2, match=None)
        ],
        strict=False,
    )
    response = _send(admin, request)
    _raise_for(response.error_code, response.error_message, "describing client quotas")
    found: dict[str, dict[str, float]] = {}
    for entry in response.entries or ():
        users = [e.entity_name for e in entry.entity if e.entity_type == _USER]
        if len(entry.entity) != 1 or not users or users[0] is None:
            continue  # a user+client-id or default entity: not provisioning's
        found[users[0]] = {value.key: float(value.value) for value in entry.values}
    return found


def provision_quotas(
    admin: KafkaAdminClient,
    wanted: Mapping[str, Quotas],
    removed_users: Iterable[str],
    *,
    dry_run: bool,
) -> list[AccessOutcome]:
    """Set the quotas that differ from ``wanted`` and remove those of ``removed_users``."""
    from broker.provision import AccessOutcome

    existing = current_quotas(admin)
    outcomes: list[AccessOutcome] = []
    changes: list[tuple[str, dict[str, float | None]]] = []
    for user, quotas in sorted(wanted.items()):
        what = ", ".join(f"{k}={v:g}" for k, v in sorted(quotas.items()))
        have = existing.get(user, {})
        if all(have.get(k) == v for k, v in quotas.items()):
            outcomes.append(AccessOutcome("quota", f"User:{user}", what, "exists"))
            continue
        action = "update" if have else "create"
        outcomes.append(
            AccessOutcome(
                "quota", f"User:{user}", what, f"would-{action}" if dry_run else f"{action}d"
            )
        )
        changes.append((user, dict(quotas)))
    for user in sorted(set(removed_users) & set(existing)):
        keys = sorted(existing[user])
        outcomes.append(
            AccessOutcome(
                "quota", f"User:{user}", ", ".join(keys), "would-delete" if dry_run else "deleted"
            )
        )
        changes.append((user, dict.fromkeys(keys)))
    if changes and not dry_run:
        _alter(admin, changes)
    return outcomes


def _alter(admin: KafkaAdminClient, changes: list[tuple[str, dict[str, float | None]]]) -> None:
    from kafka.protocol.admin import AlterClientQuotasRequest as Request

    entries = [
        Request.EntryData(
            entity=[Request.EntryData.EntityData(entity_type=_USER, entity_name=user)],
            ops=[
                Request.EntryData.OpData(key=key, value=value or 0.0, remove=value is None)
                for key, value in sorted(quotas.items())
            ],
        )
        for user, quotas in changes
    ]
    response = _send(admin, Request(entries=entries, validate_only=False))
    for entry in response.entries:
        names = ",".join(str(e.entity_name) for e in entry.entity)
        _raise_for(entry.error_code, entry.error_message, f"setting the quotas of {names}")


def _send(admin: KafkaAdminClient, request: Any) -> Any:
    manager = admin._manager  # the admin client's own connections (see the module docstring)

    async def send() -> Any:
        return await manager.send(request)

    return manager.run(send)


def _raise_for(code: int, message: str | None, doing: str) -> None:
    if code:
        from kafka.errors import for_code

        error = for_code(code)
        raise ActionError(
            f"Kafka refused {doing}: {error.__name__} {message or ''}".strip(),
            hint="run provisioning as a super user",
        )
