"""The policy files as typed models: the member registry and one MOU per member.

These models are the single source of the policy files' JSON Schema
(``policies/schema/*.schema.json``, written by ``action-policy schema``), so editors
validate MOUs as they are typed. Semantics (what a rule means, how two MOUs combine) are
in :mod:`broker.policy.engine` and docs/policy.md.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.events import MEMBER_ID_PATTERN, ProductCategory, SharingPurpose, Tlp

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,79}$")]
MemberId = Annotated[str, Field(pattern=MEMBER_ID_PATTERN)]
KeyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,80}$")]
PublicKey = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{43}=?$", description="raw 32-byte key, base64url")
]

#: TLP 2.0 levels in order of restriction.
TLP_ORDER: dict[Tlp, int] = {
    Tlp.CLEAR: 0,
    Tlp.GREEN: 1,
    Tlp.AMBER: 2,
    Tlp.AMBER_STRICT: 3,
    Tlp.RED: 4,
}


class Sector(StrEnum):
    PLATFORM = "platform"
    PAYMENT = "payment"
    INTERMEDIARY = "intermediary"
    RIGHTS_HOLDER = "rights_holder"
    GOVERNMENT = "government"


class Treatment(StrEnum):
    """How a field reaches a recipient; members of the ladder below, least to most restrictive."""

    KEEP = "keep"
    ENCRYPT = "encrypt"
    GENERALIZE = "generalize"
    MASK = "mask"
    HASH = "hash"
    DROP = "drop"


class _Restriction(IntEnum):
    # keep < encrypt (only the recipient reads it) < generalize (coarse value) < mask
    # (a few characters) < hash (equality only) < drop (nothing). When two MOUs speak to
    # one field, the higher rung wins.
    KEEP = 0
    ENCRYPT = 1
    GENERALIZE = 2
    MASK = 3
    HASH = 4
    DROP = 5


def most_restrictive(a: Treatment, b: Treatment) -> Treatment:
    return a if _Restriction[a.name] >= _Restriction[b.name] else b


class Attribution(StrEnum):
    NAMED = "named"
    ANONYMOUS = "anonymous"


class HssCondition(StrEnum):
    ANY = "any"
    ONLY = "only"
    NEVER = "never"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MemberKey(_Strict):
    kid: KeyId
    public_key: PublicKey


class MemberQuotas(_Strict):
    """Kafka client quotas of one member's principal, over the consortium's defaults
    (settings ``member_produce_byte_rate``, ``member_request_percentage``): one member's
    flood must not slow routing for the others."""

    produce_byte_rate: int | None = Field(
        default=None, ge=1024, description="bytes per second this member may produce"
    )
    request_percentage: float | None = Field(
        default=None, gt=0, le=1000, description="share of one broker I/O thread, in percent"
    )


#: What a recipient sees instead of an anonymous source's id; no member may be named so.
ANONYMOUS_PREFIX = "anonymous-"


class Member(_Strict):
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


class MemberRegistry(_Strict):
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


class Parties(_Strict):
    """Named members and/or whole sectors; an empty list of both means nobody."""

    sectors: tuple[Sector, ...] = ()
    members: tuple[MemberId, ...] = ()


class Conditions(_Strict):
    min_confidence: int = Field(default=0, ge=0, le=100)
    categories: tuple[ProductCategory, ...] = Field(
        default=(), description="share only records with one of these; empty means any"
    )
    hss: HssCondition = HssCondition.ANY
    embargo_minutes: int = Field(default=0, ge=0, description="hold this long after publication")
    expire_after_days: int | None = Field(default=None, ge=1, description="stop sharing after")
    recipient_is_rights_holder: bool = Field(
        default=False,
        description="match only when the recipient is the record's rights_holder (a seizure "
        "report in full goes only to the rights holder concerned, 19 CFR 133.21)",
    )


FieldPath = Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)?$")]


class ShareRule(_Strict):
    """What the member lets go out: a rule in its MOU's ``shares`` list."""

    id: RuleId
    event_types: tuple[str, ...] = Field(min_length=1)
    purposes: tuple[SharingPurpose, ...] | None = Field(
        default=None,
        min_length=1,
        description="required for event types whose records carry a purpose (SellerIndicator, "
        "SeizureReport), absent for the others: a condition on a field a record lacks never "
        "matches",
    )
    to: Parties
    max_tlp: Tlp = Field(default=Tlp.AMBER, description="records marked higher are not shared")
    when: Conditions = Conditions()
    fields: dict[FieldPath, Treatment] = Field(default_factory=dict)
    default_fields: Treatment = Field(
        default=Treatment.DROP, description="treatment of optional fields not listed"
    )
    attribution: Attribution = Attribution.NAMED
    anonymous_traceable: bool = Field(
        default=False,
        description="acknowledged: a recipient can trace this rule's anonymous label to this "
        "member, because no other member of its sector could send it that label; without "
        "this, action-policy check refuses such a rule",
    )


class AcceptRule(_Strict):
    """What the member is willing to receive: a rule in its MOU's ``accepts`` list."""

    id: RuleId
    event_types: tuple[str, ...] = Field(min_length=1)
    purposes: tuple[SharingPurpose, ...] | None = Field(
        default=None,
        min_length=1,
        description="as in a share rule: required exactly for event types with a purpose",
    )
    sources: Parties | None = Field(default=None, description="omit to accept from any member")
    max_tlp: Tlp = Tlp.RED
    shares_with_clients: bool = Field(
        default=False,
        description=(
            "the member passes what this rule admits on to its clients or partners; "
            "TLP:AMBER allows that, so AMBER+STRICT and RED records are refused here"
        ),
    )
    fields: dict[FieldPath, Treatment] = Field(default_factory=dict)


class Mou(_Strict):
    """``policies/mou/<member>.yaml``: one member's sharing rules."""

    member: MemberId
    version: str = Field(min_length=1, max_length=40, description="the MOU's own revision label")
    shares: tuple[ShareRule, ...] = ()
    accepts: tuple[AcceptRule, ...] = ()
