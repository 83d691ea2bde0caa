"""Provenance that survives redaction: the source's field proof through the real router
core, checked as a recipient checks it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.contract import (
    EVENT_TYPE_HEADER,
    FIELDS_SALTS_HEADER,
    SIGNATURE_HEADER,
    SOURCE_KEY_ID_HEADER,
    SOURCE_PROOF_HEADER,
)
from broker.errors import ProvenanceError
from broker.events import avro_values
from broker.ledger import DeliveryLedger
from broker.policy.engine import PolicySet
from broker.policy.model import Treatment
from broker.provenance import (
    RECORD_LEAF,
    _b64,
    commitment,
    leaf_json,
    sign_fields,
    verify_delivered,
)
from broker.routing import FeedRecord, Inbound, RecordRouter
from broker.signing import header_map, public_keys, sign_record
from policies.demo_keys import demo_signing_key
from tests.members import CODEC, indicator, mixed_stream, signed, signing_kid

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def source_keys(policies: PolicySet) -> dict[str, Ed25519PublicKey]:
    return public_keys(k for m in policies.registry.members for k in m.signing_keys)


@pytest.fixture(scope="session")
def route_one(record_router: RecordRouter) -> Callable[..., Any]:
    def route_one(key: bytes, value: bytes, headers: list[tuple[str, bytes]], source: str) -> Any:
        record = Inbound(f"action.in.{source}", 0, 0, key, value, tuple(headers), 1_795_000_000_000)
        return record_router.route(record, now=NOW, ledger=DeliveryLedger())

    return route_one


def _as_received(feed: FeedRecord) -> tuple[dict[str, Any], str, dict[str, bytes]]:
    """What a recipient's FeedReader holds: the decoded record with plain values."""
    headers = header_map(feed.headers)
    record = avro_values(CODEC.decode(feed.value).record)
    return record, headers[EVENT_TYPE_HEADER].decode(), headers


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10_000))
def test_every_named_delivery_verifies_and_names_what_was_changed(
    seed: int, route_one: Any, source_keys: dict[str, Ed25519PublicKey]
) -> None:
    """Whatever the MOUs did to a record, the recipient verifies that every field it got
    in clear is what the source signed, and the proof names exactly the treated fields."""
    event = mixed_stream(seed % 40 + 1)[-1]
    routed = route_one(*signed(event), event.source_member)
    assert routed.dead_letter is None
    decisions = {d.recipient: d for d in routed.decisions if d.delivered}
    for feed in routed.feeds:
        decision = decisions[feed.topic.removeprefix("action.feed.")]
        record, event_type, headers = _as_received(feed)
        transformed = verify_delivered(record, event_type, headers, source_keys)
        if record["source_member"] != event.source_member:
            assert transformed is None, "anonymous: no proof that would name the source"
            assert SOURCE_KEY_ID_HEADER not in headers
            continue
        assert transformed is not None
        treated = {f.path for f in decision.fields if f.treatment is not Treatment.KEEP}

        def overlaps(path: str, field: str) -> bool:
            return path == field or path.startswith(field + ".") or field.startswith(path + ".")

        assert all(any(overlaps(p, t) for t in treated) for p in transformed), "only treated"
        assert all(any(overlaps(p, t) for p in transformed) for t in treated), "all treated"


def _a_named_delivery_with_a_hidden_field(
    route_one: Any,
) -> tuple[dict[str, Any], str, dict[str, bytes]]:
    event = indicator("platform-a", 3, tlp="GREEN", purpose="IPR_ENFORCEMENT")
    routed = route_one(*signed(event), "platform-a")
    for feed in routed.feeds:
        record, event_type, headers = _as_received(feed)
        proof = json.loads(headers.get(SOURCE_PROOF_HEADER, b"{}"))
        if set(proof.get("commitments", ())) - {RECORD_LEAF} and proof.get("salts"):
            return record, event_type, headers
    raise AssertionError("the example consortium treats some field of a GREEN indicator")


def test_a_changed_clear_value_fails_the_check(
    source_keys: dict[str, Ed25519PublicKey], route_one: Any
) -> None:
    record, event_type, headers = _a_named_delivery_with_a_hidden_field(route_one)
    assert verify_delivered(record, event_type, headers, source_keys)
    forged = dict(record, confidence=(record["confidence"] or 0) + 1)
    with pytest.raises(ProvenanceError, match="not what the source published"):
        verify_delivered(forged, event_type, headers, source_keys)


