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

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.policy.decision import Decision

GENESIS = "0" * 64


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(str(entry.get("prev", "")).encode() + canonical(body)).hexdigest()


def decision_entry(decision: Decision, *, decided_at_ms: int, position: str) -> dict[str, Any]:
    """The audit content of one decision (chain fields are added by :class:`ChainHead`)."""
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


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of one chain: its sequence number and hash."""

    chain: str
    seq: int = 0
    hash: str = GENESIS

    def append(self, content: Mapping[str, Any]) -> tuple[ChainHead, dict[str, Any]]:
        """The chained entry for ``content`` and the head after it."""
        entry = {**content, "chain": self.chain, "seq": self.seq + 1, "prev": self.hash}
        entry["hash"] = entry_hash(entry)
        return ChainHead(self.chain, self.seq + 1, entry["hash"]), entry

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

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chains(entries: Iterable[tuple[str, Mapping[str, Any]]]) -> ChainReport:
    """Check every chain in read order; report the first problem of each chain."""
    heads: dict[str, ChainHead] = {}
    broken: set[str] = set()
    problems: list[ChainProblem] = []
    count = 0
    for position, entry in entries:
        count += 1
        chain = str(entry.get("chain", "?"))
        if chain in broken:
            continue
        head = heads.get(chain, ChainHead(chain))
        seq = entry.get("seq")
        problem = _problem(head, entry, seq)
        if problem is not None:
            kind, detail = problem
            problems.append(ChainProblem(chain, position, seq if isinstance(seq, int) else None,
                                         kind, detail))  # fmt: skip
            broken.add(chain)
            continue
        heads[chain] = ChainHead(chain, head.seq + 1, str(entry["hash"]))
    return ChainReport(count, {c: h.seq for c, h in heads.items()}, problems)


def _problem(head: ChainHead, entry: Mapping[str, Any], seq: Any) -> tuple[str, str] | None:
    if entry.get("hash") != entry_hash(entry):
        return "altered", f"entry {seq} does not match its hash: its content was changed"
    if not isinstance(seq, int):
        return "altered", "entry has no sequence number"
    expected = head.seq + 1
    if seq > expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
        return "removed", f"entry {missing} missing before entry {seq}"
    if seq < expected:
        return "reordered", f"entry {seq} appears after entry {head.seq}"
    if entry.get("prev") != head.hash:
        return "altered", f"entry {seq} does not link to entry {head.seq} (replaced)"
    return None
