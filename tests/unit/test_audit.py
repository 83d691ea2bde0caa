"""The audit trail (broker.audit): the entry format, the hash chain and its checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import (
    GENESIS,
    ChainHead,
    ChainReport,
    decision_entry,
    entry_hash,
    entry_json,
    prepare_decisions,
    prepare_entry,
    verify_chains,
)
from broker.connection import KafkaConnection
from broker.policy.decision import Decision, FieldDecision
from broker.policy.model import Treatment


def _chain(length: int) -> list[tuple[str, dict[str, Any]]]:
    contents = [{"decision_id": f"d{i}", "outcome": "withheld"} for i in range(length)]
    _, encoded = ChainHead("action.in.platform-a/0").extend(map(prepare_entry, contents))
    return [(f"audit@{i}", json.loads(entry)) for i, entry in enumerate(encoded)]


def test_an_intact_chain_verifies_and_its_head_round_trips_through_metadata() -> None:
    entries = _chain(5)
    report = verify_chains(entries)
    assert report.intact
    assert report.chains == {"action.in.platform-a/0": 5}
    head = ChainHead("c", 5, entries[-1][1]["hash"])
    assert ChainHead.from_metadata("c", head.to_metadata()) == head
    assert ChainHead.from_metadata("c", None) == ChainHead("c", 0, GENESIS)


def test_a_removed_entry_is_named() -> None:
    entries = _chain(6)
    del entries[2]
    (problem,) = verify_chains(entries).problems
    assert (problem.kind, problem.seq, problem.position) == ("removed", 4, "audit@3")
    assert "entry 3 missing before entry 4" in problem.detail


def test_a_reordered_entry_is_named() -> None:
    entries = _chain(6)
    entries[2], entries[4] = entries[4], entries[2]
    (problem,) = verify_chains(entries).problems
    assert (problem.kind, problem.seq) == ("reordered", 5)
    assert "entry 5 comes before entry 3" in problem.detail


def test_a_repeated_entry_is_named_and_other_chains_still_verify() -> None:
    """The verifier reads as it goes and holds only each chain's head: chains arrive
    interleaved, and a gap's verdict waits for the rest of its chain."""
    first = _chain(5)
    other_contents = [{"decision_id": f"o{i}", "outcome": "delivered"} for i in range(4)]
    _, encoded = ChainHead("action.in.platform-b/1").extend(map(prepare_entry, other_contents))
    other = [(f"other@{i}", json.loads(entry)) for i, entry in enumerate(encoded)]
    first.append(first[1])  # entry 2 again, at the end
    interleaved = [e for pair in zip(first, other, strict=False) for e in pair] + first[4:]
    report = verify_chains(interleaved)
    (problem,) = report.problems
    assert (problem.chain, problem.kind, problem.seq) == ("action.in.platform-a/0", "reordered", 2)
    assert "entry 2 appears again after entry 5" in problem.detail
    assert report.chains == {"action.in.platform-a/0": 5, "action.in.platform-b/1": 4}
    assert report.entries == 10


@given(st.integers(0, 5), st.sampled_from(["outcome", "recipient", "prev", "seq"]))
@settings(max_examples=40)
def test_an_altered_entry_is_named_wherever_it_is(index: int, field: str) -> None:
    entries = _chain(6)
    position, entry = entries[index]
    entries[index] = (position, {**entry, field: 99 if field == "seq" else "tampered"})
    (problem,) = verify_chains(entries).problems
    assert (problem.kind, problem.position) == ("altered", position)


def test_a_replaced_entry_with_a_recomputed_hash_is_named() -> None:
    entries = _chain(4)
    position, entry = entries[2]
    forged = {**entry, "outcome": "delivered"}
    forged["hash"] = entry_hash(forged)  # the forger recomputes the entry's own hash
    entries[2] = (position, forged)
    (problem,) = verify_chains(entries).problems
    assert (problem.kind, problem.position) == ("altered", "audit@3"), "the next link breaks"


def test_entries_cut_from_the_end_show_against_the_committed_head() -> None:
    entries = _chain(5)
    committed = {
        "action.in.platform-a/0": ChainHead("action.in.platform-a/0", 5, entries[-1][1]["hash"])
    }
    whole = verify_chains(entries)
    whole.check_committed(committed)
    assert whole.intact
    cut = verify_chains(entries[:3])
    cut.check_committed(committed)
    (problem,) = cut.problems
    assert (problem.kind, problem.seq) == ("removed", 4)
    assert "entries 4..5 were committed but are missing" in problem.detail


