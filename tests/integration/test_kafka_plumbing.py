"""The plumbing every later feature stands on: a real broker that loses nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.connection import KafkaConnection

RECORDS = 10_000
PARTITIONS = 3


def test_idempotent_producer_records_arrive_exactly_once_in_order(
    kafka: KafkaConnection, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=PARTITIONS)
    producer = KafkaProducer(
        **kafka.client_config(), acks="all", enable_idempotence=True, linger_ms=5
    )
    sent: dict[int, list[bytes]] = defaultdict(list)
    futures = []
    for i in range(RECORDS):
        key = f"seller-{i % 97}".encode()
        futures.append(producer.send(topic, key=key, value=f"{i}".encode()))
    producer.flush(timeout=60)
    for future in futures:
        metadata = future.get(timeout=30)
        sent[metadata.partition].append(b"")  # count per partition from the broker's answer
    producer.close()
    assert sum(len(v) for v in sent.values()) == RECORDS

    consumer = KafkaConsumer(
        **kafka.client_config(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15_000,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    received: dict[int, list[int]] = defaultdict(list)
    offsets: dict[int, list[int]] = defaultdict(list)
    for message in consumer:
        received[message.partition].append(int(message.value))
        offsets[message.partition].append(message.offset)
        if sum(len(v) for v in received.values()) == RECORDS:
            break
    consumer.close()

    values = sorted(v for part in received.values() for v in part)
    assert values == list(range(RECORDS)), "every record exactly once"
    for partition, part_values in received.items():
        assert part_values == sorted(part_values), f"partition {partition} out of order"
        assert offsets[partition] == list(range(len(part_values))), "no gaps, no duplicates"
        assert len(part_values) == len(sent[partition])
    assert len(received) == PARTITIONS, "the keys spread over every partition"