def test_unhiding_a_field_or_dropping_its_commitment_fails_the_check(
    source_keys: dict[str, Ed25519PublicKey], route_one: Any
) -> None:
    record, event_type, headers = _a_named_delivery_with_a_hidden_field(route_one)
    proof = json.loads(headers[SOURCE_PROOF_HEADER])
    hidden = next(p for p in proof["commitments"] if p != RECORD_LEAF)
    del proof["commitments"][hidden]
    tampered = dict(headers, **{SOURCE_PROOF_HEADER: json.dumps(proof).encode()})
    with pytest.raises(ProvenanceError):
        verify_delivered(record, event_type, tampered, source_keys)


def test_a_commitment_reveals_nothing_without_its_salt() -> None:
    """Two commitments to the same low-entropy value differ: the salt hides the value."""
    salt_a, salt_b = b"a" * 16, b"b" * 16
    assert commitment("seller.country", "CN", salt_a) != commitment("seller.country", "CN", salt_b)
    assert commitment("seller.country", "CN", salt_a) != commitment("seller.country", "US", salt_a)


def test_timestamps_commit_at_avro_precision() -> None:
    """The source commits before encoding (microseconds), the recipient after (millis)."""
    fine = dt.datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=dt.UTC)
    coarse = dt.datetime(2026, 1, 1, 0, 0, 0, 999_000, tzinfo=dt.UTC)
    assert leaf_json(fine) == leaf_json(coarse)


def test_an_inconsistent_inbound_proof_is_a_dead_letter(route_one: Any) -> None:
    event = indicator("platform-a", 4)
    key, value, headers = signed(event)
    other = sign_fields(
        dict(event.to_avro(), confidence=1), "SellerIndicator", demo_signing_key("platform-a")
    )
    swapped = [h for h in headers if not h[0].startswith("action.fields")] + other
    routed = route_one(key, value, swapped, "platform-a")
    assert routed.dead_letter is not None
    assert routed.dead_letter.reason == "signature.fields_invalid"
    salts = dict(headers)[FIELDS_SALTS_HEADER]
    short = [h for h in headers if h[0] != FIELDS_SALTS_HEADER]
    short.append((FIELDS_SALTS_HEADER, salts.replace(b'"confidence"', b'"confidenc"')))
    reason = route_one(key, value, short, "platform-a").dead_letter
    assert reason is not None
    assert reason.reason == "signature.fields_invalid"


def test_records_without_a_field_proof_are_routed_and_say_so(
    route_one: Any, source_keys: dict[str, Ed25519PublicKey]
) -> None:
    event = indicator("platform-a", 5, tlp="GREEN")
    key, value, _ = signed(event)
    plain = sign_record(value, demo_signing_key("platform-a"), signing_kid("platform-a"))  # v1
    routed = route_one(key, value, plain, "platform-a")
    assert routed.dead_letter is None
    assert routed.feeds
    for feed in routed.feeds:
        record, event_type, got = _as_received(feed)
        assert verify_delivered(record, event_type, got, source_keys) is None


