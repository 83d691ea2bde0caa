"""Impact preview of an MOU change: which recipients and fields a new policy version would
treat differently from the old one, for a sample of records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from broker.match_tokens import MatchTokenKey
from broker.policy.decision import Decision
from broker.policy.engine import PolicySet

#: What can change for one (record, recipient) between two policy versions.
ASPECTS = ("delivery", "field", "attribution", "rules")


@dataclass(frozen=True, slots=True)
class Change:
    record_id: str
    event_type: str
    source: str
    recipient: str
    aspect: str  # one of ASPECTS
    path: str  # the field for "field" changes, else ""
    before: str
    after: str
    why: str  # the new decision's reason, for a change of delivery

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def decision_changes(old: Decision, new: Decision) -> list[Change]:
    """How ``new`` differs from ``old`` (same record and recipient) for the recipient.

    Only what the recipient would see counts; a new policy version alone is no change.
    Encrypted values differ on every evaluation, so fields compare by treatment.
    """

    def change(aspect: str, before: str, after: str, path: str = "", why: str = "") -> Change:
        return Change(
            old.record_id,
            old.event_type,
            old.source,
            old.recipient,
            aspect,
            path,
            before,
            after,
            why,
        )

    if old.delivered != new.delivered:
        outcome = {True: "delivered", False: "withheld"}
        return [
            change(
                "delivery",
                outcome[old.delivered],
                outcome[new.delivered],
                why="; ".join(new.reasons),
            )
        ]
    if not new.delivered:
        return []
    changes = []
    if old.rule_ids != new.rule_ids:
        changes.append(change("rules", " + ".join(old.rule_ids), " + ".join(new.rule_ids)))
    before = {f.path: f.treatment for f in old.fields}
    after = {f.path: f.treatment for f in new.fields}
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) != after.get(path):
            changes.append(
                change("field", _name(before.get(path)), _name(after.get(path)), path=path)
            )
    old_source = (old.record or {}).get("source_member")
    new_source = (new.record or {}).get("source_member")
    if old_source != new_source:
        changes.append(change("attribution", str(old_source), str(new_source)))
    return changes


def policy_impact(
    old: PolicySet,
    new: PolicySet,
    records: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    now: dt.datetime,
    match_key: MatchTokenKey,
) -> Iterator[tuple[int, list[Change]]]:
    """For each (event type, record): how many recipient decisions were compared, and the
    changes among them. Recipients are the union of both versions' members."""
    recipients = list(dict.fromkeys([*old.members, *new.members]))
    for event_type, record in records:
        source = record.get("source_member")
        changes: list[Change] = []
        compared = 0
        for recipient in recipients:
            if recipient == source:
                continue
            compared += 1
            before = old.evaluate(record, event_type, recipient, now=now, match_key=match_key)
            after = new.evaluate(record, event_type, recipient, now=now, match_key=match_key)
            changes += decision_changes(before, after)
        yield compared, changes


def _name(treatment: Any) -> str:
    return "-" if treatment is None else str(treatment.value)
