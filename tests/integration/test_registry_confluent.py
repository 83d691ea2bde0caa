"""Confluent's own deserializer reads this project's records through our registry.

Records are written to a real topic with kafka-python and this project's codec, read back
with confluent-kafka's Consumer, and decoded by its AvroDeserializer, which fetches the
writer's schema from the read-only registry endpoint by the id in the frame.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka import KafkaProducer

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.connection import KafkaConnection
from broker.events import Retraction, SellerIndicator
from broker.registry import RegistryServer

CATALOG = SchemaCatalog.load()


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    with RegistryServer(CATALOG) as server:
        yield server.url


def _events() -> list[SellerIndicator | Retraction]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    indicator = SellerIndicator.parse(
        {
            "indicator_id": str(uuid.uuid4()),
            "source_member": "platform-a",
            "observed_at": now - dt.timedelta(days=1),
            "published_at": now,
            "seller": {
                "account_id": "S-42",
                "email": "sales@fake-brand.example",
                "country": "CN",
                "payment_accounts": ["acct_9X"],
            },
            "product_categories": ["HANDBAGS_WALLETS"],
            "brands": ["Maison Exemple"],
            "evidence": [{"kind": "TEST_BUY", "reference": "TB-7"}],
            "confidence": 90,
            "hss": False,
            "tlp": "AMBER",
            "purpose": "IPR_ENFORCEMENT",
            "expires_at": now + dt.timedelta(days=90),
        }
    )
    retraction = Retraction.parse(
        {
            "retraction_id": str(uuid.uuid4()),
            "source_member": "platform-a",
            "indicator_id": str(indicator.indicator_id),
            "retracted_at": now,
            "reason": "APPEAL_WON",
            "tlp": "GREEN",
        }
    )
    return [indicator, retraction]


def test_confluent_avro_deserializer_reads_our_records(
    kafka: KafkaConnection, new_topic: Callable[..., str], registry_url: str
) -> None:
    topic = new_topic(partitions=1)
    codec = AvroCodec(CATALOG)
    events = _events()
    producer = KafkaProducer(**kafka.client_config(), acks="all")
    for event in events:
        producer.send(topic, codec.encode(event.avro_type, event.to_avro()))
    producer.flush(timeout=30)
    producer.close()

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            # librdkafka spells the same settings with dots.
            "security.protocol": kafka.security_protocol,
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": kafka.username,
            "sasl.password": kafka.password,
            "group.id": f"confluent-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    raw: list[bytes] = []
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while len(raw) < len(events) and dt.datetime.now() < deadline:
        message = consumer.poll(1.0)
        value = message.value() if message is not None and message.error() is None else None
        if value is not None:
            raw.append(value)
    consumer.close()
    assert len(raw) == len(events)

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    context = SerializationContext(topic, MessageField.VALUE)
    for data, event in zip(raw, events, strict=True):
        theirs = deserializer(data, context)
        ours = codec.decode(data).record
        assert theirs == ours
        assert type(event).from_avro(theirs) == event
