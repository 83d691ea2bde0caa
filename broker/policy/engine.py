"""The MOU policy engine: compile once into plans, evaluate many. Pure code, no Kafka.

A record from source S reaches recipient R only when a ``shares`` rule of S's MOU and an
``accepts`` rule of R's MOU both match it (deny by default). Optional fields get the more
restrictive of the two MOUs' treatments; required fields (the envelope: ids, times,
categories, confidence, TLP) always travel as they are, except ``source_member`` when
the source shares anonymously.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.contract import record_id_of
from broker.events import Tlp
from broker.match_tokens import MatchTokenKey, match_token
from broker.membership import ANONYMOUS_PREFIX, Member, MemberRegistry
from broker.policy.decision import Decision, FieldDecision
from broker.policy.envelope import RECORDS, TEXT, TEXT_LIST, TreatableField, unnamed_fields
from broker.policy.freetext import IDENTIFIER_FIELDS, STRUCTURED, scrub
from broker.policy.model import (
    TLP_ORDER,
    AcceptRule,
    Attribution,
    HssCondition,
    Mou,
    Parties,
    ShareRule,
    Treatment,
    most_restrictive,
)
from broker.policy.treatments import RecipientKey, generalize, mask
from broker.sealing import seal

#: The field that dates each event type: embargo and expiry count from it.
TIME_FIELDS = {
    "SellerIndicator": "published_at",
    "EnforcementAction": "taken_at",
    "Sighting": "observed_at",
    "Retraction": "retracted_at",
    "SeizureReport": "seized_on",
}
#: The rule id of every retraction decision: the ledger (who got the indicator) decides.
RETRACTION_RULE = "ledger.retraction"
#: The rule id that withholds a reference from a member that did not get the indicator.
REFERENCE_RULE = "ledger.reference"


@dataclass(frozen=True, slots=True)
class Referenced:
    """What the router's ledger knows of an indicator another record refers to."""

    source: str
    recipients: Mapping[str, str]  # recipient -> source as delivered to it
    tlp: str


_TLP_RANK = {str(level): rank for level, rank in TLP_ORDER.items()}


def _stricter(a: str, b: str) -> str:
    """The more restrictive of two TLP markings. An unknown one wins, and the engine then
    withholds the record for its unknown marking: fail closed."""
    return a if _TLP_RANK.get(a, len(_TLP_RANK)) >= _TLP_RANK.get(b, len(_TLP_RANK)) else b


@dataclass(frozen=True, slots=True)
class Candidate:
    """One (share rule, accept rule) pair that may carry records S -> R of one type."""

    share: ShareRule
    accept: AcceptRule
    recipient_named: bool  # named in the share rule, not only through its sector
    fields: tuple[FieldDecision, ...]
    changed_fields: tuple[FieldDecision, ...]  # the fields whose treatment is not keep
    # What a delivery through this pair says, built once: every delivery shares the tuples.
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    # Free-text fields delivered in clear, scanned for identifiers, and how each kind of
    # identifier is treated in its structured field for this recipient (freetext.py).
    scanned: tuple[str, ...] = ()
    identifier_treatments: tuple[tuple[str, Treatment], ...] = ()


def parties_include(parties: Parties, member: Member) -> bool:
    return member.id in parties.members or member.sector in parties.sectors