def test_a_trail_grown_past_the_committed_head_is_intact_and_still_checked_there() -> None:
    """audit verify reads the committed heads first, then the trail: a router still at
    work has added entries beyond the heads, which is no loss; the entry at the head is
    still compared with what the router committed."""
    entries = _chain(6)
    chain = "action.in.platform-a/0"
    committed = {chain: ChainHead(chain, 4, entries[3][1]["hash"])}
    grown = verify_chains(entries, note={chain: 4})
    grown.check_committed(committed)
    assert grown.intact, grown.problems
    forged = {chain: ChainHead(chain, 4, "f" * 64)}
    other = verify_chains(entries, note={chain: 4})
    other.check_committed(forged)
    (problem,) = other.problems
    assert (problem.kind, problem.seq) == ("altered", 4)
    assert "entry 4 is not the one the router committed" in problem.detail


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    content=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in {"chain", "prev", "seq", "hash"}),
        _json_values,
        max_size=8,
    ),
    chain=st.text(max_size=12),
    seq=st.integers(0, 10**9),
)
@settings(max_examples=300, deadline=None)
def test_an_entry_prepared_ahead_chains_to_the_entry_json_of_the_whole_entry(
    content: dict[str, Any], chain: str, seq: int
) -> None:
    """The law behind serializing audit content in a routing worker: slotting the chain's
    fields into the prepared runs gives byte for byte the entry format of the entry."""
    head = ChainHead(chain, seq, "ab" * 32)
    new_head, (encoded,) = head.extend([prepare_entry(content)])
    entry = {**content, "chain": chain, "seq": seq + 1, "prev": "ab" * 32}
    assert encoded.startswith(entry_json(entry)[:-1] + b',"hash":"')
    decoded = json.loads(encoded)
    assert decoded["hash"] == new_head.hash == entry_hash(decoded)
    assert (new_head.chain, new_head.seq) == (chain, seq + 1)


def test_audit_content_may_not_set_the_chains_own_fields() -> None:
    for key in ("chain", "prev", "seq", "hash"):
        with pytest.raises(ValueError, match=key):
            prepare_entry({key: 1})


def test_a_decisions_entry_is_its_one_definition_chained() -> None:
    """What the router writes for a decision is decision_entry's content, chained."""
    decision = Decision(
        True,
        "platform-a",
        "ipr-center",
        "SellerIndicator",
        "r-1",
        "pv-1",
        ("share",),
        ("shared by platform-a",),
        (FieldDecision("seller.email", Treatment.HASH, ("share",)),),
    )
    prepared = prepare_decisions([decision, decision], decided_at_ms=7, position="in/0@3")
    head, encoded = ChainHead("c").extend(prepared)
    entries = [json.loads(entry) for entry in encoded]
    content = decision_entry(decision, decided_at_ms=7, position="in/0@3")
    assert {k: entries[0][k] for k in content} == content
    assert [e["seq"] for e in entries] == [1, 2]
    assert head.seq == 2
    assert entries[1]["prev"] == entries[0]["hash"] == entry_hash(entries[0])
    assert verify_chains((str(i), e) for i, e in enumerate(entries)).intact


def test_verify_reads_the_committed_heads_before_the_trail(monkeypatch: Any) -> None:
    """A router at work commits entries while the trail is read: read after the trail,
    its newer heads made those entries look removed. broker.audit_trail reads the heads
    first and hands their sequence numbers to the verifier."""
    import broker.audit_trail as trail

    entries = _chain(6)
    chain = "action.in.platform-a/0"
    calls: list[str] = []

    def heads(_kafka: object, _group: str) -> dict[str, ChainHead]:
        calls.append("heads")
        # What the router has committed when asked: after the trail, entry 6; before, 4.
        if "trail" in calls:
            return {chain: ChainHead(chain, 7, "e" * 64)}
        return {chain: ChainHead(chain, 4, entries[3][1]["hash"])}

    def partitions(*args: object) -> ChainReport:
        calls.append("trail")
        note = args[-1]
        assert isinstance(note, dict)
        return verify_chains(entries, note=note)

    monkeypatch.setattr(trail, "committed_heads", heads)
    monkeypatch.setattr(trail, "_verify_partitions", partitions)
    kafka = KafkaConnection("127.0.0.1:9")
    report = trail.verify_trail(kafka, "action.audit", "action-router", lambda _n: None)
    assert calls == ["heads", "trail"]
    assert report.intact, report.problems
