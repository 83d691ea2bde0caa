"""An embargo means later, not never: a record withheld only by an embargo is held and
decided again, under the policies in force then, when the embargo ends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from broker.embargo import EmbargoBook, HeldRecord
from broker.ledger import DeliveryLedger, ledger_key
from broker.match_tokens import MatchTokenKey
from broker.policy.loader import load_policies
from broker.routing import Inbound, RecordRouter, Writes
from policies import POLICY_DIR
from tests.members import CODEC, indicator, retraction, signed

PUBLISHED = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
DURING = PUBLISHED + dt.timedelta(minutes=20)  # platform-b's embargo for platforms: 60 min
AFTER = PUBLISHED + dt.timedelta(minutes=61)


def _inbound(event: object) -> Inbound:
    key, value, headers = signed(event)  # type: ignore[arg-type]
    return Inbound("action.in.platform-b", 0, 3, key, value, tuple(headers), 1)


def _route(router: RecordRouter, inbound: Inbound, ledger: DeliveryLedger) -> Writes:
    writes = router.writes(inbound, now=DURING, ledger=ledger, decided_at_ms=1)
    assert isinstance(writes, Writes)
    if writes.ledger_update is not None:
        ledger.stage(*writes.ledger_update)
        ledger.commit()
    return writes


def test_a_record_withheld_only_by_an_embargo_is_held_then_delivered_once(
    match_key: MatchTokenKey,
) -> None:
    router = RecordRouter(load_policies(POLICY_DIR), CODEC, match_key)
    event = indicator("platform-b", 3, tlp="GREEN", confidence=95, published_at=PUBLISHED)
    ledger = DeliveryLedger()
    first = _route(router, _inbound(event), ledger)
    assert "platform-a" not in {f.topic.removeprefix("action.feed.") for f in first.feeds}
    assert first.embargo is not None
    key, held = first.embargo
    assert held is not None
    end_ms = int((PUBLISHED + dt.timedelta(minutes=60)).timestamp() * 1000)
    assert held.due == {"platform-a": end_ms, "platform-c": end_ms}
    assert HeldRecord.decode(held.encode()) == held
    # Not yet: nothing released, the entry stays.
    book = EmbargoBook()
    book.load(key, held.encode())
    assert book.due(end_ms - 1, {("action.in.platform-b", 0)}) == []
    assert book.due(end_ms, {("action.in.platform-b", 1)}) == [], "another instance's"
    released = router.released(key, held, now=AFTER, ledger=ledger, decided_at_ms=2)
    delivered = {f.topic.removeprefix("action.feed.") for f in released.feeds}
    assert delivered == {"platform-a", "platform-c"}
    assert released.embargo == (key, None), "nothing left: a tombstone"
    assert released.ledger_update is not None
    ledger_entry = released.ledger_update[1]
    assert {"platform-a", "platform-c", "ipr-center"} <= set(ledger_entry.recipients)
    assert ledger_entry.recipients["platform-a"] == "anonymous-platform"


def test_an_mou_revoked_during_the_embargo_stops_the_held_record(
    policy_copy: Path, match_key: MatchTokenKey
) -> None:
    router = RecordRouter(load_policies(POLICY_DIR), CODEC, match_key)
    event = indicator("platform-b", 4, tlp="GREEN", confidence=95, published_at=PUBLISHED)
    first = _route(router, _inbound(event), DeliveryLedger())
    assert first.embargo is not None
    key, held = first.embargo
    assert held is not None
    mou = policy_copy / "mou" / "platform-b.yaml"
    mou.write_text(
        mou.read_text().replace(
            "to: {sectors: [platform]}\n    max_tlp: GREEN\n    when:",
            "to: {members: []}\n    max_tlp: GREEN\n    when:",
        )
    )
    revoked = RecordRouter(load_policies(policy_copy), CODEC, match_key)
    released = revoked.released(key, held, now=AFTER, ledger=DeliveryLedger(), decided_at_ms=2)
    assert not released.feeds
    assert all(not d.delivered for d in released.decisions)
    assert released.embargo == (key, None)


def test_a_retraction_ends_what_is_still_held_of_its_indicator(match_key: MatchTokenKey) -> None:
    router = RecordRouter(load_policies(POLICY_DIR), CODEC, match_key)
    event = indicator("platform-b", 5, tlp="GREEN", confidence=95, published_at=PUBLISHED)
    ledger = DeliveryLedger()
    first = _route(router, _inbound(event), ledger)
    assert first.embargo is not None
    withdrawn = _route(router, _inbound(retraction(event, retracted_at=DURING)), ledger)
    assert withdrawn.embargo == (first.embargo[0], None)
    assert ledger.get(ledger_key("platform-b", str(event.to_avro()["indicator_id"])))
