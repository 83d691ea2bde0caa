"""What the router does with one inbound record, as a value. Pure code: no Kafka I/O.

decode -> validate -> the claimed source owns the topic -> the source's signature
verifies -> the policies decide for every other member (a retraction goes to exactly the
recipients of what it retracts) -> encoded feed records, the decisions to audit and, for
an indicator, who received it. Anything that fails a step becomes a dead letter with a
reason code instead; nothing is dropped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit import (
    PreparedEntry,
    prepare_decisions,
    pseudonym_key,
    source_pseudonym,
)
from broker.codec import AvroCodec
from broker.contract import (
    DECISION_ID_HEADER,
    EVENT_TYPE_HEADER,
    POLICY_VERSION_HEADER,
    RECORD_ID_HEADER,
    SIGNATURE_HEADER,
    SOURCE_TIMESTAMP_HEADER,
    feed_key,
    feed_topic,
    record_id_of,
    topic_owner,
)
from broker.embargo import HeldRecord, embargo_key
from broker.errors import DecodeError, EncodeError, EventValidationError, ProvenanceError
from broker.events import EVENT_TYPES
from broker.ledger import DeliveryLedger, LedgerEntry, ledger_key
from broker.match_tokens import MatchTokenKey
from broker.policy.decision import Decision
from broker.policy.engine import PolicySet, Referenced
from broker.policy.model import Treatment
from broker.provenance import FieldProof
from broker.signing import SignatureVerifier, header_map, sign_feed_record

# Bounds on what a member sends beside the value, checked before anything is parsed. The
# SDK writes three or four headers of under 4 KiB; a record past these is refused whole.
MAX_HEADERS = 32
MAX_HEADER_BYTES = 64 * 1024  # one header's value
MAX_HEADER_NAME_BYTES = 256

#: Records that name an indicator and reach no further than it did (PolicySet.
#: reference_decisions); with retractions, the types decided against the ledger.
REFERRING_TYPES = frozenset({"Sighting", "EnforcementAction"})
LEDGER_TYPES = REFERRING_TYPES | {"Retraction"}
#: A sighting or action about an indicator its source neither published nor received.
REFERENCE_UNKNOWN = "reference.unknown"

#: The dead letter of a record that made the router's own code raise: a bug this record
#: triggers, recorded with the exception instead of stopping routing for every member.
UNPROCESSABLE = "record.unprocessable"

# PICKLING: a routing worker's results (Writes, FeedRecord, AuditedDecision, DeadLetter,
# audit.PreparedEntry) are NamedTuples. Pickle writes and restores a tuple in C, without
# an instance dictionary per object; as frozen dataclasses the results of one record took
# 69 us to pickle in the worker and 91 us to unpickle in the main process, as NamedTuples
# 34 and 43. Inbound and Checked go the other way, one per record, and stay frozen
# dataclasses without slots (pickle fills a plain one's __dict__ in C, a slotted one's
# through Python-level __setstate__).


@dataclass(frozen=True)  # not slotted: crosses to or from routing workers (see PICKLING)
class Inbound:
    """One record as read from an inbound topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    @classmethod
    def held(cls, held: HeldRecord) -> Inbound:
        """The inbound record an embargo holds, as it was read."""
        return cls(
            held.topic,
            held.partition,
            held.offset,
            held.key,
            held.value,
            held.headers,
            held.timestamp_ms,
        )


class FeedRecord(NamedTuple):  # a tuple: crosses from routing workers (see PICKLING)
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class DeadLetter(NamedTuple):  # a tuple: crosses from routing workers (see PICKLING)
    reason: str  # a stable code: wire.bad_magic, event.invalid, signature.invalid, ...
    detail: str


class Identity(NamedTuple):  # a tuple: crosses from routing workers (see PICKLING)
    """What the router's process checks against the ids already claimed
    (:mod:`broker.claims`) before anything of a decided record is written."""

    record_id: str
    event_ms: int | None  # the record's own signed time, where its type has one


#: The signed time of each event type that bounds how old a record may be. A seizure's
#: date is history (reports of last year's seizures are normal), so it has none.
EVENT_TIME_FIELDS = {
    "SellerIndicator": "published_at",
    "EnforcementAction": "taken_at",
    "Sighting": "observed_at",
    "Retraction": "retracted_at",
}


