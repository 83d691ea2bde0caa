"""Record ids belong to their source, and a record is routed once (broker.claims), and the
delivery ledger remembers every indicator's source."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.claims import (
    ID_REUSED,
    ID_TAKEN,
    REPLAY,
    STALE,
    Claim,
    RecordClaims,
    content_digest,
)
from broker.ledger import DeliveryLedger, LedgerEntry, ledger_key

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_800_000_000_000


def _claimed(source: str, record_id: str, value: bytes, at_ms: int = NOW_MS) -> RecordClaims:
    claims = RecordClaims(retention_days=30)
    claims.stage(record_id, Claim(source, content_digest(value), at_ms))
    claims.commit()
    return claims


def _reason(
    claims: RecordClaims, source: str, record_id: str, value: bytes, event_ms: int | None = NOW_MS
) -> str | None:
    refusal = claims.refusal(source, record_id, value, event_ms=event_ms, now_ms=NOW_MS)
    return refusal[0] if refusal else None


def test_a_second_record_with_a_claimed_id_is_refused_with_the_reason_that_fits() -> None:
    claims = _claimed("platform-a", "r-1", b"original")
    assert _reason(claims, "platform-b", "r-1", b"decoy") == ID_TAKEN
    assert _reason(claims, "platform-b", "r-1", b"original") == ID_TAKEN
    assert _reason(claims, "platform-a", "r-1", b"original") == REPLAY
    assert _reason(claims, "platform-a", "r-1", b"changed") == ID_REUSED
    assert _reason(claims, "platform-a", "r-2", b"new") is None


def test_staged_claims_count_at_once_and_go_with_an_abort() -> None:
    claims = RecordClaims(retention_days=30)
    claims.stage("r-1", Claim("platform-a", content_digest(b"x"), NOW_MS))
    assert _reason(claims, "platform-a", "r-1", b"x") == REPLAY, "a replay in the same batch"
    claims.abort()
    assert _reason(claims, "platform-a", "r-1", b"x") is None
    assert len(claims) == 0


def test_a_record_older_than_the_window_is_stale_so_a_replay_always_meets_its_claim() -> None:
    claims = RecordClaims(retention_days=30)
    assert _reason(claims, "platform-a", "r-1", b"x", NOW_MS - 31 * DAY_MS) == STALE
    assert _reason(claims, "platform-a", "r-1", b"x", NOW_MS - 29 * DAY_MS) is None
    assert _reason(claims, "platform-a", "r-1", b"x", None) is None, "a seizure has no time"


@given(ages=st.lists(st.integers(0, 60), min_size=1, max_size=40))
@settings(max_examples=200, deadline=None)
def test_expiry_forgets_exactly_the_claims_older_than_the_window(ages: list[int]) -> None:
    """Claims are read back in routing order; expiry drops those first routed more than
    the window ago, and keeps the rest."""
    claims = RecordClaims(retention_days=30)
    routed = sorted(NOW_MS - age * DAY_MS - 1 for age in ages)
    for number, at_ms in enumerate(routed):
        claims.load(f"r-{number}", Claim("platform-a", content_digest(b"d"), at_ms).encode())
    expired = claims.expire(NOW_MS)
    assert expired == sum(1 for at_ms in routed if at_ms < NOW_MS - 30 * DAY_MS)
    assert len(claims) == len(routed) - expired


def test_claims_round_trip_through_the_topic_and_tombstones_remove_them() -> None:
    claim = Claim("platform-a", content_digest(b"x"), NOW_MS)
    assert Claim.decode(claim.encode()) == claim
    claims = RecordClaims()
    claims.load("r-1", claim.encode())
    assert claims.get("r-1") == claim
    claims.load("r-1", None)
    assert claims.get("r-1") is None
    uuid_id = "6f1c1a52-2b0f-4d0e-9a57-0b9f1f5e7c11"
    claims.load(uuid_id, claim.encode())
    assert claims.get(uuid_id) == claim
    assert claims.get(uuid_id.upper()) == claim, "one UUID, however it is written"


def test_the_ledger_remembers_each_indicators_source_for_ever() -> None:
    ledger = DeliveryLedger()
    ledger.stage(ledger_key("platform-a", "i-1"), LedgerEntry({"ipr-center": "platform-a"}, "v"))
    assert ledger.owner_of("i-1") == "platform-a", "staged entries count at once"
    ledger.abort()
    assert ledger.owner_of("i-1") is None
    ledger.load(ledger_key("platform-b", "i-2"), LedgerEntry({}, "v").encode())
    assert ledger.owner_of("i-2") == "platform-b"
    ledger.load(ledger_key("platform-b", "i-2"), None)
    assert ledger.owner_of("i-2") is None


@pytest.mark.parametrize("value", [b"", b"{}", b'{"source": "a"}', b"\xff"])
def test_an_unreadable_claim_is_an_error_not_a_claim(value: bytes) -> None:
    with pytest.raises((ValueError, KeyError)):
        Claim.decode(value)


def test_an_indicators_id_stays_its_sources_after_the_claim_window() -> None:
    """The claim is forgotten after the window; the ledger's owner still refuses the id."""
    claims = RecordClaims(retention_days=30)
    taken = claims.refusal(
        "platform-b", "i-1", b"x", event_ms=NOW_MS, now_ms=NOW_MS, indicator_owner="platform-a"
    )
    reused = claims.refusal(
        "platform-a", "i-1", b"x", event_ms=NOW_MS, now_ms=NOW_MS, indicator_owner="platform-a"
    )
    assert (taken or ("",))[0] == ID_TAKEN
    assert (reused or ("",))[0] == ID_REUSED
