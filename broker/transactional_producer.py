"""The router's transactional producer (confluent-kafka, librdkafka): a deadline on every
transactional call, and a producer that is replaced, and replaced again until Kafka
answers, when one fails.

librdkafka's ``send_offsets_to_transaction`` is known to overrun its timeout
(librdkafka #5456) and it lacks KIP-890 part 2 (#5423), so every transactional call also
runs under ``router_transaction_deadline_s`` in a thread of its own; a call that times
out or fails fatally replaces the producer with a new one under the same transactional
id, whose epoch bump fences the old one. While Kafka is unreachable or failing over, the
replacement is retried with backoff (not ready meanwhile) until it succeeds or the
router is told to stop: the router does not exit on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from confluent_kafka import KafkaException, Producer, TopicPartition

from broker.connection import KafkaConnection
from broker.errors import RouterError, TransactionTimeoutError
from broker.metrics import Health, RouterMetrics
from broker.settings import Settings
from broker.topics import DLQ_MAX_BYTES

log = logging.getLogger("action.router")
T = TypeVar("T")

#: Waits between attempts to replace a producer while Kafka does not answer.
_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: What a transactional call can fail with: the transaction is then aborted or the
#: producer replaced.
TRANSACTION_ERRORS: tuple[type[BaseException], ...] = (KafkaException, TransactionTimeoutError)


class TransactionalProducer:
    def __init__(
        self,
        kafka: KafkaConnection,
        settings: Settings,
        transactional_id: str,
        metrics: RouterMetrics,
        health: Health,
        stopping: threading.Event,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.transactional_id = transactional_id
        self.metrics = metrics
        self.health = health
        self._stopping = stopping
        self._producer: Producer | None = None

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """The first producer, tried until Kafka answers (see :meth:`replace`)."""
        self._connect("start the transactional producer")

    def _new(self) -> Producer:
        timeout_s = self.settings.router_transaction_deadline_s
        producer = Producer(
            {
                **self.kafka.librdkafka_config(),
                "client.id": f"{self.transactional_id}.producer",
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self.settings.router_transaction_timeout_ms,
                "message.max.bytes": DLQ_MAX_BYTES + 100_000,
                # Nothing in a transaction is visible before its commit, which sends
                # whatever still waits: lingering fills batches at no cost in latency.
                "linger.ms": 100,
            }
        )
        try:
            self.bounded("init_transactions", producer.init_transactions, timeout_s)
        except BaseException:
            _close_quietly(producer)
            raise
        return producer

    def replace(self) -> None:
        """A new producer under the same transactional id (the old one is fenced)."""
        self.metrics.producer_resets.inc()
        old, self._producer = self._producer, None
        if old is not None:
            _close_quietly(old)
        attempts = self._connect("replace the transactional producer")
        log.warning(
            "transactional producer %s replaced%s; the old one is fenced",
            self.transactional_id,
            f" after {attempts} attempts" if attempts > 1 else "",
        )

    def _connect(self, what: str) -> int:
        """A new producer, tried again with backoff until Kafka answers or the router is
        stopping, not ready meanwhile; how many attempts it took. One log line when
        Kafka does not answer and one when it does, not one per attempt."""
        attempt = 0
        while True:
            attempt += 1
            try:
                self._producer = self._new()
            except TRANSACTION_ERRORS as exc:
                if attempt == 1:
                    log.warning("cannot %s yet (%s); retrying until Kafka answers", what, exc)
                self.health.ready = False
                wait = _BACKOFF_S[min(attempt - 1, len(_BACKOFF_S) - 1)]
                if self._stopping.wait(wait):
                    raise RouterError(f"stopped before Kafka answered: cannot {what}") from exc
                continue
            if attempt > 1:
                log.warning("Kafka answers again after %d attempts", attempt)
            return attempt

    def close(self) -> None:
        if self._producer is not None:
            _close_quietly(self._producer)
            self._producer = None

    # --- a transaction ----------------------------------------------------------------

    @property
    def _live(self) -> Producer:
        if self._producer is None:
            raise RouterError("the transactional producer is not running")
        return self._producer

    def begin(self) -> None:
        self._live.begin_transaction()

    def send(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        producer = self._live
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=-1 if partition is None else partition,
                    headers=cast("list[tuple[str, str | bytes | None]] | None", headers),
                )
                return
            except BufferError:  # the local queue is full: let librdkafka send some
                producer.poll(0.1)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Send ``offsets`` (with their chain heads) and commit, which flushes, each with
        its deadline."""
        producer = self._live
        offsets_s = self.settings.router_offsets_deadline_s
        self.bounded(
            "send_offsets_to_transaction",
            producer.send_offsets_to_transaction,
            offsets,
            group_metadata,
            offsets_s,
            deadline_s=offsets_s,
        )
        timeout_s = self.settings.router_transaction_deadline_s
        self.bounded("commit_transaction", producer.commit_transaction, timeout_s)

    def abort(self) -> None:
        timeout_s = self.settings.router_transaction_deadline_s
        self.bounded("abort_transaction", self._live.abort_transaction, timeout_s)

    def partition_count(self, topic: str) -> int:
        metadata = self._live.list_topics(
            topic, timeout=self.settings.router_transaction_deadline_s
        )
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise RouterError(f"topic {topic} is missing", hint="run action-broker provision")
        return len(found.partitions)

    def bounded(
        self, what: str, call: Callable[..., T], *args: Any, deadline_s: float | None = None
    ) -> T:
        """Run a transactional call with ``deadline_s`` (by default the configured
        transaction deadline)."""
        deadline = deadline_s or self.settings.router_transaction_deadline_s
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = call(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"txn-{what}", daemon=True)
        worker.start()
        worker.join(deadline)
        if worker.is_alive():
            raise TransactionTimeoutError(f"{what} did not finish within {deadline:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")  # type: ignore[return-value]


def _close_quietly(producer: Producer) -> None:
    """Give up on a producer: what it still holds is dropped (its transaction is aborted
    by the coordinator, or fenced by the next producer's epoch)."""
    try:
        producer.purge()
        producer.flush(0)
    except Exception:  # the producer is being thrown away, whatever ails it
        log.warning("closing an old transactional producer failed", exc_info=True)
