"""The router's follower of its own compacted topics: the ledger (who received each
indicator), the record-id claims and the embargo holds, read up to their last stable
offsets, so every entry any instance committed before now is known before a record is
decided against it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from broker.claims import RecordClaims
from broker.connection import KafkaConnection
from broker.contract import EMBARGO_TOPIC, LEDGER_TOPIC, RECORD_IDS_TOPIC
from broker.embargo import EmbargoBook
from broker.errors import RouterError
from broker.ledger import DeliveryLedger

log = logging.getLogger("action.router")

FOLLOWED = (LEDGER_TOPIC, RECORD_IDS_TOPIC, EMBARGO_TOPIC)


class LedgerFollower:
    def __init__(
        self,
        kafka: KafkaConnection,
        client_id: str,
        ledger: DeliveryLedger,
        claims: RecordClaims,
        embargo: EmbargoBook,
    ) -> None:
        self._reader = KafkaConsumer(
            **kafka.client_config(),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._load: dict[str, Callable[[str, bytes | None], None]] = {
            LEDGER_TOPIC: ledger.load,
            RECORD_IDS_TOPIC: claims.load,
            EMBARGO_TOPIC: embargo.load,
        }

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read the followed topics up to their last stable offsets."""
        reader = self._reader
        partitions = []
        for topic in FOLLOWED:
            numbers = sorted(reader.partitions_for_topic(topic) or ())
            if not numbers:
                raise RouterError(f"topic {topic} is missing", hint="run action-broker provision")
            partitions += [TopicPartition(topic, p) for p in numbers]
        if set(reader.assignment()) != set(partitions):
            reader.assign(partitions)
        end = reader.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while any(reader.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                log.warning("ledger catch-up incomplete after %.0f s", timeout_s)
                break
            for tp, records in reader.poll(timeout_ms=200).items():
                load = self._load[tp.topic]
                for record in records:
                    load(record.key.decode(), record.value)

    def close(self) -> None:
        self._reader.close(autocommit=False)
