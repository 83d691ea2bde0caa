"""``action-broker run``: the router service, exactly once between inbound topics and feeds.

One consumer group reads every ``action.in.<member>`` topic. Each poll's records are
written in one or more Kafka transactions of ``router_batch_records``: per transaction,
the feed records, the audit entries, the dead letters, the ledger entries and the
consumed offsets (with each partition's audit-chain head as offset metadata) commit
together or not at all. The pure work per record is
:class:`broker.routing.RecordRouter`; this module is the Kafka I/O around it.

Defence in depth around kafka-python's transactions (it lacks KIP-890 part 2, and its
commit/abort/offset calls wait without a timeout): every transactional call has a
deadline; after an abort the consumer is rewound to the committed offsets (it does not
rewind by itself); a call that times out or fails fatally replaces the producer with a
new one under the same transactional id, whose epoch bump fences the old one.
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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition

from broker.audit import ChainHead
from broker.catalog import SchemaCatalog
from broker.claims import Claim, RecordClaims, content_digest
from broker.codec import AvroCodec
from broker.connection import KafkaConnection
from broker.contract import (
    AUDIT_TOPIC,
    DLQ_DETAIL_HEADER,
    DLQ_ORIGIN_HEADER,
    DLQ_REASON_HEADER,
    DLQ_TIMESTAMP_HEADER,
    DLQ_TOPIC,
    EMBARGO_TOPIC,
    INBOUND_PATTERN,
    LEDGER_TOPIC,
    RECORD_IDS_TOPIC,
    topic_owner,
)
from broker.embargo import EmbargoBook, HeldRecord
from broker.errors import (
    ConfigError,
    PolicyError,
    RouterError,
    RoutingWorkerLostError,
    TransactionTimeoutError,
)
from broker.keys import key_from_file
from broker.ledger import DeliveryLedger
from broker.membership import MemberRegistry
from broker.metrics import Health, RouterMetrics
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies, policy_version
from broker.policy.treatments import MatchTokenKey
from broker.routing import Checked, DeadLetter, Inbound, RecordRouter, Writes
from broker.routing_pool import RoutingPool
from broker.settings import Settings
from broker.topics import DLQ_MAX_BYTES

log = logging.getLogger("action.router")
T = TypeVar("T")

_POLICY_CHECK_INTERVAL_S = 5.0
_EMBARGO_CHECK_INTERVAL_S = 5.0  # how often ended embargoes are looked for
_LAG_INTERVAL_S = 5.0


class _InjectedAbortError(Exception):
    """Fault injection (router_abort_ratio): abort this transaction on purpose."""


@dataclass
class _Batch:
    """What one transaction wrote, applied to the in-memory state only once it commits."""

    heads: dict[TopicPartition, ChainHead]
    feed_timestamps: list[int]
    records: int = 0
    # Counted per batch and added to the metrics once: a counter per decision and per
    # field was a measurable share of the router's own process.
    records_in: Counter[tuple[str, str]] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    treatments: Counter[tuple[str, str]] = field(default_factory=Counter)

    def count(self, metrics: RouterMetrics) -> None:
        for (source, event_type), n in self.records_in.items():
            metrics.records_in.labels(source, event_type).inc(n)
        for (source, recipient, outcome), n in self.decisions.items():
            metrics.decision(source, recipient, outcome, n)
        for (path, treatment), n in self.treatments.items():
            metrics.treatment(path, treatment, n)


def match_key_from(settings: Settings) -> MatchTokenKey:
    """The consortium's match-token secret; the example consortium's public one only when
    the settings ask for demo keys (``ACTION_DEMO_KEYS``), never by default."""
    if settings.match_secret is not None:
        secret = settings.match_secret.get_secret_value().encode()
        return MatchTokenKey(settings.match_key_version, secret)
    if not settings.demo_keys:
        raise ConfigError(
            "no match-token secret: the router will not hash identifiers with a public one",
            hint="set ACTION_MATCH_SECRET (ACTION_DEMO_KEYS=true for the example consortium "
            "on a development cluster)",
        )
    from policies.demo_keys import demo_match_secret  # the demo's, off the product path

    log.warning("ACTION_DEMO_KEYS: match tokens use the example consortium's public secret")
    return MatchTokenKey(settings.match_key_version, demo_match_secret())


def router_signing_key(
    registry: MemberRegistry, settings: Settings
) -> tuple[str, Ed25519PrivateKey]:
    """(kid, key) the router signs feed records with: the configured file's key under the
    registry's newest router key id; the demo key only when the settings ask for it."""
    if not registry.router_keys:
        raise ConfigError("members.yaml lists no router_keys: readers could not verify feeds")
    kid = registry.router_keys[-1].kid
    if settings.router_signing_key_file is not None:
        key: Ed25519PrivateKey = key_from_file(settings.router_signing_key_file, Ed25519PrivateKey)
        return kid, key
    if not settings.demo_keys:
        raise ConfigError(
            "no router signing key: feed records would carry no signature members can trust",
            hint="set ACTION_ROUTER_SIGNING_KEY_FILE (ACTION_DEMO_KEYS=true for the example "
            "consortium on a development cluster)",
        )
    from policies.demo_keys import demo_router_key  # the demo's, off the product path

    log.warning("ACTION_DEMO_KEYS: feed records carry the demo router key's signature")
    return kid, demo_router_key()


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
        self._heads: dict[TopicPartition, ChainHead] = {}
        self._ledger_stale = True
        self._sole_instance: bool | None = None  # known after the first poll's rebalance
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._random = random.Random()  # noqa: S311 - fault injection, not security
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._pool: RoutingPool | None = None
        self._ledger_reader: KafkaConsumer | None = None
        self._last_processed_ms: dict[TopicPartition, int] = {}
        # Positions of records a dead worker held: retried alone, dead-lettered when one
        # kills a worker again (see _suspect). Held in memory: a router restart forgets
        # them, and the record gets its two tries again.
        self._suspects: dict[str, str] = {}
        self._audit_partitions: dict[bytes, int] = {}
        self._partition_counts: dict[str, int] = {}

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
        if self._pool is not None:
            self._start_pool()
        self.metrics.policy_reloads.labels("applied").inc()

    # --- Kafka clients ----------------------------------------------------------------

    def _new_consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            **self.kafka.client_config(),
            group_id=self.settings.router_group,
            client_id=f"{self.transactional_id}.consumer",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # Round robin over all inbound partitions: the range assignor splits each
            # topic on its own, and with three partitions per topic gave one of two
            # instances two of every three (16 against 8). Range stays as the fallback an
            # instance of an older version still speaks, so a rolling upgrade can agree.
            partition_assignment_strategy=(RoundRobinPartitionAssignor, RangePartitionAssignor),
            max_poll_records=self.settings.router_batch_records
            * self.settings.router_poll_transactions,
            max_partition_fetch_bytes=DLQ_MAX_BYTES,
            metadata_max_age_ms=10_000,  # new members' topics are picked up quickly
            # Static membership: a restarted instance takes its partitions straight back
            # instead of waiting out the dead member's session.
            group_instance_id=self.transactional_id,
            session_timeout_ms=self.settings.router_session_timeout_ms,
        )
        consumer.subscribe(pattern=INBOUND_PATTERN, listener=_Rebalance(self))
        return consumer

    def _new_producer(self) -> KafkaProducer:
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
        self._bounded("init_transactions", producer.init_transactions)
        return producer

    def _replace_producer(self) -> None:
        self.metrics.producer_resets.inc()
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.close(timeout=2)
            except Exception:  # the old producer is being thrown away, whatever ails it
                log.warning("closing the old transactional producer failed", exc_info=True)
        self._producer = self._new_producer()
        log.warning(
            "transactional producer %s replaced; the old one is fenced", self.transactional_id
        )

    def _new_ledger_reader(self) -> KafkaConsumer:
        return KafkaConsumer(
            **self.kafka.client_config(),
            client_id=f"{self.transactional_id}.ledger",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )

    def _bounded(self, what: str, call: Callable[..., T], *args: Any) -> T:
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

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        log.info(
            "router %s starting: policies %s, Kafka %s",
            self.transactional_id,
            self.core.policy_set.version,
            self.kafka,
        )
        self._start_pool()
        try:
            self._ledger_reader = self._new_ledger_reader()
            self._producer = self._new_producer()
            self._consumer = self._new_consumer()
        except kafka_errors.KafkaError as exc:
            self.close()
            raise RouterError(f"cannot connect to Kafka at {self.kafka}: {exc}") from exc
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
                batch = self._consumer.poll(timeout_ms=500)
                self.health.beat()
                self.health.ready = True
                if batch:
                    self._route_poll(batch)
                if now - last_lag > _LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
                if now - last_embargo_check > _EMBARGO_CHECK_INTERVAL_S:
                    self._release_ended_embargoes()
                    last_embargo_check = now
        finally:
            self.close()
        log.info("router %s stopped", self.transactional_id)
        return 0

    def close(self) -> None:
        self.health.ready = False
        for client in (self._consumer, self._ledger_reader):
            if client is not None:
                client.close(autocommit=False)
        if self._producer is not None:
            self._producer.close(timeout=5)
        if self._pool is not None:
            self._pool.close()
        self._consumer = self._ledger_reader = self._producer = self._pool = None

    def _route_poll(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """One poll's records, in transactions of ``router_batch_records``. The workers get
        the whole poll at once, so they route the next transaction's records while the
        current one flushes and commits. An abort drops the rest of the poll (the consumer
        is rewound to the committed offsets); no rebalance can come between, as that only
        happens inside poll()."""
        if self._ledger_stale or not self._routes_alone():
            # With other instances routing, their claims are read before each poll's
            # records are decided: a record a rival sends after seeing another member's
            # delivery is routed after that delivery's transaction committed, and so after
            # its claim, which this read then includes.
            self._catch_up_ledger()
        for tp in polled:
            if tp not in self._heads:
                self._heads[tp] = self._committed_head(tp)
        inbound = [
            Inbound(
                r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp
            )
            for records in polled.values()
            for r in records
        ]
        size = self.settings.router_batch_records
        routed = self._routed(inbound)
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
        assert self._consumer is not None
        assert self._producer is not None
        work = _Batch(heads=dict(self._heads), feed_timestamps=[])
        last: dict[TopicPartition, Inbound] = {}
        try:
            self._producer.begin_transaction()
            for expected in records:
                record, writes, seconds = next(routed)
                assert record is expected, "routed results come back in input order"
                started = time.perf_counter()
                self._write(writes, record, work)
                self.metrics.processing.observe(seconds + time.perf_counter() - started)
                work.records += 1
                last[TopicPartition(record.topic, record.partition)] = record
            offsets = {
                tp: OffsetAndMetadata(record.offset + 1, work.heads[tp].to_metadata(), -1)
                for tp, record in last.items()
            }
            if self._random.random() < self.settings.router_abort_ratio:
                raise _InjectedAbortError
            self._commit_transaction(offsets)
        except (_InjectedAbortError, kafka_errors.KafkaError) as exc:
            self._abort(exc)
            return False
        except TransactionTimeoutError as exc:
            log.error("%s; replacing the producer and rewinding", exc)
            self._fail()
            return False
        except RoutingWorkerLostError as exc:
            log.error("routing workers lost (%s); aborting, restarting them", exc)
            self.metrics.worker_restarts.inc()
            self._suspect(exc.suspects)
            self._abort(exc)
            self._start_pool()
            return False
        finally:
            work.count(self.metrics)
        self._committed(last, work)
        return True

    def _commit_transaction(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Flush, send ``offsets`` (with their chain heads) and commit, each with its deadline."""
        assert self._consumer is not None
        assert self._producer is not None
        # Flushed here, not by the commit: kafka-python's commit starts a flush it
        # never ends, after which every record goes out alone whatever linger_ms says.
        self._bounded("flush", self._producer.flush)
        send_offsets = self._producer.send_offsets_to_transaction
        self._bounded(
            "send_offsets_to_transaction", send_offsets, offsets, self._consumer.group_metadata()
        )
        self._bounded("commit_transaction", self._producer.commit_transaction)

    def _routed(self, records: list[Inbound]) -> Generator[tuple[Inbound, Writes, float]]:
        """Each record's writes, in order, with the seconds spent deciding it. Lazy: the
        ledger entries of earlier records are staged before a later retraction is decided."""
        now = dt.datetime.now(dt.UTC)
        if self._pool is None:
            for record in records:
                started = time.perf_counter()
                writes = self.core.writes(
                    record, now=now, ledger=self.ledger, decided_at_ms=_now_ms()
                )
                assert isinstance(writes, Writes), "with the ledger, every record is decided"
                yield record, writes, time.perf_counter() - started
            return
        routable = [r for r in records if self._suspects.get(r.position) != _POISON]
        outcomes = self._pool.route(routable, now, alone=self._suspects.keys())
        try:
            for record in records:
                if self._suspects.get(record.position) == _POISON:
                    yield record, _worker_lost(record), 0.0
                    continue
                outcome, seconds = next(outcomes)
                if isinstance(outcome, Checked):  # a retraction: only this process has the ledger
                    started = time.perf_counter()
                    outcome = self.core.decided_writes(
                        outcome, now=now, ledger=self.ledger, decided_at_ms=_now_ms()
                    )
                    seconds += time.perf_counter() - started
                yield record, outcome, seconds
        finally:
            outcomes.close()  # cancels the chunks no worker has started

    def _suspect(self, records: tuple[Inbound, ...]) -> None:
        """Records a dead worker was routing: retried each alone; one that kills a worker
        again while routed alone is poison, and becomes a dead letter (router.worker_lost)
        instead of stopping routing for every member."""
        for record in records:
            alone = len(records) == 1 and record.position in self._suspects
            self._suspects[record.position] = _POISON if alone else _SUSPECT
            if alone:
                log.error("record %s killed a routing worker twice: dead-lettered", record.position)

    def _start_pool(self) -> None:
        """(Re)start the routing workers with the policies in force; none when configured so."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.settings.router_workers > 0:
            crash_key = self.settings.router_fault_crash_key
            self._pool = RoutingPool(
                self.core,
                self.settings.router_workers,
                deadline_s=self.settings.router_worker_deadline_s,
                crash_key=crash_key.encode() if crash_key else None,
            )
            self._pool.warm_up()
            log.info("routing workers %s (policies %s)", self._pool.pids, self._pool.policy_version)

    def _admitted(self, writes: Writes, inbound: Inbound) -> Writes:
        """``writes`` if the record's id is its own and new, after claiming it; else its
        dead letter (:mod:`broker.claims`): a replay, a reused id or another source's id."""
        assert self._producer is not None
        identity, source = writes.identity, writes.source
        assert identity is not None
        assert source is not None
        now_ms = _now_ms()
        value = inbound.value or b""
        refusal = self.claims.refusal(
            source,
            identity.record_id,
            value,
            event_ms=identity.event_ms,
            now_ms=now_ms,
            indicator_owner=self.ledger.owner_of(identity.record_id),
        )
        if refusal is not None:
            return writes.refused(*refusal)
        claim = Claim(source, content_digest(value), now_ms)
        self.claims.stage(identity.record_id, claim)
        key = identity.record_id.encode()
        self._producer.send(
            RECORD_IDS_TOPIC,
            value=claim.encode(),
            key=key,
            partition=self._keyed_partition(RECORD_IDS_TOPIC, key),
        )
        return writes

    def _write(
        self, writes: Writes, inbound: Inbound, work: _Batch, *, count_input: bool = True
    ) -> None:
        assert self._producer is not None
        producer = self._producer
        if writes.dead_letter is None and writes.identity is not None:
            writes = self._admitted(writes, inbound)
        source = writes.source or topic_owner(inbound.topic) or "unknown"
        if count_input:  # a held record's release is not a new input
            work.records_in[(source, writes.event_type or "undecodable")] += 1
        if writes.dead_letter is not None:
            letter = writes.dead_letter
            headers = [
                *inbound.headers,
                (DLQ_REASON_HEADER, letter.reason.encode()),
                (DLQ_DETAIL_HEADER, letter.detail[:2000].encode()),
                (DLQ_ORIGIN_HEADER, inbound.position.encode()),
                (DLQ_TIMESTAMP_HEADER, str(inbound.timestamp_ms).encode()),
            ]
            producer.send(DLQ_TOPIC, value=inbound.value, key=inbound.key, headers=headers)
            self.metrics.dlq.labels(letter.reason).inc()
            return
        for feed in writes.feeds:
            producer.send(
                feed.topic,
                value=feed.value,
                key=feed.key,
                headers=feed.headers,
                partition=self._keyed_partition(feed.topic, feed.key),
            )
            if count_input:  # a release's wait is the embargo's, not the router's latency
                work.feed_timestamps.append(inbound.timestamp_ms)
        tp = TopicPartition(inbound.topic, inbound.partition)
        head = work.heads[tp]
        chain_key = head.chain.encode()
        partition = self._audit_partition(chain_key)
        head, entries = head.extend(decision.entry for decision in writes.decisions)
        for decision, encoded in zip(writes.decisions, entries, strict=True):
            producer.send(AUDIT_TOPIC, value=encoded, key=chain_key, partition=partition)
            outcome = "delivered" if decision.delivered else "withheld"
            work.decisions[(decision.source, decision.recipient, outcome)] += 1
            work.treatments.update(decision.treatments)
        work.heads[tp] = head
        if writes.embargo is not None:
            self._write_embargo(*writes.embargo)
        if writes.ledger_update is not None:
            key, entry_value = writes.ledger_update
            self.ledger.stage(key, entry_value)
            encoded_key = key.encode()
            producer.send(
                LEDGER_TOPIC,
                value=entry_value.encode(),
                key=encoded_key,
                partition=self._keyed_partition(LEDGER_TOPIC, encoded_key),
            )

    def _write_embargo(self, key: str, held: HeldRecord | None) -> None:
        """Hold a record (or end what is held of it: a tombstone, when anything is)."""
        assert self._producer is not None
        if held is None and self.embargo.get(key) is None:
            return
        self.embargo.stage(key, held)
        encoded_key = key.encode()
        value = None if held is None else held.encode()
        partition = self._keyed_partition(EMBARGO_TOPIC, encoded_key)
        self._producer.send(EMBARGO_TOPIC, value=value, key=encoded_key, partition=partition)

    def _release_ended_embargoes(self) -> None:
        """Decide, in one transaction, every held record of this instance's partitions
        whose embargo (for some recipient) has ended: deliveries, audit entries, ledger and
        embargo entries, and the partitions' chain heads with their unchanged offsets."""
        consumer, producer = self._consumer, self._producer
        if consumer is None or producer is None:
            return
        assigned = {(tp.topic, tp.partition): tp for tp in consumer.assignment()}
        if not assigned:
            return
        if self._ledger_stale:  # started or rebalanced, and no record polled since
            self._catch_up_ledger()
        due = self.embargo.due(_now_ms(), assigned)
        if not due:
            self.metrics.embargo_held.set(len(self.embargo))
            return
        for _, held in due:
            tp = assigned[(held.topic, held.partition)]
            if tp not in self._heads:
                self._heads[tp] = self._committed_head(tp)
        work = _Batch(heads=dict(self._heads), feed_timestamps=[])
        outcomes: Counter[str] = Counter()
        touched: set[TopicPartition] = set()
        now = dt.datetime.now(dt.UTC)
        try:
            producer.begin_transaction()
            for key, held in due:
                writes = self.core.released(
                    key, held, now=now, ledger=self.ledger, decided_at_ms=_now_ms()
                )
                inbound = Inbound(
                    held.topic,
                    held.partition,
                    held.offset,
                    held.key,
                    held.value,
                    held.headers,
                    held.timestamp_ms,
                )
                self._write(writes, inbound, work, count_input=False)
                touched.add(assigned[(held.topic, held.partition)])
                for decision in writes.decisions:
                    outcomes["delivered" if decision.delivered else "withheld"] += 1
            offsets = {
                tp: OffsetAndMetadata(consumer.position(tp), work.heads[tp].to_metadata(), -1)
                for tp in touched
            }
            self._commit_transaction(offsets)
        except kafka_errors.KafkaError as exc:
            self._abort(exc)
            return
        except TransactionTimeoutError as exc:
            log.error("%s; replacing the producer and rewinding", exc)
            self._fail()
            return
        finally:
            work.count(self.metrics)
        self._committed({}, work)
        for outcome, count in outcomes.items():
            self.metrics.embargo_released.labels(outcome).inc(count)
        self.metrics.embargo_held.set(len(self.embargo))
        log.info(
            "embargoes ended: %d held records decided (%s)",
            len(due),
            ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())),
        )

    def _audit_partition(self, chain_key: bytes) -> int:
        """Every entry of a chain goes to one audit partition, so the chain stays in order.
        Computed once per chain (the partitioner's murmur2 per entry was a measurable cost)."""
        partition = self._audit_partitions.get(chain_key)
        if partition is None:
            partition = self._keyed_partition(AUDIT_TOPIC, chain_key)
            self._audit_partitions[chain_key] = partition
        return partition

    def _keyed_partition(self, topic: str, key: bytes) -> int:
        """The partition kafka-python's default partitioner picks for ``key``, without its
        per-record lookups (the topic set, a sorted partition list): some 20 us a record.
        The partition count is read once per topic; partitions added to a topic later are
        used after a restart, and a key keeps its partition meanwhile."""
        count = self._partition_counts.get(topic)
        if count is None:
            assert self._producer is not None
            count = len(self._producer.partitions_for(topic))
            self._partition_counts[topic] = count
        return default_partition(key, count)

    def _committed(self, last: dict[TopicPartition, Inbound], work: _Batch) -> None:
        self._heads.update(work.heads)
        if self._suspects:  # what committed is done with, dead-lettered or routed
            for tp, record in last.items():
                for position in [p for p in self._suspects if _before_or_at(p, tp, record.offset)]:
                    del self._suspects[position]
        self.ledger.commit()
        self.claims.commit()
        self.embargo.commit()
        self.metrics.transactions.labels("committed").inc()
        self.metrics.records_committed.inc(work.records)
        now_ms = time.time() * 1000
        self.metrics.last_success.set(now_ms / 1000)
        for timestamp in work.feed_timestamps:
            self.metrics.end_to_end.observe(max(0.0, (now_ms - timestamp) / 1000))
        for tp, record in last.items():
            self._last_processed_ms[tp] = record.timestamp_ms

    def _abort(self, cause: BaseException) -> None:
        assert self._producer is not None
        injected = isinstance(cause, _InjectedAbortError)
        if not injected:
            log.warning("transaction failed (%s: %s); aborting", type(cause).__name__, cause)
        try:
            self._bounded("abort_transaction", self._producer.abort_transaction)
        except (TransactionTimeoutError, kafka_errors.KafkaError) as exc:
            log.error("abort failed (%s); replacing the producer", exc)
            self._fail()
            return
        self.metrics.transactions.labels("aborted").inc()
        self._rewind()

    def _fail(self) -> None:
        self.metrics.transactions.labels("failed").inc()
        self._replace_producer()
        self._rewind()

    def _rewind(self) -> None:
        """Back to the last committed offsets and chain heads; staged ledger entries and
        record-id claims go."""
        assert self._consumer is not None
        self.ledger.abort()
        self.claims.abort()
        self.embargo.abort()
        for tp in self._consumer.assignment():
            committed = self._consumer.committed(tp, metadata=True)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed.offset)
            self._heads[tp] = ChainHead.from_metadata(
                _chain(tp), committed.metadata if committed else None
            )

    def _committed_head(self, tp: TopicPartition) -> ChainHead:
        assert self._consumer is not None
        committed = self._consumer.committed(tp, metadata=True)
        return ChainHead.from_metadata(_chain(tp), committed.metadata if committed else None)

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._heads.pop(tp, None)
            self._last_processed_ms.pop(tp, None)

    def assigned(self) -> None:
        """After a rebalance: read the ledger and claims again, and find out (outside the
        callback, which may not block) whether this instance now routes every inbound
        partition alone."""
        self._ledger_stale = True
        self._sole_instance = None

    def _routes_alone(self) -> bool:
        """Whether this instance owns every inbound partition: then only its own writes
        change the claims and the ledger, and reading them back before each poll is not
        needed."""
        if self._sole_instance is None:
            assert self._consumer is not None
            assignment = self._consumer.assignment()
            topics = self._consumer.subscription() or set()
            total = sum(len(self._consumer.partitions_for_topic(t) or ()) for t in topics)
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

    def _catch_up_ledger(self, timeout_s: float = 30.0) -> None:
        """Read the ledger and record-id topics up to their last stable offsets: every
        indicator and record id committed before now (by any instance) is then known."""
        reader = self._ledger_reader
        assert reader is not None
        partitions = []
        for topic in (LEDGER_TOPIC, RECORD_IDS_TOPIC, EMBARGO_TOPIC):
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
                load = {
                    LEDGER_TOPIC: self.ledger.load,
                    RECORD_IDS_TOPIC: self.claims.load,
                    EMBARGO_TOPIC: self.embargo.load,
                }[tp.topic]
                for record in records:
                    load(record.key.decode(), record.value)
        if self._ledger_stale:
            expired = self.claims.expire(_now_ms())
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

    def _update_lag(self) -> None:
        self.claims.expire(_now_ms())
        self.metrics.record_ids.set(len(self.claims))
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        self.metrics.assigned_partitions.set(len(assigned))
        lag: dict[str, int] = {}
        age: dict[str, float] = {}
        now_ms = time.time() * 1000
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None:
                continue
            behind = max(0, high - consumer.position(tp))
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
            last = self._last_processed_ms.get(tp)
            seconds = (now_ms - last) / 1000 if behind and last else 0.0
            age[tp.topic] = max(age.get(tp.topic, 0.0), seconds)
        for topic, value in lag.items():
            self.metrics.lag_records.labels(topic).set(value)
            self.metrics.lag_seconds.labels(topic).set(age.get(topic, 0.0))


def default_partition(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` kafka-python's (and Java's) default partitioner
    picks for ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


_SUSPECT = "suspect"
_POISON = "poison"
WORKER_LOST = "router.worker_lost"


def _worker_lost(record: Inbound) -> Writes:
    """The dead letter of a record that killed a routing worker twice, routed alone."""
    detail = (
        "routing this record killed a routing worker twice, the second time routed "
        "alone (a crash in a library it reaches, or memory): dead-lettered so "
        "routing goes on"
    )
    source = topic_owner(record.topic)
    return Writes(source, None, (), (), DeadLetter(WORKER_LOST, detail), None)


def _before_or_at(position: str, tp: TopicPartition, offset: int) -> bool:
    topic_partition, _, at = position.rpartition("@")
    return topic_partition == f"{tp.topic}/{tp.partition}" and int(at) <= offset


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chain(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Called inside poll(), when no transaction is open."""

    def __init__(self, service: RouterService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.service.forget(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %d inbound partitions", len(assigned))
        # Another instance may have committed indicators on these partitions.
        self.service.assigned()