class PolicySet:
    """An immutable, versioned, compiled set of MOUs."""

    def __init__(
        self,
        registry: MemberRegistry,
        mous: Mapping[str, Mou],
        treatable: Mapping[str, Mapping[str, TreatableField]],
        version: str,
    ) -> None:
        self.registry = registry
        self.members = {m.id: m for m in registry.members}
        self.mous = dict(mous)
        # Per event type, the fields outside the envelope (broker.policy.envelope).
        self.treatable = {t: dict(f) for t, f in treatable.items()}
        self.version = version
        self.encryption_keys = {
            m.id: RecipientKey.from_base64(
                m.encryption_keys[-1].kid, m.encryption_keys[-1].public_key
            )
            for m in registry.members
            if m.encryption_keys
        }
        self.plans = self._compile()
        # Rule ids named by a withheld decision that had candidates: fixed per plan.
        self._considered = {
            key: tuple(sorted({c.share.id for c in cands} | {c.accept.id for c in cands}))
            for key, cands in self.plans.items()
        }

    def unnamed_fields(self) -> list[tuple[str, str]]:
        """Treatable fields no rule of any MOU names (see envelope.unnamed_fields)."""
        named: dict[str, set[str]] = {}
        for mou in self.mous.values():
            rules: list[ShareRule | AcceptRule] = [*mou.shares, *mou.accepts]
            for rule in rules:
                for event_type in rule.event_types:
                    named.setdefault(event_type, set()).update(rule.fields)
        return unnamed_fields(self.treatable, named)

    # --- compile ----------------------------------------------------------------------

    def _compile(self) -> dict[tuple[str, str, str], tuple[Candidate, ...]]:
        plans: dict[tuple[str, str, str], tuple[Candidate, ...]] = {}
        for source_id, mou in self.mous.items():
            for recipient in self.registry.members:
                if recipient.id == source_id:
                    continue
                recipient_mou = self.mous.get(recipient.id)
                if recipient_mou is None:
                    continue
                source = self.members[source_id]
                for event_type in self.treatable:
                    candidates = tuple(
                        self._candidate(share, accept, recipient, event_type)
                        for share in mou.shares
                        if event_type in share.event_types and parties_include(share.to, recipient)
                        for accept in recipient_mou.accepts
                        if event_type in accept.event_types
                        and (accept.sources is None or parties_include(accept.sources, source))
                    )
                    if candidates:
                        plans[(source_id, event_type, recipient.id)] = candidates
        return {
            key: tuple(self._with_scanning(key, c, plans) for c in candidates)
            for key, candidates in plans.items()
        }

    def _with_scanning(
        self,
        key: tuple[str, str, str],
        candidate: Candidate,
        plans: Mapping[tuple[str, str, str], tuple[Candidate, ...]],
    ) -> Candidate:
        """The candidate with its free-text fields and identifier treatments. An
        indicator's come from its own field treatments; another record's (a retraction's
        explanation, say) from the indicator rules between the same two members, the most
        restrictive of them, and are all withheld where there are none."""
        source, event_type, recipient = key
        if event_type == "SellerIndicator":
            own = {f.path: f.treatment for f in candidate.fields}
            treatments = {kind: own.get(path, Treatment.DROP) for kind, path in STRUCTURED.items()}
        else:
            treatments = dict.fromkeys(STRUCTURED, Treatment.DROP)
            indicator_plan = plans.get((source, "SellerIndicator", recipient), ())
            for i, indicator_candidate in enumerate(indicator_plan):
                own = {f.path: f.treatment for f in indicator_candidate.fields}
                for kind, path in STRUCTURED.items():
                    treated = own.get(path, Treatment.DROP)
                    treatments[kind] = (
                        treated if i == 0 else most_restrictive(treatments[kind], treated)
                    )
        fields = self.treatable[event_type]
        scanned = tuple(
            f.path
            for f in candidate.fields
            if f.treatment is Treatment.KEEP
            and f.path not in IDENTIFIER_FIELDS
            and fields[f.path].kind in (TEXT, TEXT_LIST, RECORDS)
        )
        identifiers = tuple(sorted(treatments.items()))
        return dataclasses.replace(candidate, scanned=scanned, identifier_treatments=identifiers)

    def _candidate(
        self, share: ShareRule, accept: AcceptRule, recipient: Member, event_type: str
    ) -> Candidate:
        fields = []
        for path in self.treatable[event_type]:
            ours = _lookup(share.fields, path)
            theirs = _lookup(accept.fields, path)
            source_treatment = ours if ours is not None else share.default_fields
            if theirs is None:
                fields.append(FieldDecision(path, source_treatment, (share.id,)))
                continue
            combined = most_restrictive(source_treatment, theirs)
            if combined == source_treatment and combined == theirs:
                rules: tuple[str, ...] = (share.id, accept.id)
            else:
                rules = (share.id,) if combined == source_treatment else (accept.id,)
            fields.append(FieldDecision(path, combined, rules))
        changed = tuple(f for f in fields if f.treatment is not Treatment.KEEP)
        return Candidate(
            share,
            accept,
            recipient.id in share.to.members,
            tuple(fields),
            changed,
            (share.id, accept.id),
            (f"shared by {share.id}, accepted by {accept.id}",),
        )

    # --- evaluate ---------------------------------------------------------------------

    def evaluate(
        self,
        record: Mapping[str, Any],
        event_type: str,
        recipient: str,
        *,
        now: dt.datetime,
        match_key: MatchTokenKey,
        _memo: dict[Any, Any] | None = None,
    ) -> Decision:
        """Decide whether and in which form ``record`` reaches ``recipient``."""
        source = str(record.get("source_member", ""))
        record_id = record_id_of(record)

        def withheld(reasons: tuple[str, ...], rule_ids: tuple[str, ...] = ()) -> Decision:
            return Decision(
                False, source, recipient, event_type, record_id, self.version, rule_ids, reasons
            )

        if source not in self.members:
            return withheld((f"source {source!r} is not a consortium member",))
        if recipient not in self.members:
            return withheld((f"recipient {recipient!r} is not a consortium member",))
        if recipient == source:
            return withheld(("a member's own records are not echoed back to it",))
        plan_key = (source, event_type, recipient)
        candidates = self.plans.get(plan_key)
        if not candidates:
            return withheld(self._no_plan_reasons(plan_key))
        refusals: list[str] = []
        for candidate in candidates:
            refusal = self._refusal(candidate, record, event_type, recipient, now)
            if refusal is None:
                memo = {} if _memo is None else _memo
                return self._deliver(
                    candidate, record, event_type, source, recipient, record_id, match_key, memo
                )
            refusals.append(refusal)
        reasons = self._refusal_reasons(candidates, refusals)
        decision = withheld(reasons, rule_ids=self._considered[plan_key])
        held_until = self._embargo_end(candidates, record, event_type, recipient, now)
        if held_until is None:
            return decision
        return dataclasses.replace(decision, held_until=held_until)

    def _embargo_end(
        self,
        candidates: tuple[Candidate, ...],
        record: Mapping[str, Any],
        event_type: str,
        recipient: str,
        now: dt.datetime,
    ) -> dt.datetime | None:
        """When the record would be delivered if only an embargo withholds it now: the
        earliest end of an embargo after which a candidate passes every other check."""
        dated = _as_datetime(record.get(TIME_FIELDS.get(event_type, "")))
        if dated is None:
            return None
        ends = sorted(
            {
                dated + dt.timedelta(minutes=c.share.when.embargo_minutes)
                for c in candidates
                if c.share.when.embargo_minutes
            }
        )
        for end in ends:
            if end > now and any(
                self._refusal(c, record, event_type, recipient, end) is None for c in candidates
            ):
                return end
        return None

    def _no_plan_reasons(self, plan_key: tuple[str, str, str]) -> tuple[str, ...]:
        source, event_type, recipient = plan_key
        return (
            f"no rule allows {event_type} from {source} to {recipient}: {source}'s MOU must "
            f"share it with {recipient} (or its sector) and {recipient}'s MOU must accept it",
        )

    @staticmethod
    def _refusal_reasons(candidates: tuple[Candidate, ...], refusals: list[str]) -> tuple[str, ...]:
        return tuple(
            f"{c.share.id} + {c.accept.id}: {refusal}"
            for c, refusal in zip(candidates, refusals, strict=True)
        )

    def evaluate_all(
        self,
        record: Mapping[str, Any],
        event_type: str,
        *,
        now: dt.datetime,
        match_key: MatchTokenKey,
    ) -> list[Decision]:
        """One decision per other member of the consortium, in registry order.

        Hashed, masked and generalized values are the same for every recipient, so they
        are computed once per record; encryption is per recipient by nature.
        """
        source = record.get("source_member")
        memo: dict[Any, Any] = {}
        return [
            self.evaluate(record, event_type, m.id, now=now, match_key=match_key, _memo=memo)
            for m in self.registry.members
            if m.id != source
        ]

    def retraction_decisions(
        self,
        record: Mapping[str, Any],
        received: Mapping[str, str],
        *,
        now: dt.datetime,
        match_key: MatchTokenKey,
    ) -> list[Decision]:
        """A retraction goes to exactly the members in ``received`` (who got the
        indicator, as the router's ledger records them), attributed as the indicator was
        (``received[member]``: the source, or its anonymous label), whatever the rules say
        today. The rules decide only its treatable fields, through the same treatments as
        any record: where no rule delivers it today, every treatable field is withheld."""
        source = str(record.get("source_member", ""))
        indicator = str(record.get("indicator_id"))
        decisions = []
        for member in self.registry.members:
            if member.id == source:
                continue
            current = self.evaluate(record, "Retraction", member.id, now=now, match_key=match_key)
            if member.id not in received:
                decisions.append(
                    Decision(
                        False,
                        current.source,
                        member.id,
                        "Retraction",
                        current.record_id,
                        self.version,
                        (RETRACTION_RULE,),
                        (f"{member.id} did not receive indicator {indicator}",),
                    )
                )
                continue
            if current.delivered and current.record is not None:
                out, fields = dict(current.record), current.fields
                rules: tuple[str, ...] = (RETRACTION_RULE, *current.rule_ids)
            else:  # no rule delivers it today: only the envelope travels
                out, fields = self._envelope_only(record, "Retraction")
                rules = (RETRACTION_RULE,)
            out["source_member"] = received[member.id]
            decisions.append(
                Decision(
                    True,
                    current.source,
                    member.id,
                    "Retraction",
                    current.record_id,
                    self.version,
                    rules,
                    (f"{member.id} received indicator {indicator}",),
                    fields,
                    out,
                )
            )
        return decisions

    def reference_decisions(
        self,
        record: Mapping[str, Any],
        event_type: str,
        referenced: Referenced,
        *,
        now: dt.datetime,
        match_key: MatchTokenKey,
    ) -> list[Decision]:
        """Decisions on a record that refers to an indicator (a sighting or an enforcement
        action). It never reaches further than the indicator did: a recipient gets it only
        if the rules allow it *and* the recipient received the indicator or is its source;
        it travels under the stricter of its own marking and the indicator's, so the rules'
        TLP checks apply to that; and where the indicator's own source refers to it, a
        recipient that got the indicator anonymously gets the reference under the same
        label (a named action would otherwise tell it who shared the indicator)."""
        source = str(record.get("source_member", ""))
        marking = _stricter(str(record.get("tlp", Tlp.RED)), referenced.tlp)
        view = {**record, "tlp": marking}
        indicator = str(record.get("indicator_id"))
        decisions = []
        for decision in self.evaluate_all(view, event_type, now=now, match_key=match_key):
            recipient = decision.recipient
            if not decision.delivered or decision.record is None:
                decisions.append(decision)
                continue
            if recipient != referenced.source and recipient not in referenced.recipients:
                decisions.append(
                    Decision(
                        False,
                        source,
                        recipient,
                        event_type,
                        decision.record_id,
                        self.version,
                        (*decision.rule_ids, REFERENCE_RULE),
                        (
                            f"{recipient} did not receive indicator {indicator}, which this "
                            "record refers to",
                        ),
                    )
                )
                continue
            label = referenced.recipients.get(recipient)
            if source == referenced.source and label is not None and label != source:
                out = dict(decision.record, source_member=label)
                decision = dataclasses.replace(decision, record=out)
            decisions.append(decision)
        return decisions

    def _envelope_only(
        self, record: Mapping[str, Any], event_type: str
    ) -> tuple[dict[str, Any], tuple[FieldDecision, ...]]:
        """``record`` with every treatable field withheld (set to its schema default)."""
        out = {k: _copy(v) for k, v in record.items()}
        fields = []
        for path, spec in self.treatable[event_type].items():
            container, leaf = _container(out, path)
            if container is not None and leaf in container:
                container[leaf] = spec.dropped()
            fields.append(FieldDecision(path, Treatment.DROP, (RETRACTION_RULE,)))
        return out, tuple(fields)

    def _refusal(
        self,
        candidate: Candidate,
        record: Mapping[str, Any],
        event_type: str,
        recipient: str,
        now: dt.datetime,
    ) -> str | None:
        share, accept = candidate.share, candidate.accept
        # Records hold enum symbols as text; StrEnum members compare and hash as that text,
        # so no conversion is needed on this hot path.
        # Every condition fails closed: a condition on a field the record lacks does not
        # match (a retraction has no purpose, confidence or HSS flag to satisfy one with).
        purpose = record.get("purpose")
        for rule, name in ((share, "share"), (accept, "accept")):
            if rule.purposes is not None and purpose not in rule.purposes:
                if purpose is None:
                    return f"the {name} rule requires a purpose, and {event_type} has none"
                return f"purpose {purpose} is not among the {name} rule's purposes"
        tlp = record.get("tlp", Tlp.RED)
        if tlp not in TLP_ORDER:
            return f"unknown TLP marking {tlp!r}"
        # A rule for the rights holder concerned names its recipient through the record.
        named = candidate.recipient_named or (
            share.when.recipient_is_rights_holder and record.get("rights_holder") == recipient
        )
        if tlp == Tlp.RED and not named:
            return (
                "TLP:RED goes only to recipients the share rule names "
                "(or the record, as its rights holder)"
            )
        if TLP_ORDER[tlp] > TLP_ORDER[share.max_tlp]:
            return f"TLP:{tlp} is above the share rule's ceiling TLP:{share.max_tlp}"
        if TLP_ORDER[tlp] > TLP_ORDER[accept.max_tlp]:
            return f"TLP:{tlp} is above what the recipient accepts (TLP:{accept.max_tlp})"
        if accept.shares_with_clients and TLP_ORDER[tlp] >= TLP_ORDER[Tlp.AMBER_STRICT]:
            return (
                f"TLP:{tlp} stays inside the recipient organisation, and this accept rule "
                "passes records on to the recipient's clients"
            )
        when = share.when
        if when.min_confidence:
            confidence = record.get("confidence")
            if confidence is None:
                return (
                    f"the rule requires confidence {when.min_confidence}, and {event_type} has none"
                )
            if confidence < when.min_confidence:
                return f"confidence {confidence} is below the minimum {when.min_confidence}"
        if when.categories:
            categories = set(record.get("product_categories") or [record.get("product_category")])
            if not categories & {c.value for c in when.categories}:
                return "no product category of the record is among the rule's categories"
        if when.hss is not HssCondition.ANY:
            hss = record.get("hss")
            if hss is None:
                return f"the rule has an HSS condition, and {event_type} has no HSS flag"
            if when.hss is HssCondition.ONLY and not hss:
                return "the rule shares only health/safety/security records"
            if when.hss is HssCondition.NEVER and hss:
                return "the rule does not share health/safety/security records"
        if when.recipient_is_rights_holder:
            holder = record.get("rights_holder")
            if holder != recipient:
                named = f"names {holder}" if holder else "names no rights holder"
                return f"the rule shares only with the record's rights holder, and it {named}"
        dated = _as_datetime(record.get(TIME_FIELDS.get(event_type, "")))
        if dated is not None:
            if now < dated + dt.timedelta(minutes=when.embargo_minutes):
                return f"embargoed for {when.embargo_minutes} minutes after {dated.isoformat()}"
            if when.expire_after_days is not None and now >= dated + dt.timedelta(
                days=when.expire_after_days
            ):
                return f"older than the rule's {when.expire_after_days}-day limit"
        expires = _as_datetime(record.get("expires_at"))
        if expires is not None and now >= expires:
            return f"expired at {expires.isoformat()}"
        return None

    def _deliver(
        self,
        candidate: Candidate,
        record: Mapping[str, Any],
        event_type: str,
        source: str,
        recipient: str,
        record_id: str,
        match_key: MatchTokenKey,
        memo: dict[Any, Any],
    ) -> Decision:
        out = {k: _copy(v) for k, v in record.items()}
        treatable = self.treatable[event_type]
        for field in candidate.changed_fields:
            container, leaf = _container(out, field.path)
            if container is None or _absent(container, leaf, treatable[field.path]):
                continue  # absent, as far as the schema can say: nothing to treat
            spec = treatable[field.path]
            if field.treatment is Treatment.ENCRYPT:
                treated = self._treat(field, spec, container[leaf], recipient, record_id, match_key)
            else:
                key = (field.path, field.treatment)
                if key not in memo:
                    memo[key] = self._treat(
                        field, spec, container[leaf], recipient, record_id, match_key
                    )
                treated = memo[key]
            container[leaf] = _copy(treated)
        if candidate.scanned:
            self._scan_free_text(candidate, out, treatable, match_key, memo)
        if candidate.share.attribution is Attribution.ANONYMOUS:
            out["source_member"] = f"{ANONYMOUS_PREFIX}{self.members[source].sector.value}"
        return Decision(
            delivered=True,
            source=source,
            recipient=recipient,
            event_type=event_type,
            record_id=record_id,
            policy_version=self.version,
            rule_ids=candidate.rule_ids,
            reasons=candidate.reasons,
            fields=candidate.fields,
            record=out,
        )

    @staticmethod
    def _scan_free_text(
        candidate: Candidate,
        out: dict[str, Any],
        treatable: Mapping[str, TreatableField],
        match_key: MatchTokenKey,
        memo: dict[Any, Any],
    ) -> None:
        """Identifiers inside the free-text fields delivered in clear get the treatment of
        their structured field (see broker.policy.freetext)."""
        treatments = dict(candidate.identifier_treatments)
        for path in candidate.scanned:
            container, leaf = _container(out, path)
            if container is None or _absent(container, leaf, treatable[path]):
                continue
            key = (path, "scan", candidate.identifier_treatments)
            if key not in memo:
                memo[key] = _scrub_value(container[leaf], treatments, match_key)
            container[leaf] = _copy(memo[key])

    def _treat(
        self,
        field: FieldDecision,
        spec: TreatableField,
        value: Any,
        recipient: str,
        record_id: str,
        match_key: MatchTokenKey,
    ) -> Any:
        treatment, path = field.treatment, field.path
        if treatment is Treatment.KEEP:
            return value
        if treatment is Treatment.DROP:
            return spec.dropped()
        if treatment is Treatment.GENERALIZE:
            return generalize(path, value)
        kind = path.rpartition(".")[2]

        def one(item: str) -> str:
            if treatment is Treatment.HASH:
                return match_token(match_key, kind, item)
            if treatment is Treatment.MASK:
                return mask(item)
            key = self.encryption_keys[recipient]
            return seal(item, key.kid, key.public_key, record_id=record_id, path=path)

        return [one(v) for v in value] if isinstance(value, list) else one(value)


