"""Decisions are values: what the engine decided for one record and one recipient, and why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.contract import decision_id_for
from broker.policy.model import Treatment


@dataclass(frozen=True, slots=True)
class FieldDecision:
    """How one optional field reaches the recipient, and which rules said so."""

    path: str
    treatment: Treatment
    rule_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    delivered: bool
    source: str
    recipient: str
    event_type: str
    record_id: str
    policy_version: str
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    fields: tuple[FieldDecision, ...] = ()
    record: Mapping[str, Any] | None = None
    #: Withheld only by an embargo: when it ends (the router holds the record till then
    #: and decides again under the policies in force then).
    held_until: dt.datetime | None = None

    @property
    def attributed_source(self) -> str:
        """The source as the recipient sees it: the delivered record's ``source_member``
        (an anonymous label where the MOU says so), else the source."""
        if self.record is not None:
            return str(self.record.get("source_member") or self.source)
        return self.source

    @property
    def decision_id(self) -> str:
        """Deterministic: the same record (its source included), recipient and policy
        version give the same id, so a consumer can drop a duplicate delivery."""
        return decision_id_for(
            self.attributed_source, self.record_id, self.recipient, self.policy_version
        )

    def treatment_of(self, path: str) -> Treatment | None:
        for field in self.fields:
            if field.path == path:
                return field.treatment
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (without the transformed record) for logs and ``explain``."""
        return {
            "decision_id": self.decision_id,
            "delivered": self.delivered,
            "source": self.source,
            "recipient": self.recipient,
            "event_type": self.event_type,
            "record_id": self.record_id,
            "policy_version": self.policy_version,
            "rule_ids": list(self.rule_ids),
            "reasons": list(self.reasons),
            "held_until": self.held_until.isoformat() if self.held_until else None,
            "fields": {
                f.path: {"treatment": f.treatment.value, "rules": list(f.rule_ids)}
                for f in self.fields
            },
        }
