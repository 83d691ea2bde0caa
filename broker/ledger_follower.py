"""The router's follower of its own compacted topics: the ledger (who received each
indicator), the record-id claims and the embargo holds, read up to their last stable
offsets, so every entry any instance committed before now is known before a record is
decided against it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from broker.claims import RecordClaims
from broker.connection import KafkaConnection
from broker.contract import EMBARGO_TOPIC, LEDGER_TOPIC, RECORD_IDS_TOPIC
from broker.embargo import EmbargoBook
from broker.errors import RouterError
from broker.ledger import DeliveryLedger

log = logging.getLogger("action.router")

FOLLOWED = (LEDGER_TOPIC, RECORD_IDS_TOPIC, EMBARGO_TOPIC)
_RETRY_PAUSE_S = 0.5  # between asks for offsets while partition leaders move


class LedgerFollower:
    def __init__(
        self,
        kafka: KafkaConnection,
        client_id: str,
        group_id: str,
        ledger: DeliveryLedger,
        claims: RecordClaims,
        embargo: EmbargoBook,
    ) -> None:
        # Assigned, never subscribed and never committing: the group id is only one
        # librdkafka requires; the router's own (the one its principal may use).
        self._reader = Consumer(
            {
                **kafka.librdkafka_config(),
                "client.id": client_id,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        # Asks every partition's first and last stable offset in one request per leader.
        admin_config: dict[str, Any] = {
            **kafka.librdkafka_config(),
            "client.id": f"{client_id}.offsets",
        }
        self._admin = AdminClient(admin_config)
        self._assigned: list[tuple[str, int]] = []
        self._load: dict[str, Callable[[str, bytes | None], None]] = {
            LEDGER_TOPIC: ledger.load,
            RECORD_IDS_TOPIC: claims.load,
            EMBARGO_TOPIC: embargo.load,
        }

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read the followed topics up to their last stable offsets."""
        reader = self._reader
        partitions = self._partitions(timeout_s)
        if partitions != self._assigned:
            reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
            self._assigned = partitions
        ends = stable_bounds(self._admin, partitions, timeout_s)
        deadline = time.monotonic() + timeout_s
        while self._behind(ends):
            if time.monotonic() > deadline:
                log.warning("ledger catch-up incomplete after %.0f s", timeout_s)
                break
            for message in reader.consume(num_messages=1000, timeout=0.2):
                if message.error() is not None:
                    log.warning("reading %s: %s", message.topic(), message.error())
                    continue
                key = message.key()
                if key is not None:
                    self._load[str(message.topic())](key.decode(), message.value())

    def _partitions(self, timeout_s: float) -> list[tuple[str, int]]:
        topics = self._reader.list_topics(timeout=timeout_s).topics
        partitions = []
        for topic in FOLLOWED:
            found = topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise RouterError(f"topic {topic} is missing", hint="run action-broker provision")
            partitions += [(topic, p) for p in sorted(found.partitions)]
        return partitions

    def _behind(self, ends: dict[tuple[str, int], tuple[int, int]]) -> bool:
        """Whether some partition's position is short of its end."""
        asked = [TopicPartition(*tp) for tp, (low, high) in ends.items() if high > low]
        for at in self._reader.position(asked) if asked else ():
            low, high = ends[(at.topic, at.partition)]
            if max(at.offset, low) < high:
                return True
        return False

    def close(self) -> None:
        self._reader.close()
        del self._admin  # (an AdminClient has no close: its threads end with the object)


def stable_bounds(
    admin: AdminClient, partitions: list[tuple[str, int]], timeout_s: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """Each partition's first offset and last stable offset (the end a read_committed
    reader reaches), asked of every partition at once; asked again while leaders move
    (a node just died, say), until ``timeout_s``, then the error is raised."""
    asked = [TopicPartition(*tp) for tp in partitions]
    deadline = time.monotonic() + timeout_s
    while True:
        first, last = (
            admin.list_offsets(
                {tp: spec for tp in asked},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=timeout_s,
            )
            for spec in (OffsetSpec.earliest(), OffsetSpec.latest())
        )
        try:
            return {
                (tp.topic, tp.partition): (first[tp].result().offset, last[tp].result().offset)
                for tp in asked
            }
        except KafkaException:
            # (librdkafka marks few of these retriable: a fenced leader epoch is not,
            # though the next ask, after a metadata refresh, succeeds.)
            if time.monotonic() > deadline:
                raise
            time.sleep(_RETRY_PAUSE_S)