def _absent(container: Mapping[str, Any], leaf: str, spec: TreatableField) -> bool:
    """Whether the field is missing or holds its schema default: nothing to treat."""
    return leaf not in container or container[leaf] == spec.default


def _scrub_value(value: Any, treatments: Mapping[str, Treatment], match_key: MatchTokenKey) -> Any:
    """Every string inside ``value`` (a text, a list, records in a list) scrubbed."""
    if isinstance(value, str):
        return scrub(value, treatments, match_key)
    if isinstance(value, list):
        return [_scrub_value(v, treatments, match_key) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, treatments, match_key) for k, v in value.items()}
    return value


def _lookup(fields: Mapping[str, Treatment], path: str) -> Treatment | None:
    """A field's treatment, or its parent record's (``seller`` covers ``seller.email``)."""
    if path in fields:
        return fields[path]
    parent = path.partition(".")[0]
    return fields.get(parent) if parent != path else None


def _as_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return None


_CONTAINERS = (dict, list)


def _copy(value: Any) -> Any:
    """A copy of every dict and list inside ``value``: each delivered record is its own, so
    no recipient's record shares a mutable part with the caller's or another recipient's.
    (Exact type checks: decoded records hold plain dicts and lists, and this is per delivery.)"""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if kind is list:
        return [_copy(v) if type(v) in _CONTAINERS else v for v in value]
    return value


def _container(record: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    head, _, leaf = path.partition(".")
    if not leaf:
        return record, head
    inner = record.get(head)
    return (inner, leaf) if isinstance(inner, dict) else (None, leaf)