@dataclass(frozen=True, slots=True)
class Routed:
    source: str | None = None
    event_type: str | None = None
    decisions: tuple[Decision, ...] = ()
    feeds: tuple[FeedRecord, ...] = ()
    dead_letter: DeadLetter | None = None
    ledger_update: tuple[str, LedgerEntry] | None = field(default=None)
    identity: Identity | None = None
    #: What to write to the embargo topic: (key, held record), or (key, None) to end it.
    embargo: tuple[str, HeldRecord | None] | None = None
    #: The source's pseudonym in the audit trail when the record was shared anonymously
    #: with someone (see RecordRouter._audit_pseudonym).
    audit_source: str | None = None

    def writes(self, inbound: Inbound, *, decided_at_ms: int) -> Writes:
        """What the router writes for this outcome, with every audit entry serialized."""
        audited_decisions = self.decisions
        if self.audit_source is not None:
            audited_decisions = tuple(_pseudonymous(d, self.audit_source) for d in self.decisions)
        entries = prepare_decisions(
            audited_decisions, decided_at_ms=decided_at_ms, position=inbound.position
        )
        audited = tuple(
            AuditedDecision(
                entry,
                d.source,
                d.recipient,
                d.delivered,
                tuple((f.path, f.treatment.value) for f in d.fields) if d.delivered else (),
            )
            for d, entry in zip(self.decisions, entries, strict=True)
        )
        return Writes(
            self.source,
            self.event_type,
            self.feeds,
            audited,
            self.dead_letter,
            self.ledger_update,
            self.identity,
            self.embargo,
        )


class AuditedDecision(NamedTuple):  # a tuple: crosses from routing workers (see PICKLING)
    """One decision as the router records it: its audit entry, serialized but not yet
    chained, and what the metrics count."""

    entry: PreparedEntry
    source: str
    recipient: str
    delivered: bool
    treatments: tuple[tuple[str, str], ...]  # (field, treatment) when delivered


class Writes(NamedTuple):  # a tuple: crosses from routing workers (see PICKLING)
    """Everything the router writes for one inbound record, ready for Kafka: what a
    routing worker hands back (smaller than the decisions, which carry whole records)."""

    source: str | None
    event_type: str | None
    feeds: tuple[FeedRecord, ...]
    decisions: tuple[AuditedDecision, ...]
    dead_letter: DeadLetter | None
    ledger_update: tuple[str, LedgerEntry] | None
    identity: Identity | None = None  # None for a dead letter
    embargo: tuple[str, HeldRecord | None] | None = None  # see Routed.embargo

    def refused(self, reason: str, detail: str) -> Writes:
        """These writes replaced by the record's dead letter: nothing of it is delivered."""
        return Writes(self.source, self.event_type, (), (), DeadLetter(reason, detail), None)


@dataclass(frozen=True)  # not slotted: crosses to or from routing workers (see PICKLING)
class Checked:
    """An inbound record that passed every check (decoded, valid, from its topic's owner,
    signed), before the policies decide on it."""

    inbound: Inbound
    source: str
    event_type: str
    record: dict[str, Any]
    proof: FieldProof | None

    @property
    def needs_ledger(self) -> bool:
        """A retraction goes to whoever received the indicator, and a sighting or action
        never further than the indicator went: the ledger decides."""
        return self.event_type in LEDGER_TYPES


