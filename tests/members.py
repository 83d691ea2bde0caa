"""Events from the example consortium's members, encoded and signed as a member would."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.contract import inbound_key
from broker.events import Event, Retraction, SellerIndicator
from policies.demo_keys import demo_signing_key
from producers.publisher import sign_event

CODEC = AvroCodec(SchemaCatalog.load())
BASE_TIME = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def signing_kid(member: str) -> str:
    return f"{member}-sig-2026"


def signed(event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) as the member's publisher writes them to its inbound topic."""
    member = event.source_member
    value, headers = sign_event(CODEC, event, demo_signing_key(member), signing_kid(member))
    return inbound_key(event.to_avro()), value, headers


def indicator(source: str = "platform-a", number: int = 0, **changes: Any) -> SellerIndicator:
    record: dict[str, Any] = {
        "indicator_id": str(uuid.uuid4()),
        "source_member": source,
        "observed_at": BASE_TIME - dt.timedelta(hours=1),
        "published_at": BASE_TIME,
        "seller": {
            "account_id": f"S-{number}",
            "email": f"seller{number}@shop.example",
            "phone": "+8613800138000",
            "country": "CN",
            "payment_accounts": [f"acct_{number:06d}"],
            "addresses": [{"lines": ["1 Rd"], "city": "Putian", "country": "CN"}],
            "ip_addresses": ["203.0.113.9"],
        },
        "product_categories": ["FOOTWEAR"],
        "confidence": 90,
        "hss": False,
        "tlp": "AMBER",
        "purpose": "IPR_ENFORCEMENT",
    }
    record.update(changes)
    return SellerIndicator.parse(record)


def retraction(of: Event, **changes: Any) -> Retraction:
    record = {
        "retraction_id": str(uuid.uuid4()),
        "indicator_id": of.to_avro()["indicator_id"],
        "source_member": of.source_member,
        "retracted_at": BASE_TIME + dt.timedelta(hours=1),
        "reason": "MISTAKE",
        "explanation": "wrong seller account",
        "tlp": "AMBER",
        **changes,
    }
    return Retraction.parse(record)


def mixed_stream(count: int) -> list[Event]:
    """A reproducible mix from several members: TLP, purposes, confidence and HSS vary."""
    sources = [
        "platform-a",
        "platform-b",
        "platform-c",
        "payments-x",
        "brand-owner",
        "express-carrier",
    ]
    events: list[Event] = []
    for i in range(count):
        source = sources[i % len(sources)]
        extra: dict[str, Any] = {}
        if source == "brand-owner":
            extra["seller"] = {"store_url": f"https://brand-fakes{i % 50}.shop/item"}
        events.append(
            indicator(
                source,
                i,
                confidence=55 + (i * 7) % 45,
                hss=i % 5 == 0,
                tlp=["GREEN", "AMBER", "AMBER", "CLEAR", "RED"][i % 5],
                purpose=["IPR_ENFORCEMENT", "HEALTH_SAFETY", "FRAUD_PREVENTION"][i % 3],
                product_categories=[["FOOTWEAR", "TOYS", "CONSUMER_ELECTRONICS"][i % 3]],
                **extra,
            )
        )
    return events
