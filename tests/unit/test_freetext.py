"""Identifiers in free text get the treatment of their structured field, for each
recipient: a rule that hashes ``seller.email`` cannot be undone by writing the address
into ``display_name``, an evidence description or a retraction's explanation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.events import EVENT_TYPES
from broker.ledger import DeliveryLedger
from broker.match_tokens import MatchTokenKey, match_token
from broker.normalize import normalize_email
from broker.policy.engine import PolicySet
from broker.policy.freetext import STRUCTURED, find_identifiers, scrub
from broker.policy.model import Treatment
from broker.routing import Inbound, RecordRouter
from tests.members import indicator, signed
from tests.strategies import emails, phones

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def test_each_kind_is_found_and_replaced_as_its_field_is_treated(match_key: MatchTokenKey) -> None:
    text = (
        "write to Seller@Shop.example or +86 138 0013 8000, store https://fake.example/x "
        "from 203.0.113.9, card 4111 1111 1111 1111"
    )
    kinds = [f.kind for f in find_identifiers(text)]
    assert kinds == ["email", "phone", "url", "ip", "payment"]
    treatments = {
        "email": Treatment.HASH,
        "phone": Treatment.GENERALIZE,
        "url": Treatment.KEEP,
        "ip": Treatment.DROP,
        "payment": Treatment.MASK,
    }
    out = scrub(text, treatments, match_key)
    assert match_token(match_key, "email", "seller@shop.example") in out, "the field's own token"
    assert "Seller@Shop.example" not in out
    assert "or +86, store" in out, "generalized to the country code"
    assert "1380013" not in out
    assert "https://fake.example/x" in out, "kept where the field is kept"
    assert "203.0.113.9" not in out
    assert "[ip withheld]" in out
    assert "************1111" in out


def test_plain_text_is_left_alone(match_key: MatchTokenKey) -> None:
    for text in ("listing 88 removed on 2026-11-20", "version 3.14, 12:30:45", "shoes size 42"):
        assert find_identifiers(text) == []
        assert scrub(text, {}, match_key) == text


@pytest.fixture(scope="session")
def delivered_bytes(record_router: RecordRouter) -> Callable[..., tuple[bytes, dict[str, Any]]]:
    def delivered_bytes(record: dict[str, Any], recipient: str) -> tuple[bytes, dict[str, Any]]:
        """Everything ``recipient`` is sent for ``record`` as the router sends it: the feed
        record's value and every header, and the field treatments it got."""
        event = EVENT_TYPES["SellerIndicator"].from_avro(record)
        key, value, headers = signed(event)
        inbound = Inbound(f"action.in.{event.source_member}", 0, 0, key, value, tuple(headers), 0)
        routed = record_router.route(inbound, now=NOW, ledger=DeliveryLedger())
        assert routed.dead_letter is None, routed.dead_letter
        decision = next(d for d in routed.decisions if d.recipient == recipient)
        feeds = [f for f in routed.feeds if f.topic == f"action.feed.{recipient}"]
        if not decision.delivered or not feeds:
            return b"", {}
        (feed,) = feeds
        sent = feed.value + b"".join(name.encode() + value for name, value in feed.headers)
        return sent, {f.path: f.treatment for f in decision.fields}

    return delivered_bytes


@given(
    email=emails,
    phone=phones,
    recipient_index=st.integers(0, 6),
    source=st.sampled_from(["platform-a", "platform-b", "payments-x", "brand-owner"]),
    where=st.sampled_from(["display_name", "evidence", "brands"]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_identifier_a_recipients_rules_withhold_appears_in_clear_in_free_text(
    email: str,
    phone: str,
    recipient_index: int,
    source: str,
    where: str,
    policies: PolicySet,
    delivered_bytes: Any,
) -> None:
    """For any record and recipient, an identifier whose structured field that recipient
    gets hashed, masked, generalized, encrypted or dropped appears nowhere in the bytes
    it is sent (the feed record and its headers), however it was slipped into free text."""
    recipients = [m.id for m in policies.registry.members if m.id != source]
    recipient = recipients[recipient_index % len(recipients)]
    hidden = f"reach me at {email} or {phone} today"
    record = indicator(source, 1, tlp="GREEN", confidence=95).to_avro()
    if where == "display_name":
        record["seller"] = {**record["seller"], "display_name": hidden}
    elif where == "evidence":
        record["evidence"] = [{"kind": "OTHER", "reference": "ref-1", "description": hidden}]
    else:
        record["brands"] = ["Acme", hidden]
    encoded, treatments = delivered_bytes(record, recipient)
    if not encoded:
        return
    normalized = normalize_email(email)
    for kind, raw, value in (("email", email, normalized), ("phone", phone, phone)):
        if treatments.get(STRUCTURED[kind]) is Treatment.KEEP:
            continue
        for form in {raw, value, raw.lower()}:
            assert form.encode() not in encoded, (recipient, kind, where, treatments)


def test_a_retractions_explanation_gets_the_treatments_of_the_indicator_rules(
    policies: PolicySet, match_key: MatchTokenKey
) -> None:
    """platform-a keeps the explanation for platforms but hashes the seller's e-mail for
    them: an address in the explanation arrives as the same match token. No indicator
    rule to payments-y: every identifier in the text is withheld there."""
    record = {
        "retraction_id": "5d0c4c1e-3f65-4c59-9a53-0d1f0c6a0502",
        "indicator_id": "5d0c4c1e-3f65-4c59-9a53-0d1f0c6a0501",
        "source_member": "platform-a",
        "retracted_at": NOW - dt.timedelta(hours=1),
        "reason": "MISTAKE",
        "tlp": "GREEN",
        "explanation": "wrong seller: it was Other.Seller@shop.example",
    }
    received = {"platform-b": "platform-a", "payments-y": "platform-a"}
    decisions = {
        d.recipient: d
        for d in policies.retraction_decisions(record, received, now=NOW, match_key=match_key)
    }
    to_platform = decisions["platform-b"].record
    assert to_platform is not None
    token = match_token(match_key, "email", "other.seller@shop.example")
    assert to_platform["explanation"] == f"wrong seller: it was {token}"
    assert decisions["payments-y"].record is not None
    assert decisions["payments-y"].record["explanation"] is None, "no rule keeps it there"
