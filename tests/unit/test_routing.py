"""Routing one record (broker.routing): feeds, dead letters, retractions, signatures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.codec import AvroCodec
from broker.contract import DECISION_ID_HEADER, SOURCE_KEY_ID_HEADER
from broker.errors import ProvenanceError
from broker.ledger import DeliveryLedger
from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.routing import Inbound, RecordRouter, Routed
from broker.settings import load_settings
from broker.signing import header_map, sign_record
from policies.demo_keys import demo_signing_key
from tests.members import CODEC, indicator, retraction, signed, signing_kid

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def inbound(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    offset: int = 0,
) -> Inbound:
    return Inbound(topic, 0, offset, key, value, tuple(headers), 1_795_000_000_000)


@pytest.fixture(scope="session")
def route(policies: PolicySet, match_key: MatchTokenKey) -> Callable[..., Routed]:
    def route(
        record: Inbound, ledger: DeliveryLedger | None = None, router: RecordRouter | None = None
    ) -> Routed:
        router = router or RecordRouter(policies, CODEC, match_key)
        return router.route(record, now=NOW, ledger=ledger or DeliveryLedger())

    return route


def test_feeds_carry_exactly_the_engine_decisions(
    policies: PolicySet, match_key: MatchTokenKey, route: Any
) -> None:
    event = indicator("platform-a", 7, tlp="GREEN")
    routed = route(inbound("action.in.platform-a", *signed(event)))
    assert routed.dead_letter is None
    expected = policies.evaluate_all(
        event.to_avro(), "SellerIndicator", now=NOW, match_key=match_key
    )
    assert [(d.recipient, d.delivered) for d in routed.decisions] == [
        (d.recipient, d.delivered) for d in expected
    ]
    delivered = {d.recipient: d for d in expected if d.delivered}
    assert {f.topic for f in routed.feeds} == {f"action.feed.{r}" for r in delivered}
    for feed in routed.feeds:
        recipient = feed.topic.removeprefix("action.feed.")
        decoded = CODEC.decode(feed.value).record
        sent = delivered[recipient].record
        assert sent is not None, "a delivered decision carries its record"
        assert decoded["seller"]["email"] == sent["seller"]["email"]
        assert dict(feed.headers)[DECISION_ID_HEADER] == delivered[recipient].decision_id.encode()
        if sent["source_member"] == "platform-a":
            assert SOURCE_KEY_ID_HEADER in dict(feed.headers), "named: the source's proof"
        else:
            assert b"platform-a" not in b"".join(v for _, v in feed.headers), "no source header"
    assert routed.ledger_update is not None
    assert set(routed.ledger_update[1].recipients) == set(delivered)


@pytest.fixture(scope="session")
def dead_reason(route: Any) -> Callable[..., str]:
    def dead_reason(record: Inbound, router: RecordRouter | None = None) -> str:
        routed = route(record, router=router)
        assert routed.dead_letter is not None
        assert not routed.feeds
        assert not routed.decisions
        return str(routed.dead_letter.reason)

    return dead_reason


def test_bad_input_becomes_a_dead_letter_with_a_reason(
    policies: PolicySet, match_key: MatchTokenKey, dead_reason: Any
) -> None:
    key, value, headers = signed(indicator("platform-a"))
    topic = "action.in.platform-a"
    assert dead_reason(inbound(topic, key, None, headers)) == "record.empty"
    assert dead_reason(inbound(topic, key, b"\x07junk", headers)) == "wire.bad_magic"
    assert dead_reason(inbound(topic, key, value[:-3], headers)) in (
        "avro.truncated",
        "avro.corrupt",
    )
    assert dead_reason(inbound("action.in.platform-b", key, value, headers)) == (
        "source.topic_mismatch"
    )
    assert dead_reason(inbound("action.in.nobody", key, value, headers)) == "source.unknown_topic"
    assert dead_reason(inbound(topic, key, value, [])) == "signature.missing"
    forged = sign_record(value, demo_signing_key("platform-b"), signing_kid("platform-b"))
    assert dead_reason(inbound(topic, key, value, forged)) == "signature.wrong_signer"
    altered = value.replace(b"seller0@", b"seller9@")  # still a valid event: only the
    assert altered != value  # signature can tell
    assert dead_reason(inbound(topic, key, altered, headers)) == "signature.invalid"
    small = RecordRouter(policies, AvroCodec(CODEC.catalog, max_record_bytes=64), match_key)
    assert dead_reason(inbound(topic, key, value, headers), small) == "record.too_large"


def test_a_schema_valid_but_invalid_event_is_a_dead_letter(route: Any) -> None:
    record = indicator("platform-a").to_avro()
    record["seller"]["email"] = "not an e-mail"
    value = CODEC.encode("SellerIndicator", record)
    headers = sign_record(value, demo_signing_key("platform-a"), signing_kid("platform-a"))
    routed = route(inbound("action.in.platform-a", b"k", value, headers))
    assert routed.dead_letter is not None
    assert routed.dead_letter.reason == "event.invalid"
    assert "seller.email" in routed.dead_letter.detail


def test_a_retraction_reaches_exactly_the_recipients_of_the_original(
    policy_copy: Path, match_key: MatchTokenKey, route: Any
) -> None:
    ledger = DeliveryLedger()
    original = indicator("platform-b", 3, tlp="GREEN", confidence=95)
    first = route(inbound("action.in.platform-b", *signed(original)), ledger)
    assert first.ledger_update is not None
    ledger.stage(*first.ledger_update)
    ledger.commit()
    received = {d.recipient for d in first.decisions if d.delivered}
    assert received == {"ipr-center", "platform-a", "platform-c"}
    # The MOU changes: platform-b no longer shares with platforms at all.
    mou = policy_copy / "mou" / "platform-b.yaml"
    text = mou.read_text()
    mou.write_text(text[: text.index("  - id: pb.to-platforms")] + text[text.index("accepts:") :])
    changed = RecordRouter(load_policies(policy_copy), CODEC, match_key)
    retracted = route(
        inbound("action.in.platform-b", *signed(retraction(original))), ledger, changed
    )
    assert {d.recipient for d in retracted.decisions if d.delivered} == received
    by_topic = {f.topic: CODEC.decode(f.value).record for f in retracted.feeds}
    assert by_topic["action.feed.platform-a"]["source_member"] == "anonymous-platform"
    assert by_topic["action.feed.ipr-center"]["source_member"] == "platform-b"
    assert by_topic["action.feed.platform-a"]["explanation"] is None, "policy no longer allows"
    unknown = route(inbound("action.in.platform-b", *signed(retraction(indicator("platform-b")))))
    assert not unknown.feeds
    assert all("did not receive" in d.reasons[0] for d in unknown.decisions)


def test_a_retraction_has_its_own_record_and_decision_id() -> None:
    from broker.contract import record_id_of

    original = indicator("platform-b", 4)
    withdrawn = retraction(original).to_avro()
    assert record_id_of(withdrawn) == str(withdrawn["retraction_id"])
    assert record_id_of(original.to_avro()) == str(original.to_avro()["indicator_id"])


def test_the_router_signs_each_feed_record_for_its_recipient_and_decision(
    policies: PolicySet, match_key: MatchTokenKey, route: Any
) -> None:
    from broker.router_keys import router_signing_key
    from broker.signing import public_keys, verify_feed_record

    settings = load_settings(demo_keys=True)
    signer = RecordRouter(
        policies, CODEC, match_key, router_key=router_signing_key(policies.registry, settings)
    )
    routed = route(inbound("action.in.platform-a", *signed(indicator(tlp="GREEN"))), router=signer)
    keys = public_keys(policies.registry.router_keys)
    feed = routed.feeds[0]
    headers = header_map(feed.headers)
    recipient = feed.topic.removeprefix("action.feed.")
    decision = headers[DECISION_ID_HEADER].decode()
    verify_feed_record(feed.value, headers, decision, recipient, keys)
    elsewhere = next(m for m in policies.members if m not in (recipient, "platform-a"))
    wrong = [
        (feed.value, headers, decision, elsewhere, "router_signature.invalid"),
        (feed.value + b"x", headers, decision, recipient, "router_signature.invalid"),
        (feed.value, headers, "0" * 32, recipient, "router_signature.invalid"),
        (feed.value, {}, decision, recipient, "router_signature.missing"),
    ]
    for value, hdrs, dec, member, reason in wrong:
        with pytest.raises(ProvenanceError) as info:
            verify_feed_record(value, hdrs, dec, member, keys)
        assert info.value.reason == reason