class RecordRouter:
    def __init__(
        self,
        policy_set: PolicySet,
        codec: AvroCodec,
        match_key: MatchTokenKey,
        *,
        router_key: tuple[str, Ed25519PrivateKey] | None = None,
    ) -> None:
        self.policy_set = policy_set
        self.codec = codec
        self.match_key = match_key
        self.verifier = SignatureVerifier(policy_set.registry)
        self.router_key = router_key  # (kid, key): signs every feed record
        self._pseudonym_key = pseudonym_key(match_key.secret)

    def route(self, inbound: Inbound, *, now: dt.datetime, ledger: DeliveryLedger) -> Routed:
        checked = self.check(inbound)
        if isinstance(checked, Routed):
            return checked
        return self.decide(checked, now=now, ledger=ledger)

    def writes(
        self,
        inbound: Inbound,
        *,
        now: dt.datetime,
        ledger: DeliveryLedger | None,
        decided_at_ms: int,
    ) -> Writes | Checked:
        """check -> decide -> writes: the one composition the workers and the router's own
        process use. Without a ``ledger``, a retraction comes back :class:`Checked`, for the
        process that holds the ledger (:meth:`decided_writes`)."""
        try:
            checked = self.check(inbound)
            if isinstance(checked, Routed):
                return checked.writes(inbound, decided_at_ms=decided_at_ms)
            if checked.needs_ledger and ledger is None:
                return checked
            return self.decided_writes(checked, now=now, ledger=ledger, decided_at_ms=decided_at_ms)
        except Exception as exc:  # noqa: BLE001 - any fault a record triggers is its dead letter
            return unprocessable(exc).writes(inbound, decided_at_ms=decided_at_ms)

    def decided_writes(
        self,
        checked: Checked,
        *,
        now: dt.datetime,
        ledger: DeliveryLedger | None,
        decided_at_ms: int,
    ) -> Writes:
        """The writes for a checked record."""
        routed = self.decide(checked, now=now, ledger=ledger)
        try:
            return routed.writes(checked.inbound, decided_at_ms=decided_at_ms)
        except Exception as exc:  # noqa: BLE001 - any fault a record triggers is its dead letter
            dead = unprocessable(exc, event_type=checked.event_type)
            return dead.writes(checked.inbound, decided_at_ms=decided_at_ms)

    def check(self, inbound: Inbound) -> Checked | Routed:
        """Every step before the policies: a :class:`Checked` record or a dead letter.
        Never raises for anything in the record: a member's bytes cannot stop the router."""
        try:
            return self._check(inbound)
        except Exception as exc:  # noqa: BLE001 - any fault a record triggers is its dead letter
            return unprocessable(exc)

    def _check(self, inbound: Inbound) -> Checked | Routed:
        bad_headers = _header_problem(inbound.headers)
        if bad_headers is not None:
            return _dead(*bad_headers)
        owner = topic_owner(inbound.topic)
        if owner is None or owner not in self.policy_set.members:
            return _dead("source.unknown_topic", f"{inbound.topic} is no member's inbound topic")
        if inbound.value is None:
            return _dead("record.empty", "a record without a value (tombstone) carries no event")
        try:
            decoded = self.codec.decode(inbound.value)
        except DecodeError as exc:
            return _dead(exc.reason, exc.message)
        event_type = decoded.type_name
        try:
            event = EVENT_TYPES[event_type].from_avro(decoded.record)
        except EventValidationError as exc:
            return _dead(exc.reason, exc.message, event_type=event_type)
        record = event.to_avro()  # normalized identifiers: equal sellers give equal tokens
        source = record["source_member"]
        if source != owner:
            return _dead(
                "source.topic_mismatch",
                f"record claims source {source} but arrived on {owner}'s topic {inbound.topic}",
                event_type=event_type,
            )
        headers = header_map(inbound.headers)
        try:
            kid, key = self.verifier.signer(headers, source)
            signed_whole = bool(headers.get(SIGNATURE_HEADER))  # scheme v1 (broker.signing)
            if signed_whole:
                self.verifier.check(inbound.value, headers, kid, key)
            proof = FieldProof.verify(record, event_type, headers, kid, key, encoded=inbound.value)
            if not signed_whole and (proof is None or not proof.covers_record):
                raise ProvenanceError(
                    f"record from {source} is unsigned: it needs the {SIGNATURE_HEADER} "
                    "header or a field proof that covers the encoded record",
                    reason="signature.missing",
                )
        except ProvenanceError as exc:
            return _dead(exc.reason, exc.message, event_type=event_type)
        return Checked(inbound, source, event_type, record, proof)

    def decide(
        self, checked: Checked, *, now: dt.datetime, ledger: DeliveryLedger | None
    ) -> Routed:
        """The policies' decisions for every other member and the encoded feed records.
        Only a retraction consults the ledger (``checked.needs_ledger``). Never raises for
        anything in the record: what would is its dead letter (:data:`UNPROCESSABLE`)."""
        if checked.needs_ledger and ledger is None:
            raise ValueError("a retraction is decided against the delivery ledger")
        try:
            return self._decide(checked, now=now, ledger=ledger)
        except Exception as exc:  # noqa: BLE001 - any fault a record triggers is its dead letter
            return unprocessable(exc, event_type=checked.event_type)

    def _decide(
        self, checked: Checked, *, now: dt.datetime, ledger: DeliveryLedger | None
    ) -> Routed:
        inbound, source, event_type, record = (
            checked.inbound,
            checked.source,
            checked.event_type,
            checked.record,
        )
        if event_type == "Retraction":
            assert ledger is not None
            decisions = self._retraction_decisions(record, now, ledger)
        elif event_type in REFERRING_TYPES:
            assert ledger is not None
            referenced = _referenced(record, ledger)
            if referenced is None:
                return _dead(
                    REFERENCE_UNKNOWN,
                    f"{source} refers to indicator "
                    f"{record['indicator_id']}, which it neither published nor "
                    "received",
                    event_type=event_type,
                )
            decisions = self.policy_set.reference_decisions(
                record, event_type, referenced, now=now, match_key=self.match_key
            )
        else:
            decisions = self.policy_set.evaluate_all(
                record, event_type, now=now, match_key=self.match_key
            )
        try:
            feeds = tuple(
                self._feed_record(d, inbound, checked.proof) for d in decisions if d.delivered
            )
        except EncodeError as exc:  # a treatment produced what the schema cannot carry
            return _dead(exc.reason, exc.message, event_type=event_type)
        update = None
        if event_type == "SellerIndicator":
            received = {
                d.recipient: str(d.record["source_member"])
                for d in decisions
                if d.delivered and d.record is not None
            }
            entry = LedgerEntry(received, self.policy_set.version, str(record["tlp"]))
            update = (ledger_key(source, record["indicator_id"]), entry)
        return Routed(
            source,
            event_type,
            tuple(decisions),
            feeds,
            None,
            update,
            Identity(record_id_of(record), _event_ms(event_type, record)),
            _embargo(inbound, source, event_type, record, decisions),
            self._audit_pseudonym(source, record, decisions),
        )

    def released(
        self,
        key: str,
        held: HeldRecord,
        *,
        now: dt.datetime,
        ledger: DeliveryLedger,
        decided_at_ms: int,
    ) -> Writes:
        """The writes when embargoes on a held record end: each recipient whose embargo has
        ended is decided again under the policies in force now (delivered, held again, or
        withheld for good); the record's embargo entry keeps only what is still held."""
        inbound = Inbound.held(held)
        checked = self.check(inbound)
        if isinstance(checked, Routed):  # no longer passes its checks (a key revoked, say)
            source = topic_owner(held.topic) or "unknown"
            return Writes(source, checked.event_type, (), (), None, None, None, (key, None))
        source, event_type, record = checked.source, checked.event_type, checked.record
        now_ms = int(now.timestamp() * 1000)
        remaining = {r: at for r, at in held.due.items() if at > now_ms}
        decisions = []
        for recipient in sorted(set(held.due) - set(remaining)):
            decision = self.policy_set.evaluate(
                record, event_type, recipient, now=now, match_key=self.match_key
            )
            if decision.held_until is not None:
                remaining[recipient] = int(decision.held_until.timestamp() * 1000)
            decisions.append(decision)
        feeds = tuple(
            self._feed_record(d, inbound, checked.proof) for d in decisions if d.delivered
        )
        update = None
        if event_type == "SellerIndicator":
            key = ledger_key(source, str(record["indicator_id"]))
            entry = ledger.get(key)
            if entry is not None:
                received = dict(entry.recipients)
                for d in decisions:
                    if d.delivered and d.record is not None:
                        received[d.recipient] = str(d.record["source_member"])
                update = (key, LedgerEntry(received, entry.policy_version, entry.tlp))
        embargo = (key, held.with_due(remaining) if remaining else None)
        routed = Routed(
            source,
            event_type,
            tuple(decisions),
            feeds,
            None,
            update,
            None,
            embargo,
            self._audit_pseudonym(source, record, decisions),
        )
        return routed.writes(inbound, decided_at_ms=decided_at_ms)

    def _audit_pseudonym(
        self, source: str, record: dict[str, Any], decisions: Sequence[Decision]
    ) -> str | None:
        """A pseudonym for the source in the audit trail when any recipient got the record
        anonymously: the audit readers (the IPR Center) would otherwise read there who
        shared it. Named deliveries keep the name (their recipients see it anyway)."""
        if not any(d.delivered and d.attributed_source != source for d in decisions):
            return None
        return source_pseudonym(self._pseudonym_key, source, record_id_of(record))

    def _feed_record(
        self, decision: Decision, inbound: Inbound, proof: FieldProof | None
    ) -> FeedRecord:
        assert decision.record is not None
        value = self.codec.encode(decision.event_type, decision.record)
        headers = []
        # Only a named delivery carries the source's field proof: checking it needs the
        # source's key, which would undo an anonymous or sector-only attribution.
        if proof is not None and decision.record.get("source_member") == decision.source:
            treated = [f.path for f in decision.fields if f.treatment is not Treatment.KEEP]
            headers += proof.disclose(decision.record, treated)
        decision_id = decision.decision_id  # a hash, computed on each access
        headers += [
            (DECISION_ID_HEADER, decision_id.encode()),
            (POLICY_VERSION_HEADER, decision.policy_version.encode()),
            (EVENT_TYPE_HEADER, decision.event_type.encode()),
            (RECORD_ID_HEADER, decision.record_id.encode()),
            (SOURCE_TIMESTAMP_HEADER, str(inbound.timestamp_ms).encode()),
        ]
        if self.router_key is not None:
            kid, key = self.router_key
            headers += sign_feed_record(value, decision_id, decision.recipient, key, kid)
        return FeedRecord(
            feed_topic(decision.recipient), feed_key(decision.record_id), value, headers
        )

    def _retraction_decisions(
        self, record: dict[str, Any], now: dt.datetime, ledger: DeliveryLedger
    ) -> list[Decision]:
        """A retraction goes to exactly the members that received the indicator, in the
        form of attribution they received it in (PolicySet.retraction_decisions)."""
        source = record["source_member"]
        entry = ledger.get(ledger_key(source, str(record["indicator_id"])))
        received = entry.recipients if entry else {}
        return self.policy_set.retraction_decisions(
            record, received, now=now, match_key=self.match_key
        )