_leaf_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.sampled_from(list(Treatment)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def test_the_leaf_format_is_frozen() -> None:
    """Commitments already signed must keep verifying: the leaf format's bytes never
    change (sorted keys, no spaces, UTF-8 text, timestamps as epoch milliseconds)."""
    when = dt.datetime(2026, 11, 20, 8, 0, 0, 123456, tzinfo=dt.UTC)
    assert leaf_json({"b": [1, "\u00e9"], "a": None, "t": when}) == (
        b'{"a":null,"b":[1,"\xc3\xa9"],"t":1795161600123}'
    )
    assert leaf_json('caf\u00e9 "q"') == b'"caf\xc3\xa9 \\"q\\""'
    assert leaf_json(Treatment.HASH) == b'"hash"'


@given(
    values=st.dictionaries(st.text(max_size=8), _leaf_values, max_size=6),
    salt=st.binary(min_size=16, max_size=16),
)
def test_a_proofs_commitments_are_commitment_then_base64url(
    values: dict[str, Any], salt: bytes
) -> None:
    from broker.provenance import _commitments

    salts = {path: salt for path in values}
    expected = {path: _b64(commitment(path, value, salt)) for path, value in values.items()}
    assert _commitments(values, salts) == expected


@given(st.binary(max_size=40))
def test_base64url_round_trips_as_the_base64_module_writes_it(data: bytes) -> None:
    import base64

    from broker.provenance import _b64, _unb64

    assert _b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert _unb64(_b64(data)) == data


@pytest.mark.parametrize("text", ["not base64!", "ünïcode", "A"])
def test_unreadable_base64url_raises_value_error(text: str) -> None:
    from broker.provenance import _unb64

    with pytest.raises(ValueError, match=r"(?i)padding|ascii|base64|characters"):
        _unb64(text)


def test_a_salt_with_a_character_outside_base64_is_a_dead_letter(route_one: Any) -> None:
    """A lenient decoder would skip the stray character, verify, and forward the salt's
    text to recipients as it came: a quote in it would break the proof header's JSON."""
    key, value, headers = signed(indicator("platform-a", 8))
    salts = json.loads(dict(headers)[FIELDS_SALTS_HEADER])
    salts["confidence"] = salts["confidence"][:5] + '"' + salts["confidence"][5:]
    tampered = [h for h in headers if h[0] != FIELDS_SALTS_HEADER]
    tampered.append((FIELDS_SALTS_HEADER, json.dumps(salts).encode()))
    dead = route_one(key, value, tampered, "platform-a").dead_letter
    assert dead is not None
    assert dead.reason == "signature.fields_invalid"
    assert "unreadable" in dead.detail


_paths = st.from_regex(
    r"@record|[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z_][A-Za-z0-9_]{0,8})?", fullmatch=True
)
_base64url = st.binary(max_size=33).map(_b64)


def test_the_sdk_signs_once_and_the_proof_covers_the_encoded_record(route_one: Any) -> None:
    """Scheme v2: no record-wide signature; the field proof's one signature covers the
    exact bytes, so altering them is a bad signature, not just a bad proof."""
    event = indicator("platform-a", 6, tlp="GREEN")
    key, value, headers = signed(event)
    names = {name for name, _ in headers}
    assert SIGNATURE_HEADER not in names
    assert RECORD_LEAF in json.loads(dict(headers)[FIELDS_SALTS_HEADER])
    assert route_one(key, value, headers, "platform-a").dead_letter is None
    altered = value.replace(b"seller6@", b"seller7@")
    assert altered != value
    dead = route_one(key, altered, headers, "platform-a").dead_letter
    assert dead is not None
    assert dead.reason == "signature.invalid"


def test_a_proof_stripped_of_its_record_commitment_is_a_dead_letter(route_one: Any) -> None:
    key, value, headers = signed(indicator("platform-a", 7))
    salts = json.loads(dict(headers)[FIELDS_SALTS_HEADER])
    del salts[RECORD_LEAF]
    stripped = [h for h in headers if h[0] != FIELDS_SALTS_HEADER]
    stripped.append((FIELDS_SALTS_HEADER, json.dumps(salts).encode()))
    dead = route_one(key, value, stripped, "platform-a").dead_letter
    assert dead is not None
    assert dead.reason == "signature.fields_invalid"


def test_records_of_scheme_v1_still_route_and_verify_for_recipients(
    route_one: Any, source_keys: dict[str, Ed25519PublicKey]
) -> None:
    """A publisher of the first scheme: the record-wide signature and a field proof
    without the record leaf. Both are checked, and recipients verify what they get."""
    event = indicator("platform-a", 8, tlp="GREEN")
    key, value, _ = signed(event)
    seen = event.to_avro()
    signing_key = demo_signing_key("platform-a")
    v1 = sign_record(value, signing_key, signing_kid("platform-a")) + sign_fields(
        seen, "SellerIndicator", signing_key
    )
    routed = route_one(key, value, v1, "platform-a")
    assert routed.dead_letter is None
    named = [f for f in routed.feeds if SOURCE_KEY_ID_HEADER in header_map(f.headers)]
    assert named
    for feed in named:
        record, event_type, got = _as_received(feed)
        assert RECORD_LEAF not in json.loads(got[SOURCE_PROOF_HEADER])["commitments"]
        assert verify_delivered(record, event_type, got, source_keys) is not None
    bad = [*v1[:1], (SIGNATURE_HEADER, bytes(64)), *v1[2:]]
    dead = route_one(key, value, bad, "platform-a").dead_letter
    assert dead is not None
    assert dead.reason == "signature.invalid", "a record-wide signature is checked if present"
