"""A member is a competitor: nothing one member sends may stop the router. Each record
below is what a hostile member could publish with its own credentials and key; each ends
as a dead letter with its own reason, and routing goes on."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.contract import FIELDS_SALTS_HEADER
from broker.events import EVENT_TYPES
from broker.ledger import DeliveryLedger
from broker.match_tokens import MatchTokenKey
from broker.policy.loader import load_policies
from broker.provenance import SALT_BYTES, sign_fields
from broker.routing import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    UNPROCESSABLE,
    Checked,
    Inbound,
    RecordRouter,
    Writes,
)
from broker.signing import key_id_header
from policies import POLICY_DIR
from policies.demo_keys import demo_signing_key
from tests.members import CODEC, indicator, signed, signing_kid

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def router_with(match_key: MatchTokenKey) -> Callable[..., RecordRouter]:
    def router_with(folder: Path = POLICY_DIR) -> RecordRouter:
        return RecordRouter(load_policies(folder), CODEC, match_key)

    return router_with


def _writes(
    router: RecordRouter, source: str, value: bytes, headers: list[tuple[str, bytes]]
) -> Writes:
    inbound = Inbound(f"action.in.{source}", 0, 7, b"k", value, tuple(headers), 0)
    out = router.writes(inbound, now=NOW, ledger=DeliveryLedger(), decided_at_ms=1)
    assert isinstance(out, Writes)
    return out


def _reason(writes: Writes) -> str:
    assert writes.dead_letter is not None, "a hostile record must end as a dead letter"
    assert not writes.feeds
    return writes.dead_letter.reason


def _with_header(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[Any]:
    return [(n, value if n == name else v) for n, v in headers]


def test_a_deeply_nested_proof_header_is_a_dead_letter_not_a_recursion_error(
    router_with: Any,
) -> None:
    _, value, headers = signed(indicator("platform-a"))
    deep = b"[" * 50_000 + b"]" * 50_000
    writes = _writes(
        router_with(),
        "platform-a",
        value,
        _with_header(headers, FIELDS_SALTS_HEADER, deep[:MAX_HEADER_BYTES]),
    )
    assert _reason(writes) == "proof.too_complex"


def test_too_many_or_too_large_headers_are_refused_before_parsing(router_with: Any) -> None:
    _, value, headers = signed(indicator("platform-a"))
    many = headers + [(f"x-{i}", b"") for i in range(MAX_HEADERS)]
    assert _reason(_writes(router_with(), "platform-a", value, many)) == "headers.too_many"
    large = [*headers, ("x-large", b"a" * (MAX_HEADER_BYTES + 1))]
    assert _reason(_writes(router_with(), "platform-a", value, large)) == "headers.too_large"


def test_a_store_url_without_a_registrable_domain_cannot_crash_a_generalize_treatment(
    policy_copy: Path, router_with: Any
) -> None:
    """The URL used to pass validation when a store domain came with it, then made a
    generalize treatment raise ValueError, which stopped the router."""
    mou = policy_copy / "mou" / "platform-a.yaml"
    text = mou.read_text().replace("seller.store_url: keep", "seller.store_url: generalize")
    mou.write_text(text)
    router = router_with(policy_copy)
    record = indicator("platform-a").to_avro()
    record["seller"] = {
        **record["seller"],
        "store_url": "https://localhost/shop",
        "store_domain": "example.com",
    }
    value = CODEC.encode("SellerIndicator", record)
    kid = signing_kid("platform-a")
    headers = key_id_header(kid) + sign_fields(
        record, "SellerIndicator", demo_signing_key("platform-a"), encoded=value
    )
    assert _reason(_writes(router, "platform-a", value, headers)) == "event.invalid"


def test_any_exception_while_deciding_is_the_records_dead_letter(
    monkeypatch: pytest.MonkeyPatch, router_with: Any
) -> None:
    """A fault the policies raise on one record (a bug, reached through its content)
    becomes that record's dead letter, naming the exception; the next record routes."""
    router = router_with()
    _, value, headers = signed(indicator("platform-a"))

    def explode(*args: object, **kwargs: object) -> None:
        raise KeyError("a value no rule expected")

    with monkeypatch.context() as patch:
        patch.setattr(router.policy_set, "evaluate_all", explode)
        writes = _writes(router, "platform-a", value, headers)
    assert _reason(writes) == UNPROCESSABLE
    assert writes.dead_letter is not None
    assert writes.dead_letter.detail.startswith("KeyError: ")
    assert writes.event_type == "SellerIndicator"
    _, value, headers = signed(indicator("platform-a", 1))
    assert _writes(router, "platform-a", value, headers).feeds


def test_a_retraction_without_the_ledger_comes_back_checked(router_with: Any) -> None:
    router = router_with()
    of = indicator("platform-a")
    retraction = EVENT_TYPES["Retraction"].parse(
        {
            "retraction_id": "8c1f1f3e-7a53-4b36-9d0e-1d2b3c4d5e6f",
            "source_member": "platform-a",
            "indicator_id": of.to_avro()["indicator_id"],
            "retracted_at": NOW,
            "reason": "MISTAKE",
            "tlp": "AMBER",
        }
    )
    _, value, headers = signed(retraction)
    inbound = Inbound("action.in.platform-a", 0, 1, b"k", value, tuple(headers), 0)
    assert isinstance(router.writes(inbound, now=NOW, ledger=None, decided_at_ms=1), Checked)


def _resalted(record: dict[str, Any], value: bytes, salt_of: Any) -> list[tuple[str, bytes]]:
    """Headers signed properly by the source, over salts of the attacker's choosing."""
    from broker.provenance import RECORD_LEAF, leaves

    paths = [*leaves(record), RECORD_LEAF]
    salts = {path: salt_of(i) for i, path in enumerate(paths)}
    return key_id_header(signing_kid("platform-a")) + sign_fields(
        record, "SellerIndicator", demo_signing_key("platform-a"), encoded=value, salts=salts
    )


@pytest.mark.parametrize(
    ("name", "salt_of"),
    [("shared", lambda i: b"s" * SALT_BYTES), ("short", lambda i: bytes([i % 256]) * 4)],
)
def test_weak_salts_are_refused(name: str, salt_of: Any, router_with: Any) -> None:
    """A shared or short salt lets a recipient brute-force a withheld field with few
    possible values (a country) from its commitment and another leaf's salt."""
    record = EVENT_TYPES["SellerIndicator"].from_avro(indicator("platform-a").to_avro()).to_avro()
    value = CODEC.encode("SellerIndicator", record)
    writes = _writes(router_with(), "platform-a", value, _resalted(record, value, salt_of))
    assert _reason(writes) == "signature.fields_invalid", name
    assert "salt" in (writes.dead_letter.detail if writes.dead_letter else "")


def test_a_proof_header_of_json_that_is_not_an_object_is_a_dead_letter(router_with: Any) -> None:
    _, value, headers = signed(indicator("platform-a"))
    for junk in (b"[]", b'"text"', b"1e999999", json.dumps({"a": 1}).encode(), b"\xff\xfe"):
        writes = _writes(
            router_with(), "platform-a", value, _with_header(headers, FIELDS_SALTS_HEADER, junk)
        )
        assert _reason(writes).startswith("signature."), junk
