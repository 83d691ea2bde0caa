"""The member registry (``members.yaml``): who is in the consortium, their Kafka
principals and public keys, and the router's.

What every side needs: the router routes by it, provisioning grants by it, and a
member's SDK reads its public keys as a trust store to verify what it receives, without
ever reading another member's MOU. The MOUs themselves are :mod:`broker.policy.model`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from broker.errors import ConfigError, PolicyError
from broker.events import MEMBER_ID_PATTERN
from broker.typed_yaml import StrictModel, read_model_file

MemberId = Annotated[str, Field(pattern=MEMBER_ID_PATTERN)]
KeyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,80}$")]
PublicKey = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{43}=?$", description="raw 32-byte key, base64url")
]
#: What a recipient sees instead of an anonymous source's id; no member may be named so.
ANONYMOUS_PREFIX = "anonymous-"
#: The registry's file in a policy folder.
REGISTRY_FILE = "members.yaml"


class Sector(StrEnum):
    PLATFORM = "platform"
    PAYMENT = "payment"
    INTERMEDIARY = "intermediary"
    RIGHTS_HOLDER = "rights_holder"
    GOVERNMENT = "government"


class MemberKey(StrictModel):
    kid: KeyId
    public_key: PublicKey


class MemberQuotas(StrictModel):
    """Kafka client quotas of one member's principal, over the consortium's defaults
    (settings ``member_produce_byte_rate``, ``member_request_percentage``): one member's
    flood must not slow routing for the others."""

    produce_byte_rate: int | None = Field(
        default=None, ge=1024, description="bytes per second this member may produce"
    )
    request_percentage: float | None = Field(
        default=None, gt=0, le=1000, description="share of one broker I/O thread, in percent"
    )


class Member(StrictModel):
    id: MemberId
    name: str = Field(min_length=1, max_length=200)
    sector: Sector
    principal: str = Field(pattern=r"^User:[A-Za-z0-9._-]+$", description="Kafka principal")
    signing_keys: tuple[MemberKey, ...] = Field(default=(), description="Ed25519, newest last")
    encryption_keys: tuple[MemberKey, ...] = Field(default=(), description="X25519, newest last")
    reads_audit: bool = Field(
        default=False,
        description="may read the audit topic and the router's committed chain heads (the "
        "IPR Center's analysts, who oversee the consortium)",
    )
    quotas: MemberQuotas = Field(
        default_factory=MemberQuotas,
        description="Kafka client quotas for this member, where the defaults do not fit",
    )

    @model_validator(mode="after")
    def _not_an_anonymous_label(self) -> Member:
        if self.id.startswith(ANONYMOUS_PREFIX):
            raise ValueError(
                f"member id {self.id!r} looks like an anonymous label ({ANONYMOUS_PREFIX}"
                "<sector>, what recipients see for an anonymous source): choose another id"
            )
        return self


class MemberRegistry(StrictModel):
    """``policies/members.yaml``: who is in the consortium."""

    members: tuple[Member, ...] = Field(min_length=1)
    router_keys: tuple[MemberKey, ...] = Field(
        default=(),
        description="Ed25519 keys the consortium's router signs feed records with, newest last",
    )

    @model_validator(mode="after")
    def _unique(self) -> MemberRegistry:
        seen: set[str] = set()
        for member in self.members:
            if member.id in seen:
                raise ValueError(f"member id {member.id!r} appears twice")
            seen.add(member.id)
        return self

    def member(self, member_id: str) -> Member:
        for member in self.members:
            if member.id == member_id:
                return member
        raise ConfigError(f"{member_id!r} is not a member of the consortium ({REGISTRY_FILE})")

    def newest_signing_kid(self, member_id: str) -> str:
        """The key id a member signs with unless told otherwise: its newest."""
        keys = self.member(member_id).signing_keys
        if not keys:
            raise ConfigError(f"{member_id} has no signing key in {REGISTRY_FILE}")
        return keys[-1].kid


def load_trust_store(path: Path) -> MemberRegistry:
    """The member registry alone (members' and the router's public keys): what a member's
    SDK needs to verify what it reads. ``path`` is the file or the policy folder holding it."""
    file = path / REGISTRY_FILE if path.is_dir() else path
    problems: list[str] = []
    registry = read_model_file(MemberRegistry, file, problems)
    if registry is None:
        raise PolicyError(f"{file}: not a valid trust store", problems=problems)
    return registry
