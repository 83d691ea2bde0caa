"""The router's one consumer of every inbound topic: its polls, the partitions it holds,
their committed offsets and chain heads (its :class:`~broker.checkpoint.Checkpoint`),
and a fresh consumer in place of one that failed fatally.

Reads are ``read_committed``; offsets are never committed by the consumer itself (the
router's transactions commit them with the group metadata). Static membership lets a
restarted instance take its partitions straight back, and round robin assignment spreads
every inbound partition evenly over the instances.
"""

from __future__ import annotations

import logging
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from broker.checkpoint import Checkpoint, Partition
from broker.connection import KafkaConnection
from broker.contract import INBOUND_PATTERN, topic_owner
from broker.routing import Inbound
from broker.settings import Settings
from broker.topics import DLQ_MAX_BYTES

log = logging.getLogger("action.router")

#: How long a poll waits for its first record.
_POLL_WAIT_S = 0.5


class InboundConsumerFailedError(Exception):
    """The consumer failed fatally (fenced after its coordinator moved, say): the router
    replaces it with :meth:`InboundConsumer.renew`."""


class InboundConsumer:
    def __init__(self, kafka: KafkaConnection, settings: Settings, instance_id: str) -> None:
        self._kafka = kafka
        self._settings = settings
        self._instance_id = instance_id
        self._max_records = settings.router_batch_records * settings.router_poll_transactions
        self._consumer = self._new()
        self.checkpoint = Checkpoint(self._consumer)
        #: Each partition's last routed record's time, for the lag gauges.
        self.last_routed_ms: dict[Partition, int] = {}
        #: Whether a rebalance has given this instance its partitions (perhaps none).
        self.joined = False
        #: Whether the partitions changed since the router last read the ledger, claims
        #: and embargo topics: another instance may have committed on them meanwhile.
        self.stale = True
        self._alone: bool | None = None  # known once asked after a rebalance

    @property
    def client(self) -> Consumer:
        """The librdkafka consumer itself (for lag and the transaction's group metadata)."""
        return self._consumer

    def poll(self) -> list[Inbound]:
        """The next records, up to a poll's worth; raises
        :class:`InboundConsumerFailedError` when the consumer cannot go on."""
        # consume(n, timeout) waits for all n or the timeout: at a trickle of records that
        # is half a second per poll. So wait for the first record only, then take what
        # has already arrived.
        messages = self._consumer.consume(num_messages=1, timeout=_POLL_WAIT_S)
        if messages:
            messages += self._consumer.consume(num_messages=self._max_records - 1, timeout=0)
        inbound = []
        for message in messages:
            error = message.error()
            if error is None:
                inbound.append(_inbound(message))
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # (A consumer's fatal error arrives as an event whose flag is not set.)
                raise InboundConsumerFailedError(error.str())
            else:
                log.warning("consuming %s: %s", message.topic(), error.str())
        return inbound

    def renew(self) -> None:
        """A new consumer in place of this one: it starts from the committed offsets and
        chain heads, as a rewind would, and its partitions come by a new rebalance."""
        try:
            self._consumer.close()
        except KafkaException as exc:
            log.warning("closing the failed consumer: %s", exc)
        self._consumer = self._new()
        self.checkpoint = Checkpoint(self._consumer)
        self.last_routed_ms.clear()
        self.joined = False
        self.stale = True
        self._alone = None

    def assigned(self) -> dict[Partition, Partition]:
        """The partitions this instance holds now (each mapped to itself, so a held
        record's (topic, partition) finds the one key the checkpoint uses)."""
        return {(tp.topic, tp.partition): (tp.topic, tp.partition) for tp in self._assignment()}

    def routes_alone(self) -> bool:
        """Whether this instance holds every inbound partition: then only its own writes
        change the claims and the ledger, and reading them back before each poll is not
        needed."""
        if self._alone is None:
            assignment = self._assignment()
            topics = self._consumer.list_topics(timeout=30).topics
            total = sum(
                len(found.partitions) for name, found in topics.items() if topic_owner(name)
            )
            self._alone = len(assignment) >= total > 0
            log.info(
                "routing %d of %d inbound partitions%s",
                len(assignment),
                total,
                " alone" if self._alone else "; claims and ledger are read before each poll",
            )
        return self._alone

    def close(self) -> None:
        self._consumer.close()

    # --- rebalances (inside consume(), no transaction open) -----------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Whether this instance now routes alone is found out later: the callback may
        # not block.
        log.info("assigned %d inbound partitions", len(partitions))
        self.joined = True
        self.stale = True
        self._alone = None

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [(tp.topic, tp.partition) for tp in partitions]
        self.checkpoint.forget(gone)
        for tp in gone:
            self.last_routed_ms.pop(tp, None)

    def _assignment(self) -> list[TopicPartition]:
        return self._consumer.assignment()

    def _new(self) -> Consumer:
        consumer = Consumer(
            {
                **self._kafka.librdkafka_config(),
                "group.id": self._settings.router_group,
                "client.id": f"{self._instance_id}.consumer",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                # Round robin over all inbound partitions: the range assignor splits each
                # topic on its own, and with three partitions per topic gave one of two
                # instances two of every three (16 against 8). Range stays as the
                # fallback an instance of an older version still speaks, so a rolling
                # upgrade can agree.
                "partition.assignment.strategy": "roundrobin,range",
                "max.partition.fetch.bytes": DLQ_MAX_BYTES,
                "topic.metadata.refresh.interval.ms": 10_000,  # new members' topics soon
                # Static membership: a restarted instance takes its partitions straight
                # back instead of waiting out the dead member's session.
                "group.instance.id": self._instance_id,
                "session.timeout.ms": self._settings.router_session_timeout_ms,
            }
        )
        consumer.subscribe(
            [INBOUND_PATTERN],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        return consumer


def _inbound(message: Message) -> Inbound:
    _, timestamp_ms = message.timestamp()
    # A header's null value is kept as None, so a dead letter repeats it as it came.
    headers = cast("list[tuple[str, bytes]]", message.headers() or [])
    return Inbound(
        str(message.topic()),
        int(message.partition() or 0),
        int(message.offset() or 0),
        message.key(),
        message.value(),
        tuple(headers),
        timestamp_ms,
    )