def _embargo(
    inbound: Inbound,
    source: str,
    event_type: str,
    record: dict[str, Any],
    decisions: Sequence[Decision],
) -> tuple[str, HeldRecord | None] | None:
    """The embargo entry of a record some recipients get only when an embargo ends; for
    a retraction, the end of whatever is still held of its indicator."""
    if event_type == "Retraction":
        return embargo_key(source, str(record["indicator_id"])), None
    due = {
        d.recipient: int(d.held_until.timestamp() * 1000)
        for d in decisions
        if not d.delivered and d.held_until is not None
    }
    if not due or inbound.value is None:
        return None
    held = HeldRecord(
        inbound.topic,
        inbound.partition,
        inbound.offset,
        inbound.key,
        inbound.value,
        inbound.headers,
        inbound.timestamp_ms,
        due,
    )
    return embargo_key(source, record_id_of(record)), held


def _pseudonymous(decision: Decision, pseudonym: str) -> Decision:
    """The decision as the audit trail records it for a record shared anonymously: the
    source is the pseudonym, except in a named delivery (whose recipient has the name)."""
    if decision.delivered and decision.attributed_source == decision.source:
        return decision
    return dataclasses.replace(decision, source=pseudonym)


def _referenced(record: dict[str, Any], ledger: DeliveryLedger) -> Referenced | None:
    """What the ledger knows of the indicator ``record`` refers to; None when the
    record's source neither published nor received it (or nobody did)."""
    indicator = str(record["indicator_id"])
    owner = ledger.owner_of(indicator)
    entry = ledger.get(ledger_key(owner, indicator)) if owner else None
    if owner is None or entry is None:
        return None
    source = record["source_member"]
    if source != owner and source not in entry.recipients:
        return None
    return Referenced(owner, entry.recipients, entry.tlp)


