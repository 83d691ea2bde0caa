"""The router's transactional producer: a deadline on every transactional call, and a
producer that is replaced, and replaced again until Kafka answers, when one fails.

kafka-python lacks KIP-890 part 2, and its commit, abort and offset calls wait without a
timeout. So every transactional call runs with ``router_transaction_deadline_s``; a call
that times out or fails fatally replaces the producer with a new one under the same
transactional id, whose epoch bump fences the old one. While Kafka is unreachable or
failing over, the replacement is retried with backoff (not ready meanwhile) until it
succeeds or the router is told to stop: the router does not exit on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata, TopicPartition

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
TRANSACTION_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaError,
    TransactionTimeoutError,
)


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
        self._producer: KafkaProducer | None = None

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """The first producer, tried until Kafka answers (see :meth:`replace`)."""
        self._connect("start the transactional producer")

    def _new(self) -> KafkaProducer:
        producer = KafkaProducer(
            **self.kafka.client_config(),
            client_id=f"{self.transactional_id}.producer",
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.settings.router_transaction_timeout_ms,
            acks="all",
            max_request_size=DLQ_MAX_BYTES + 100_000,
            # Nothing in a transaction is visible before its commit, which sends whatever
            # still waits, so lingering costs no latency. It fills batches: Kafka's cost
            # per partition append, across ~40 partitions per transaction, was most of
            # its CPU at 5 ms (0.7 ms per input record against 0.2 for the passthrough).
            linger_ms=2000,
            batch_size=256 * 1024,
        )
        try:
            self.bounded("init_transactions", producer.init_transactions)
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
            self._producer.close(timeout=5)
            self._producer = None

    # --- a transaction ----------------------------------------------------------------

    @property
    def _live(self) -> KafkaProducer:
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
        self._live.send(topic, value=value, key=key, partition=partition, headers=headers)

    def commit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata], group_metadata: Any
    ) -> None:
        """Flush, send ``offsets`` (with their chain heads) and commit, each with its
        deadline."""
        producer = self._live
        # Flushed here, not by the commit: kafka-python's commit starts a flush it
        # never ends, after which every record goes out alone whatever linger_ms says.
        self.bounded("flush", producer.flush)
        self.bounded(
            "send_offsets_to_transaction",
            producer.send_offsets_to_transaction,
            dict(offsets),
            group_metadata,
        )
        self.bounded("commit_transaction", producer.commit_transaction)

    def abort(self) -> None:
        self.bounded("abort_transaction", self._live.abort_transaction)

    def partition_count(self, topic: str) -> int:
        return len(self._live.partitions_for(topic))

    def bounded(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """Run a transactional call with the configured deadline."""
        deadline = self.settings.router_transaction_deadline_s
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


def _close_quietly(producer: KafkaProducer) -> None:
    try:
        producer.close(timeout=2)
    except Exception:  # the producer is being thrown away, whatever ails it
        log.warning("closing an old transactional producer failed", exc_info=True)
