"""The MOUs as typed models: one per member (the registry is :mod:`broker.membership`).

These models are the single source of the policy files' JSON Schema
(``policies/schema/*.schema.json``, written by ``action-policy schema``), so editors
validate MOUs as they are typed. Semantics (what a rule means, how two MOUs combine) are
in :mod:`broker.policy.engine` and docs/policy.md.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import Field

from broker.events import ProductCategory, SharingPurpose, Tlp
from broker.membership import MemberId, Sector
from broker.typed_yaml import StrictModel

RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,79}$")]

#: TLP 2.0 levels in order of restriction.
TLP_ORDER: dict[Tlp, int] = {
    Tlp.CLEAR: 0,
    Tlp.GREEN: 1,
    Tlp.AMBER: 2,
    Tlp.AMBER_STRICT: 3,
    Tlp.RED: 4,
}


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


class Parties(StrictModel):
    """Named members and/or whole sectors; an empty list of both means nobody."""

    sectors: tuple[Sector, ...] = ()
    members: tuple[MemberId, ...] = ()


class Conditions(StrictModel):
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


class ShareRule(StrictModel):
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


class AcceptRule(StrictModel):
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


class Mou(StrictModel):
    """``policies/mou/<member>.yaml``: one member's sharing rules."""

    member: MemberId
    version: str = Field(min_length=1, max_length=40, description="the MOU's own revision label")
    shares: tuple[ShareRule, ...] = ()
    accepts: tuple[AcceptRule, ...] = ()