def _dead(reason: str, detail: str, *, event_type: str | None = None) -> Routed:
    return Routed(event_type=event_type, dead_letter=DeadLetter(reason, detail))


def _event_ms(event_type: str, record: dict[str, Any]) -> int | None:
    name = EVENT_TIME_FIELDS.get(event_type)
    value = record.get(name) if name else None
    return int(value.timestamp() * 1000) if isinstance(value, dt.datetime) else None


def unprocessable(exc: BaseException, *, event_type: str | None = None) -> Routed:
    """The dead letter of a record that made routing code raise, naming the exception."""
    detail = f"{type(exc).__name__}: {exc}"[:1000]
    return _dead(UNPROCESSABLE, detail, event_type=event_type)


def _header_problem(headers: Sequence[tuple[str, bytes | None]]) -> tuple[str, str] | None:
    """(reason, detail) when the headers exceed the bounds, before any is parsed."""
    if len(headers) > MAX_HEADERS:
        return "headers.too_many", f"{len(headers)} headers; at most {MAX_HEADERS} are read"
    for name, value in headers:
        if len(name) > MAX_HEADER_NAME_BYTES or len(value or b"") > MAX_HEADER_BYTES:
            shown = name[:40].encode("unicode_escape").decode()
            return (
                "headers.too_large",
                f"header {shown!r} is over the bounds "
                f"({MAX_HEADER_NAME_BYTES} B name, {MAX_HEADER_BYTES} B value)",
            )
    return None
