"""Models in lockstep with the schemas, and the semantic checks Avro cannot express."""

from __future__ import annotations

import datetime as dt
import types
import typing
import uuid
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel

from broker.catalog import SchemaCatalog
from broker.errors import EventValidationError
from broker.events import EVENT_TYPES, SellerIndicator, parse_event

CATALOG = SchemaCatalog.load()


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of a model field annotation."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, optional


def _compare(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    problems = []
    schema_fields = {f["name"]: f for f in schema["fields"]}
    model_fields = model.model_fields
    if set(schema_fields) != set(model_fields):
        problems.append(f"{path}: schema {sorted(schema_fields)} vs model {sorted(model_fields)}")
    for name, field in schema_fields.items():
        if name not in model_fields:
            continue
        avro_type = field["type"]
        avro_optional = isinstance(avro_type, list) and "null" in avro_type
        if avro_optional:
            avro_type = next(t for t in avro_type if t != "null")
        inner, optional = _unwrap(model_fields[name].annotation)
        if optional != avro_optional:
            problems.append(f"{path}.{name}: optional in schema={avro_optional}, model={optional}")
        if isinstance(avro_type, dict) and avro_type.get("type") == "array":
            avro_type = avro_type["items"]
            inner, _ = _unwrap(typing.get_args(inner)[0])
        if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
            if not (isinstance(inner, type) and issubclass(inner, StrEnum)):
                problems.append(f"{path}.{name}: schema enum, model {inner}")
            elif [m.value for m in inner] != avro_type["symbols"]:
                problems.append(f"{path}.{name}: enum symbols differ")
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            problems += _compare(inner, avro_type, f"{path}.{name}")
    return problems


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_model_matches_latest_schema(type_name: str) -> None:
    schema = dict(CATALOG.latest(type_name).schema)
    assert _compare(EVENT_TYPES[type_name], schema, type_name) == []


def _valid() -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return {
        "indicator_id": str(uuid.uuid4()),
        "source_member": "platform-a",
        "observed_at": now - dt.timedelta(hours=2),
        "published_at": now,
        "seller": {
            "account_id": " SELLER-889 ",
            "display_name": "  Best  Deals SHOP ",
            "store_url": "HTTPS://Shop.Example.co.uk/store/9",
            "email": "Sales@Example.CO.UK",
            "phone": "020 7946 0958",
            "country": "gb",
            "ip_addresses": ["2001:DB8:0::1"],
        },
        "product_categories": ["PHARMACEUTICALS_PERSONAL_CARE"],
        "brands": ["Acme Pharma"],
        "evidence": [{"kind": "TEST_BUY", "reference": "TB-2026-0042"}],
        "confidence": 85,
        "hss": True,
        "tlp": "AMBER",
        "purpose": "HEALTH_SAFETY",
    }


def test_identifiers_are_normalized() -> None:
    seller = SellerIndicator.parse(_valid()).seller
    assert seller.account_id == "SELLER-889"
    assert seller.display_name == "best deals shop"
    assert seller.store_url == "https://shop.example.co.uk/store/9"
    assert seller.store_domain == "example.co.uk"
    assert seller.email == "sales@example.co.uk"
    assert seller.phone == "+442079460958", "national number read in the seller's country"
    assert seller.country == "GB"
    assert seller.ip_addresses == ["2001:db8::1"]


def _problems(**changes: Any) -> list[tuple[str, str]]:
    data = _valid()
    for key, value in changes.items():
        if key.startswith("seller__"):
            data["seller"] = {**data["seller"], key.removeprefix("seller__"): value}
        else:
            data[key] = value
    with pytest.raises(EventValidationError) as info:
        parse_event("SellerIndicator", data)
    assert info.value.reason == "event.invalid"
    return info.value.problems


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        ({"seller__email": "not-an-email"}, "seller.email", "not an e-mail address"),
        ({"seller__store_url": "ftp://x.example"}, "seller.store_url", "not an http(s) URL"),
        ({"seller__phone": "12"}, "seller", "phone"),
        ({"seller__country": "XX"}, "seller.country", "ISO 3166-1"),
        ({"seller__ip_addresses": ["999.1.1.1"]}, "seller.ip_addresses.0", "not an IP"),
        ({"confidence": 101}, "confidence", "less than or equal to 100"),
        ({"confidence": -1}, "confidence", "greater than or equal to 0"),
        ({"product_categories": []}, "product_categories", "at least 1"),
        ({"source_member": "Platform A"}, "source_member", "pattern"),
        ({"tlp": "PURPLE"}, "tlp", "CLEAR"),
    ],
)
def test_semantic_errors_name_the_field(changes: dict[str, Any], where: str, words: str) -> None:
    problems = _problems(**changes)
    assert any(loc == where and words in msg for loc, msg in problems), problems


def test_future_times_beyond_the_skew_allowance_are_refused() -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert SellerIndicator.parse({**_valid(), "published_at": soon}).published_at
    problems = _problems(published_at=later)
    assert any(loc == "published_at" and "in the future" in msg for loc, msg in problems)


def test_at_least_one_seller_identifier() -> None:
    data = _valid()
    data["seller"] = {"country": "CN"}
    with pytest.raises(EventValidationError, match="at least one seller identifier"):
        SellerIndicator.parse(data)


def test_times_must_be_in_order_and_timezone_aware() -> None:
    data = _valid()
    problems = _problems(observed_at=data["published_at"] + dt.timedelta(minutes=1))
    assert any("observed_at is after published_at" in msg for _, msg in problems)
    naive = dt.datetime(2026, 1, 1, 12, 0)
    assert any(loc == "observed_at" for loc, _ in _problems(observed_at=naive))


def test_unknown_fields_and_types_are_refused() -> None:
    assert any(loc == "colour" for loc, _ in _problems(colour="red"))
    with pytest.raises(EventValidationError, match="unknown event type 'Tweet'"):
        parse_event("Tweet", {})


def test_timestamps_are_truncated_to_what_avro_carries() -> None:
    event = SellerIndicator.parse(
        {
            **_valid(),
            "published_at": dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
            "observed_at": dt.datetime(
                2026, 1, 1, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))
            ),
        }
    )
    assert event.published_at.microsecond == 123000
    assert event.observed_at == dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
