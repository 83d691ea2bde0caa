"""The audit trail: one entry per decision, hash-chained so a gap, a swap or an edit shows.

Each inbound partition has its own chain (``chain`` = ``<topic>/<partition>``), because
one router instance owns a partition at a time and processes it in order. An entry holds
``seq`` (1, 2, ...), ``prev`` (the previous entry's hash; 64 zeros for the first) and
``hash`` = SHA-256 over ``prev`` and the canonical JSON of every other field. The router
commits each chain's head (``seq:hash``) as the offset metadata of the same transaction
that writes the entries, so a restarted or rebalanced router continues the chain exactly
where the committed entries end. Pure code: no Kafka.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from broker.policy.decision import Decision

GENESIS = "0" * 64


# One encoder for every entry (json.dumps with options builds a new one per call).
_ENTRY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def entry_json(document: Mapping[str, Any]) -> bytes:
    """The audit entry format: JSON with sorted keys, no spaces, ASCII only. Every writer
    (the router, through :func:`prepare_entry`) and every verifier (:func:`entry_hash`)
    encodes entries with this, and with nothing else."""
    return _ENTRY_JSON.encode(document).encode()


#: Prefix of a source's pseudonym in the audit trail.
PSEUDONYM_PREFIX = "anon-"
_PSEUDONYM_CONTEXT = b"action.audit-pseudonym.v1"


def pseudonym_key(match_secret: bytes) -> bytes:
    """The operator's key for audit pseudonyms, derived from the consortium's match-token
    secret (which only the operator holds), so no other secret needs keeping."""
    return hmac.new(match_secret, _PSEUDONYM_CONTEXT, hashlib.sha256).digest()


def source_pseudonym(key: bytes, source: str, record_id: str) -> str:
    """How the audit trail names the source of a record shared anonymously: a keyed
    hash of the source and the record, so audit readers can neither reverse it nor link
    two records of one source; the operator, holding the key, tries each member."""
    mac = hmac.new(key, f"{source}\x1f{record_id}".encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + mac[:20]


def reveal_source(key: bytes, pseudonym: str, record_id: str, members: Iterable[str]) -> str | None:
    """The member behind ``pseudonym`` on ``record_id``, or None (the operator's side)."""
    for member in members:
        if hmac.compare_digest(source_pseudonym(key, member, record_id), pseudonym):
            return member
    return None


def entry_hash(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(str(entry.get("prev", "")).encode() + entry_json(body)).hexdigest()


def decision_entry(decision: Decision, *, decided_at_ms: int, position: str) -> dict[str, Any]:
    """The audit content of one decision (chain fields are added by :class:`ChainHead`):
    the one definition of a decision's entry."""
    return {
        "decision_id": decision.decision_id,
        "record_id": decision.record_id,
        "event_type": decision.event_type,
        "source": decision.source,
        "recipient": decision.recipient,
        "outcome": "delivered" if decision.delivered else "withheld",
        "rule_ids": list(decision.rule_ids),
        "fields": {f.path: f.treatment.value for f in decision.fields},
        "reasons": list(decision.reasons),
        "policy_version": decision.policy_version,
        "decided_at_ms": decided_at_ms,
        "input": position,
    }


# The fields a chain adds to every entry, in canonical (sorted) order.
_CHAIN_KEYS = ("chain", "prev", "seq")


class PreparedEntry(NamedTuple):  # a tuple: pickled by routing workers (broker.routing PICKLING)
    """An entry's content serialized ahead of time, as the :func:`entry_json` of the runs
    of keys that fall before ``chain``, between ``chain`` and ``prev``, between ``prev``
    and ``seq``, and after ``seq``. :meth:`ChainHead.extend` slots the chain fields in
    between, so the content is serialized once, wherever that happens (a routing worker),
    and the chain, which is sequential, only concatenates and hashes."""

    runs: tuple[bytes, bytes, bytes, bytes]


def prepare_decisions(
    decisions: Iterable[Decision], *, decided_at_ms: int, position: str
) -> list[PreparedEntry]:
    """Each decision's entry (:func:`decision_entry`), serialized ahead of chaining."""
    return [
        prepare_entry(decision_entry(d, decided_at_ms=decided_at_ms, position=position))
        for d in decisions
    ]


def prepare_entry(content: Mapping[str, Any]) -> PreparedEntry:
    runs: list[dict[str, Any]] = [{}, {}, {}, {}]
    for key in content:
        if key in _CHAIN_KEYS or key == "hash":
            raise ValueError(f"audit content may not set the chain's own field {key!r}")
        runs[bisect.bisect(_CHAIN_KEYS, key)][key] = content[key]
    first, second, third, fourth = (entry_json(run)[1:-1] if run else b"" for run in runs)
    return PreparedEntry((first, second, third, fourth))


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of one chain: its sequence number and hash."""

    chain: str
    seq: int = 0
    hash: str = GENESIS

    def extend(self, prepared: Iterable[PreparedEntry]) -> tuple[ChainHead, list[bytes]]:
        """The head after the entries and each entry's JSON: :func:`entry_json` of its
        content plus ``chain``, ``seq`` and ``prev``, which is what the hash covers, with
        the hash added last (verification re-encodes without it). One call per inbound
        record in the router, so the chain's own field is encoded once for all."""
        chain_field = b'"chain":' + json.dumps(self.chain).encode()
        seq, digest = self.seq, self.hash
        sha256 = hashlib.sha256
        encoded = []
        for entry in prepared:
            seq += 1
            prev = digest.encode()
            first, second, third, fourth = entry.runs
            parts = (
                first,
                chain_field,
                second,
                b'"prev":"' + prev + b'"',
                third,
                b'"seq":' + str(seq).encode(),
                fourth,
            )
            body = b"{" + b",".join([part for part in parts if part]) + b"}"
            digest = sha256(prev + body).hexdigest()
            encoded.append(body[:-1] + b',"hash":"' + digest.encode() + b'"}')
        return ChainHead(self.chain, seq, digest), encoded

    def to_metadata(self) -> str:
        return f"audit:{self.seq}:{self.hash}"

    @classmethod
    def from_metadata(cls, chain: str, metadata: str | None) -> ChainHead:
        """The head recorded in offset metadata; a fresh chain when there is none."""
        if not metadata or not metadata.startswith("audit:"):
            return cls(chain)
        _, seq, digest = metadata.split(":", 2)
        return cls(chain, int(seq), digest)


@dataclass(frozen=True, slots=True)
class ChainProblem:
    chain: str
    position: str  # where the offending entry was read (topic/partition@offset)
    seq: int | None
    kind: str  # removed | reordered | altered
    detail: str


@dataclass
class ChainReport:
    entries: int
    chains: dict[str, int]  # chain -> last good seq
    problems: list[ChainProblem]
    heads: dict[str, ChainHead] = field(default_factory=dict)  # the last good entry of each
    #: Each chain's good entry at the sequence number the verifier was asked to note (the
    #: router's committed head, read before the trail), as a head.
    noted: dict[str, ChainHead] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        return not self.problems

    def _hash_at(self, chain: str, seq: int) -> str | None:
        """The hash of the chain's good entry ``seq``, when the report knows it: the last
        one, or one noted on the way (the trail may have grown past a committed head)."""
        for known in (self.heads.get(chain), self.noted.get(chain)):
            if known is not None and known.seq == seq:
                return known.hash
        return None

    @classmethod
    def merged(cls, reports: Iterable[ChainReport]) -> ChainReport:
        """One report of several over disjoint chains (a chain is read whole by one)."""
        merged = cls(0, {}, [], {})
        for report in reports:
            merged.entries += report.entries
            merged.chains |= report.chains
            merged.problems += report.problems
            merged.heads |= report.heads
            merged.noted |= report.noted
        return merged

    def check_committed(self, committed: Mapping[str, ChainHead]) -> None:
        """Compare each chain's end with the head the router committed (offset metadata):
        entries dropped from the end of a chain show only this way."""
        broken = {p.chain for p in self.problems}
        for chain, head in sorted(committed.items()):
            if chain in broken or head.seq == 0:
                continue
            found = self.heads.get(chain, ChainHead(chain))
            if found.seq < head.seq:
                first, last = found.seq + 1, head.seq
                missing = f"{first}..{last}" if last > first else str(last)
                detail = f"entries {missing} were committed but are missing"
                self.problems.append(ChainProblem(chain, "end of chain", first, "removed", detail))
            elif self._hash_at(chain, head.seq) not in (None, head.hash):
                detail = f"entry {head.seq} is not the one the router committed"
                self.problems.append(
                    ChainProblem(chain, "end of chain", head.seq, "altered", detail)
                )


class ChainVerifier:
    """Checks audit entries as they are read, in read order, holding only each chain's
    last good entry: memory stays the same whatever the trail's length. The first
    problem of each chain is reported; an entry missing at its place is ``reordered``
    when it turns up later in the chain and ``removed`` when it does not, which only
    the rest of the chain can tell, so that verdict waits for it."""

    def __init__(self, note: Mapping[str, int] | None = None) -> None:
        self.entries = 0
        #: Per chain, a sequence number whose entry's hash the report keeps (the head the
        #: router committed), so it can be checked though the chain has grown since.
        self._note = dict(note or {})
        self._noted: dict[str, ChainHead] = {}
        self._heads: dict[str, ChainHead] = {}  # in the order chains first appear
        self._problems: dict[str, ChainProblem] = {}
        self._gaps: dict[str, ChainProblem] = {}  # "removed" unless the entry turns up

    def add(self, position: str, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        chain = str(entry.get("chain", "?"))
        head = self._heads.setdefault(chain, ChainHead(chain))
        if chain in self._problems:
            return
        seq = entry.get("seq")
        gap = self._gaps.get(chain)
        if gap is not None:
            if seq == head.seq + 1:
                detail = f"entry {gap.seq} comes before entry {seq}"
                self._problems[chain] = replace(gap, kind="reordered", detail=detail)
            return
        problem = _problem(head, entry)
        if problem is not None:
            kind, detail = problem
            found = ChainProblem(
                chain, position, seq if isinstance(seq, int) else None, kind, detail
            )
            if kind == "gap":
                self._gaps[chain] = found
            else:
                self._problems[chain] = found
            return
        self._heads[chain] = ChainHead(chain, head.seq + 1, str(entry["hash"]))
        if self._note.get(chain) == head.seq + 1:
            self._noted[chain] = self._heads[chain]

    def report(self) -> ChainReport:
        """What the entries added so far show."""
        problems = []
        for chain, head in self._heads.items():
            problem = self._problems.get(chain) or self._gaps.get(chain)
            if problem is not None and problem.kind == "gap":
                problem = _unmatched_gap(head, problem)
            if problem is not None:
                problems.append(problem)
        heads = dict(self._heads)
        chains = {c: h.seq for c, h in heads.items()}
        return ChainReport(self.entries, chains, problems, heads, dict(self._noted))


def verify_chains(
    entries: Iterable[tuple[str, Mapping[str, Any]]], note: Mapping[str, int] | None = None
) -> ChainReport:
    """Check every chain in read order (:class:`ChainVerifier`)."""
    verifier = ChainVerifier(note)
    for position, entry in entries:
        verifier.add(position, entry)
    return verifier.report()


def _problem(head: ChainHead, entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """What is wrong with ``entry`` as the successor of ``head``: ``gap`` when its
    sequence number is not the next one."""
    seq = entry.get("seq")
    if entry.get("hash") != entry_hash(entry):
        return "altered", f"entry {seq} does not match its hash: its content was changed"
    if not isinstance(seq, int):
        return "altered", "entry has no sequence number"
    if seq != head.seq + 1:
        return "gap", ""
    if entry.get("prev") != head.hash:
        return "altered", f"entry {seq} does not link to entry {head.seq} (replaced)"
    return None


def _unmatched_gap(head: ChainHead, gap: ChainProblem) -> ChainProblem:
    """A gap whose missing entry never turned up later in the chain."""
    seq, expected = gap.seq or 0, head.seq + 1
    if seq > expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
        return replace(gap, kind="removed", detail=f"entry {missing} missing before entry {seq}")
    detail = f"entry {seq} appears again after entry {head.seq}"
    return replace(gap, kind="reordered", detail=detail)
