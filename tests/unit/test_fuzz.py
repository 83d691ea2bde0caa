"""Hostile input: the policy loader, the importers and the router's core never crash; every
bad input ends in a typed error, a rejected line or a dead letter."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import PolicyError
from broker.events import SellerIndicator
from broker.ledger import DeliveryLedger
from broker.policy.loader import load_policies
from broker.routing import UNPROCESSABLE, Inbound, RecordRouter, Writes
from policies import POLICY_DIR
from producers.importing import Accepted, Rejected, read_events
from tests import hostile
from tests.members import indicator, signed

MOU_TEXT = (POLICY_DIR / "mou" / "platform-a.yaml").read_text()


def _load_problems(folder: Path) -> list[str] | None:
    """None when the folder loads, else the problems listed (any other exception fails)."""
    try:
        load_policies(folder)
    except PolicyError as exc:
        return exc.problems
    return None


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.floats(allow_nan=False)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(position=st.integers(0, len(MOU_TEXT)), junk=st.text(max_size=30), cut=st.integers(0, 40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_mangled_mou_is_a_policy_error_or_loads(position: int, junk: str, cut: int) -> None:
    mangled = MOU_TEXT[:position] + junk + MOU_TEXT[position + cut :]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "p"
        shutil.copytree(POLICY_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (copy / "mou" / "platform-a.yaml").write_text(mangled, encoding="utf-8")
        problems = _load_problems(copy)
        assert problems is None or problems, "every refusal lists its problems"
        assert all("platform-a.yaml" in p or "members.yaml" in p for p in problems or [])


@given(document=yaml_values)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_yaml_document_as_an_mou_is_handled(document: object) -> None:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "p"
        shutil.copytree(POLICY_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (copy / "mou" / "platform-c.yaml").write_text(yaml.safe_dump(document))
        problems = _load_problems(copy)
        assert problems is None or problems


@given(lines=st.lists(st.one_of(st.text(max_size=80), yaml_values.map(json.dumps)), max_size=8))
@settings(max_examples=80, deadline=None)
def test_importers_turn_every_line_into_an_event_or_a_rejection(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".jsonl", ".csv"):
            path = Path(tmp) / f"in{suffix}"
            header = "seller.account_id,product_categories,confidence\n" if suffix == ".csv" else ""
            path.write_text(
                header + "\n".join(line.replace("\r", " ") for line in lines) + "\n",
                encoding="utf-8",
            )
            now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
            for item in read_events(path, SellerIndicator, "platform-a", now):
                assert isinstance(item, Accepted | Rejected)
                if isinstance(item, Rejected):
                    assert item.reason


@given(data=st.binary(max_size=400), flips=st.lists(st.integers(0, 10_000), max_size=6))
@settings(max_examples=150, deadline=None)
def test_the_router_core_dead_letters_any_garbage(
    data: bytes, flips: list[int], record_router: RecordRouter
) -> None:
    key, value, headers = signed(indicator("platform-a"))
    mutated = bytearray(value)
    for flip in flips:
        mutated[flip % len(mutated)] ^= 0xFF
    for candidate in (data, bytes(mutated), b"\x00\x00\x00\x00\x01" + data):
        inbound = Inbound("action.in.platform-a", 0, 0, key, candidate, tuple(headers), 0)
        routed = record_router.route(inbound, now=dt.datetime.now(dt.UTC), ledger=DeliveryLedger())
        if candidate == value:
            continue
        assert routed.dead_letter is not None, "only the signed original may pass"
        assert routed.dead_letter.reason
        assert not routed.feeds


HOSTILE = hostile.corpus()


@given(
    base=st.integers(0, len(HOSTILE) - 1),
    other=st.integers(0, len(HOSTILE) - 1),
    rng=st.randoms(use_true_random=False),
)
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_mutation_of_a_signed_record_raises_or_passes_unless_it_is_still_the_original(
    base: int, other: int, rng: random.Random, record_router: RecordRouter
) -> None:
    """A member's mutated records (values, headers, both; bit flips, truncations,
    splices, huge declared lengths, invalid UTF-8, deep JSON, giant or many headers) each
    end as an anticipated dead letter; none makes routing raise (record.unprocessable
    counts as a failure here: it means a path the router does not yet check); and only
    the signed bytes themselves are routed."""
    sample = HOSTILE[base]
    mutated = hostile.mutate(sample, HOSTILE[other], rng)
    writes = record_router.writes(
        mutated.inbound(), now=dt.datetime.now(dt.UTC), ledger=DeliveryLedger(), decided_at_ms=0
    )
    assert isinstance(writes, Writes)
    if writes.dead_letter is None:
        assert mutated.value == sample.value, "only the signed bytes may be routed"
        assert mutated.topic == sample.topic
        return
    assert writes.dead_letter.reason != UNPROCESSABLE, writes.dead_letter.detail
    assert not writes.feeds
