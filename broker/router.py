"""``action-broker run``: the router service, exactly once between inbound topics and feeds.

One consumer group reads every ``action.in.<member>`` topic. Each poll's records are
written in one or more Kafka transactions of ``router_batch_records``: per transaction,
the feed records, the audit entries, the dead letters, the ledger entries and the
consumed offsets (with each partition's audit-chain head as offset metadata) commit
together or not at all. The pure work per record is
:class:`broker.routing.RecordRouter`; this module is the loop around it, with one module
per job beside it: the transactional producer with its deadlines and replacement
(:mod:`broker.transactional_producer`), offsets and chain heads
(:mod:`broker.checkpoint`), the records written and their partitions
(:mod:`broker.feed_writer`), the ledger, claims and embargo followed
(:mod:`broker.ledger_follower`), and lag (:mod:`broker.lag`).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from broker.catalog import SchemaCatalog
from broker.checkpoint import Checkpoint, Partition
from broker.claims import RecordClaims
from broker.clock import now_ms
from broker.codec import AvroCodec
from broker.connection import KafkaConnection
from broker.contract import INBOUND_PATTERN, topic_owner
from broker.embargo import EmbargoBook
from broker.errors import (
    PolicyError,
    RouterError,
    RoutingWorkerLostError,
    TransactionTimeoutError,
)
from broker.feed_writer import FeedWriter
from broker.lag import report_lag
from broker.ledger import DeliveryLedger
from broker.ledger_follower import LedgerFollower
from broker.metrics import Health, RouterMetrics
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies, policy_version
from broker.router_keys import match_key_from, router_signing_key
from broker.routing import Inbound, RecordRouter, Writes
from broker.settings import Settings
from broker.topics import DLQ_MAX_BYTES
from broker.transaction import RouterState, Transaction
from broker.transactional_producer import TransactionalProducer
from broker.worker_supervisor import WorkerSupervisor

log = logging.getLogger("action.router")

_POLICY_CHECK_INTERVAL_S = 5.0
_EMBARGO_CHECK_INTERVAL_S = 5.0  # how often ended embargoes are looked for
_LAG_INTERVAL_S = 5.0


class _InjectedAbortError(Exception):
    """Fault injection (router_abort_ratio): abort this transaction on purpose."""


class RouterService:
    def __init__(self, settings: Settings, kafka: KafkaConnection, metrics: RouterMetrics) -> None:
        self.settings = settings
        self.kafka = kafka
        self.metrics = metrics
        self.health = Health()
        self.catalog = SchemaCatalog.load()
        self.codec = AvroCodec(self.catalog, max_record_bytes=settings.router_max_record_bytes)
        self.match_key = match_key_from(settings)
        self.core = self._compile(load_policies(settings.policy_dir))
        self._policy_fingerprint = policy_version(settings.policy_dir)
        self.transactional_id = f"{settings.router_group}.{settings.router_instance}"
        self.ledger = DeliveryLedger()
        self.claims = RecordClaims()
        self.embargo = EmbargoBook()
        self.state = RouterState(self.ledger, self.claims, self.embargo)
        self._ledger_stale = True
        self._sole_instance: bool | None = None  # known after the first poll's rebalance
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._random = random.Random()  # noqa: S311 - fault injection, not security
        self.producer = TransactionalProducer(
            kafka, settings, self.transactional_id, metrics, self.health, self._stop
        )
        self.writer = FeedWriter(self.producer)
        self._consumer: Consumer | None = None
        self._poll_records = settings.router_batch_records * settings.router_poll_transactions
        self._checkpoint: Checkpoint | None = None
        self._follower: LedgerFollower | None = None
        self.workers = WorkerSupervisor(settings)
        self._last_routed_ms: dict[Partition, int] = {}

    # --- control (signal handlers call these) -----------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # --- policies ---------------------------------------------------------------------

    def _compile(self, policy_set: PolicySet) -> RecordRouter:
        router_key = router_signing_key(policy_set.registry, self.settings)
        self.metrics.set_policy_version(policy_set.version)
        return RecordRouter(policy_set, self.codec, self.match_key, router_key=router_key)

    def reload_if_changed(self) -> None:
        """Reload on SIGHUP or when the folder's content changes; a folder that fails
        validation is refused and the version in force stays."""
        try:
            fingerprint = policy_version(self.settings.policy_dir)
        except OSError:
            fingerprint = self._policy_fingerprint
        if not self._reload.is_set() and fingerprint == self._policy_fingerprint:
            return
        # Try each new content once, whether a SIGHUP or the folder watch noticed it: a
        # SIGHUP after an edit used to reload, then reload again on the watch's next look.
        self._policy_fingerprint = fingerprint
        self._reload.clear()
        try:
            policy_set = load_policies(self.settings.policy_dir)
        except PolicyError as exc:
            self.metrics.policy_reloads.labels("refused").inc()
            log.error(
                "policy reload refused, %s stays in force: %s", self.core.policy_set.version, exc
            )
            return
        if policy_set.version != self.core.policy_set.version:
            log.info("policies %s -> %s", self.core.policy_set.version, policy_set.version)
        self.core = self._compile(policy_set)
        if self.workers.running:
            self.workers.start(self.core)
        self.metrics.policy_reloads.labels("applied").inc()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        log.info(
            "router %s starting: policies %s, Kafka %s",
            self.transactional_id,
            self.core.policy_set.version,
            self.kafka,
        )
        self.workers.start(self.core)
        if not self._connect():
            self.close()
            log.info("router %s stopped before Kafka answered", self.transactional_id)
            return 0
        # Start-up's objects (modules, schemas, policies, clients) live as long as the
        # process: frozen, the collector's full passes stop walking them (see routing_pool).
        gc.freeze()
        last_policy_check = last_lag = last_embargo_check = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._reload.is_set() or now - last_policy_check > _POLICY_CHECK_INTERVAL_S:
                    self.reload_if_changed()
                    last_policy_check = now
                batch = self._poll()
                self.health.beat()
                self.health.ready = True
                if batch:
                    self._route_poll(batch)
                if now - last_lag > _LAG_INTERVAL_S and self._consumer is not None:
                    self.claims.expire(now_ms())
                    self.metrics.record_ids.set(len(self.claims))
                    report_lag(self._consumer, self.metrics, self._last_routed_ms)
                    last_lag = now
                if now - last_embargo_check > _EMBARGO_CHECK_INTERVAL_S:
                    self._release_ended_embargoes()
                    last_embargo_check = now
        finally:
            self.close()
        log.info("router %s stopped", self.transactional_id)
        return 0

    def _poll(self) -> list[Inbound]:
        """The next records; a consumer that failed fatally (fenced after a coordinator
        moved, say) is replaced, and the new one starts at the committed offsets."""
        assert self._consumer is not None
        # consume(n, timeout) waits for all n or the timeout: at a trickle of records that
        # is half a second per poll. So wait for the first record only, then take what
        # has already arrived, up to a poll's worth.
        messages = self._consumer.consume(num_messages=1, timeout=0.5)
        if messages:
            messages += self._consumer.consume(num_messages=self._poll_records - 1, timeout=0)
        inbound = []
        for message in messages:
            error = message.error()
            if error is None:
                inbound.append(_inbound(message))
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # (A consumer's fatal error arrives as an event whose flag is not set.)
                self._renew_consumer(error.str())
                return []
            else:
                log.warning("consuming %s: %s", message.topic(), error.str())
        return inbound

    def _renew_consumer(self, why: str) -> None:
        """A new consumer in place of one that cannot go on: nothing staged survives, and
        it starts from the committed offsets and chain heads (what a rewind gives)."""
        log.warning("the inbound consumer failed (%s); replacing it", why)
        self.metrics.transactions.labels("failed").inc()
        self.state.abort()
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException as exc:
                log.warning("closing the failed consumer: %s", exc)
        self._consumer = self._new_consumer()
        self._checkpoint = Checkpoint(self._consumer)
        self._last_routed_ms.clear()
        self._ledger_stale = True
        self._sole_instance = None

    def _connect(self) -> bool:
        """The Kafka clients, tried again with backoff while Kafka does not answer (one
        log line, not one per attempt); False when told to stop meanwhile."""
        attempt = 0
        while True:
            try:
                self._follower = LedgerFollower(
                    self.kafka,
                    f"{self.transactional_id}.ledger",
                    self.settings.router_group,
                    self.ledger,
                    self.claims,
                    self.embargo,
                )
                self.producer.start()
                self._consumer = self._new_consumer()
                self._checkpoint = Checkpoint(self._consumer)
                return True
            except KafkaException as exc:
                if attempt == 0:
                    log.warning("cannot reach Kafka at %s yet (%s); retrying", self.kafka, exc)
                self._close_clients()
                attempt += 1
                if self._stop.wait(min(30.0, 2.0**attempt)):
                    return False
            except RouterError:
                if self._stop.is_set():
                    return False
                raise

    def close(self) -> None:
        self.health.ready = False
        self._close_clients()
        self.workers.close()

    def _close_clients(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._follower is not None:
            self._follower.close()
        self.producer.close()
        self._consumer = self._follower = self._checkpoint = None

    def _new_consumer(self) -> Consumer:
        consumer = Consumer(
            {
                **self.kafka.librdkafka_config(),
                "group.id": self.settings.router_group,
                "client.id": f"{self.transactional_id}.consumer",
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
                "group.instance.id": self.transactional_id,
                "session.timeout.ms": self.settings.router_session_timeout_ms,
                "logger": logging.getLogger("kafka.librdkafka"),
            }
        )
        consumer.subscribe(
            [INBOUND_PATTERN],
            on_assign=lambda _consumer, partitions: self.assigned(partitions),
            on_revoke=lambda _consumer, partitions: self.forget(partitions),
            on_lost=lambda _consumer, partitions: self.forget(partitions),
        )
        return consumer

    def _route_poll(self, inbound: list[Inbound]) -> None:
        """One poll's records, in transactions of ``router_batch_records``. The workers get
        the whole poll at once, so they route the next transaction's records while the
        current one flushes and commits. An abort drops the rest of the poll (the consumer
        is rewound to the committed offsets); no rebalance can come between, as that only
        happens inside consume()."""
        if self._ledger_stale or not self._routes_alone():
            # With other instances routing, their claims are read before each poll's
            # records are decided: a record a rival sends after seeing another member's
            # delivery is routed after that delivery's transaction committed, and so after
            # its claim, which this read then includes.
            self._catch_up_ledger()
        size = self.settings.router_batch_records
        routed = self.workers.routed(inbound, self.core, self.ledger)
        try:
            for start in range(0, len(inbound), size):
                if start and self._stop.is_set():
                    return  # what is left was never committed: the next owner reads it
                self.health.beat()
                if not self._transact(inbound[start : start + size], routed):
                    return
        finally:
            routed.close()  # cancels whatever the workers have not started

    def _transact(
        self, records: list[Inbound], routed: Generator[tuple[Inbound, Writes, float]]
    ) -> bool:
        """Write ``records`` (the next ones ``routed`` yields) in one transaction; whether
        it committed."""
        last: dict[Partition, Inbound] = {}

        def fill(work: Transaction) -> dict[Partition, int]:
            for expected in records:
                record, writes, seconds = next(routed)
                assert record is expected, "routed results come back in input order"
                started = time.perf_counter()
                work.write(writes, record)
                self.metrics.processing.observe(seconds + time.perf_counter() - started)
                work.records += 1
                last[(record.topic, record.partition)] = record
            if self._random.random() < self.settings.router_abort_ratio:
                raise _InjectedAbortError
            return {tp: record.offset + 1 for tp, record in last.items()}

        work = self._in_transaction(fill)
        if work is None:
            return False
        self._committed(last, work)
        return True

    def _in_transaction(
        self, fill: Callable[[Transaction], dict[Partition, int]]
    ) -> Transaction | None:
        """Begin a transaction, let ``fill`` write it and say the inbound positions it
        consumed, and commit them with the chain heads reached; the transaction, or None
        when it was aborted (the consumer is then rewound)."""
        work = self._transaction()
        try:
            self.producer.begin()
            positions = fill(work)
            self._commit_transaction(positions, work)
        except (_InjectedAbortError, KafkaException) as exc:
            self._abort(exc)
            return None
        except TransactionTimeoutError as exc:
            log.error("%s; replacing the producer and rewinding", exc)
            self._fail()
            return None
        except RoutingWorkerLostError as exc:
            log.error("routing workers lost (%s); aborting, restarting them", exc)
            self.metrics.worker_restarts.inc()
            self._abort(exc)
            self.workers.lost(exc, self.core)
            return None
        finally:
            work.count()
        return work

    def _transaction(self) -> Transaction:
        assert self._checkpoint is not None
        return Transaction(self._checkpoint, self.writer, self.state, self.metrics)

    def _commit_transaction(self, positions: dict[Partition, int], work: Transaction) -> None:
        """Commit the open transaction with ``positions`` and the chain heads ``work``
        reached (every transactional call with its deadline)."""
        assert self._consumer is not None
        assert self._checkpoint is not None
        heads = {tp: work.head(tp) for tp in positions}
        offsets = self._checkpoint.offsets(positions, heads)
        self.producer.commit(offsets, self._consumer.consumer_group_metadata())

    def _release_ended_embargoes(self) -> None:
        """Decide, in one transaction, every held record of this instance's partitions
        whose embargo (for some recipient) has ended: deliveries, audit entries, ledger and
        embargo entries, and the partitions' chain heads with their unchanged offsets."""
        consumer, checkpoint = self._consumer, self._checkpoint
        if consumer is None or checkpoint is None:
            return
        assigned = {
            (tp.topic, tp.partition): (tp.topic, tp.partition) for tp in consumer.assignment()
        }
        if not assigned:
            return
        if self._ledger_stale:  # started or rebalanced, and no record polled since
            self._catch_up_ledger()
        due = self.embargo.due(now_ms(), assigned)
        if not due:
            self.metrics.embargo_held.set(len(self.embargo))
            return
        outcomes: Counter[str] = Counter()
        now = dt.datetime.now(dt.UTC)

        def fill(work: Transaction) -> dict[Partition, int]:
            touched: set[Partition] = set()
            for key, held in due:
                writes = self.core.released(
                    key, held, now=now, ledger=self.ledger, decided_at_ms=now_ms()
                )
                work.write(writes, Inbound.held(held), count_input=False)
                touched.add(assigned[(held.topic, held.partition)])
                for decision in writes.decisions:
                    outcomes["delivered" if decision.delivered else "withheld"] += 1
            return {tp: checkpoint.position(tp) for tp in touched}

        work = self._in_transaction(fill)
        if work is None:
            return
        self._committed({}, work)
        for outcome, count in outcomes.items():
            self.metrics.embargo_released.labels(outcome).inc(count)
        self.metrics.embargo_held.set(len(self.embargo))
        log.info(
            "embargoes ended: %d held records decided (%s)",
            len(due),
            ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())),
        )

    def _committed(self, last: dict[Partition, Inbound], work: Transaction) -> None:
        assert self._checkpoint is not None
        self._checkpoint.committed(work.heads)
        self.workers.settled({tp: record.offset for tp, record in last.items()})
        self.state.commit()
        self.metrics.transactions.labels("committed").inc()
        self.metrics.records_committed.inc(work.records)
        now_ms = time.time() * 1000
        self.metrics.last_success.set(now_ms / 1000)
        for timestamp in work.feed_timestamps:
            self.metrics.end_to_end.observe(max(0.0, (now_ms - timestamp) / 1000))
        for tp, record in last.items():
            self._last_routed_ms[tp] = record.timestamp_ms

    def _abort(self, cause: BaseException) -> None:
        injected = isinstance(cause, _InjectedAbortError)
        if not injected:
            log.warning("transaction failed (%s: %s); aborting", type(cause).__name__, cause)
        try:
            self.producer.abort()
        except (TransactionTimeoutError, KafkaException) as exc:
            log.error("abort failed (%s); replacing the producer", exc)
            self._fail()
            return
        self.metrics.transactions.labels("aborted").inc()
        self._rewind()

    def _fail(self) -> None:
        self.metrics.transactions.labels("failed").inc()
        self.producer.replace()
        self._rewind()

    def _rewind(self) -> None:
        """Back to the last committed offsets and chain heads; staged ledger entries,
        record-id claims and embargo holds go."""
        assert self._checkpoint is not None
        self.state.abort()
        try:
            positions = self._checkpoint.rewind()
        except KafkaException as exc:  # the consumer cannot read or seek to its offsets
            self._renew_consumer(f"rewind failed: {exc}")
            return
        log.info("rewound %d inbound partitions to their committed offsets", len(positions))

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked (or lost): called inside consume(), no transaction open."""
        gone = [(tp.topic, tp.partition) for tp in partitions]
        if self._checkpoint is not None:
            self._checkpoint.forget(gone)
        for tp in gone:
            self._last_routed_ms.pop(tp, None)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """After a rebalance (inside consume(), no transaction open): read the ledger and
        claims again, as another instance may have committed indicators on these
        partitions, and find out (outside the callback, which may not block) whether
        this instance now routes every inbound partition alone."""
        log.info("assigned %d inbound partitions", len(partitions))
        self._ledger_stale = True
        self._sole_instance = None

    def _routes_alone(self) -> bool:
        """Whether this instance owns every inbound partition: then only its own writes
        change the claims and the ledger, and reading them back before each poll is not
        needed."""
        if self._sole_instance is None:
            assert self._consumer is not None
            assignment = self._consumer.assignment()
            topics = self._consumer.list_topics(timeout=30).topics
            total = sum(
                len(found.partitions) for name, found in topics.items() if topic_owner(name)
            )
            self._sole_instance = len(assignment) >= total > 0
            log.info(
                "routing %d of %d inbound partitions%s",
                len(assignment),
                total,
                " alone"
                if self._sole_instance
                else "; claims and ledger are read before each poll",
            )
        return self._sole_instance

    def _catch_up_ledger(self) -> None:
        """Read the ledger, record-id and embargo topics up to their last stable offsets:
        every indicator and record id committed before now (by any instance) is known."""
        assert self._follower is not None
        self._follower.catch_up()
        if self._ledger_stale:
            expired = self.claims.expire(now_ms())
            self.metrics.record_ids.set(len(self.claims))
            log.info(
                "ledger: %d indicators; record ids: %d remembered, %d expired; %d held "
                "by an embargo",
                len(self.ledger),
                len(self.claims),
                expired,
                len(self.embargo),
            )
            self.metrics.embargo_held.set(len(self.embargo))
        self._ledger_stale = False


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
