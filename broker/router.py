"""``action-broker run``: the router service, exactly once between inbound topics and feeds.

One consumer group reads every ``action.in.<member>`` topic. Each poll's records are
written in one or more Kafka transactions of ``router_batch_records``: per transaction,
the feed records, the audit entries, the dead letters, the ledger entries and the
consumed offsets (with each partition's audit-chain head as offset metadata) commit
together or not at all. The pure work per record is
:class:`broker.routing.RecordRouter`; this module is the loop around it (polls, reloads,
readiness), with one module per job beside it: the inbound consumer
(:mod:`broker.inbound_consumer`), each transaction's writes, commit, abort and rewind
(:mod:`broker.transaction`), the transactional producer with its deadlines and
replacement (:mod:`broker.transactional_producer`), offsets and chain heads
(:mod:`broker.checkpoint`), the records written and their partitions
(:mod:`broker.feed_writer`), the ledger, claims and embargo followed
(:mod:`broker.ledger_follower`), embargoes ending (:mod:`broker.embargo_release`),
the routing workers (:mod:`broker.worker_supervisor`) and lag (:mod:`broker.lag`).
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Generator

from confluent_kafka import KafkaException

from broker.catalog import SchemaCatalog
from broker.checkpoint import Partition
from broker.claims import RecordClaims
from broker.clock import now_ms
from broker.codec import AvroCodec
from broker.connection import KafkaConnection
from broker.embargo import EmbargoBook
from broker.embargo_release import release_ended_embargoes
from broker.errors import PolicyError, RouterError, RoutingWorkerLostError
from broker.inbound_consumer import InboundConsumer, InboundConsumerFailedError
from broker.lag import report_lag
from broker.ledger import DeliveryLedger
from broker.ledger_follower import LedgerFollower
from broker.metrics import Health, RouterMetrics
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies, policy_version
from broker.router_keys import match_key_from, router_signing_key
from broker.routing import Inbound, RecordRouter, Writes
from broker.settings import Settings
from broker.transaction import InjectedAbortError, RouterState, Transaction, TransactionRunner
from broker.transactional_producer import TransactionalProducer
from broker.worker_supervisor import WorkerSupervisor

log = logging.getLogger("action.router")

_POLICY_CHECK_INTERVAL_S = 5.0
_EMBARGO_CHECK_INTERVAL_S = 5.0  # how often ended embargoes are looked for
_LAG_INTERVAL_S = 5.0
_RECOVERY_PAUSE_S = 1.0  # before trying again after Kafka failed outside a transaction


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
        self.state = RouterState(DeliveryLedger(), RecordClaims(), EmbargoBook())
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._random = random.Random()  # noqa: S311 - fault injection, not security
        self.producer = TransactionalProducer(
            kafka, settings, self.transactional_id, metrics, self.health, self._stop
        )
        # The Kafka clients, once connected (see _connect).
        self.runner: TransactionRunner | None = None
        self._follower: LedgerFollower | None = None
        self.workers = WorkerSupervisor(settings)
        self._timers: dict[str, float] = {}  # when each periodic job last ran

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
        self._timers = dict.fromkeys(("policies", "lag", "embargo"), time.monotonic())
        try:
            while not self._stop.is_set():
                try:
                    self._turn()
                except KafkaException as exc:
                    self._recover(exc)
        finally:
            self.close()
        log.info("router %s stopped", self.transactional_id)
        return 0

    def _turn(self) -> None:
        """One poll and what is due: reloads, the ledger after a rebalance, routing, lag
        and ended embargoes."""
        now, timers = time.monotonic(), self._timers
        if self._reload.is_set() or now - timers["policies"] > _POLICY_CHECK_INTERVAL_S:
            self.reload_if_changed()
            timers["policies"] = now
        batch = self._poll()
        self.health.beat()
        assert self.runner is not None
        inbound = self.runner.inbound
        if inbound.joined and inbound.stale:  # started, rebalanced or renewed
            self._catch_up_ledger()
        # Ready once in the group with the ledger, claims and embargo read: a router
        # that reports ready decides at once what it is given.
        self.health.ready = inbound.joined and not inbound.stale
        if batch:
            self._route_poll(batch)
        if now - timers["lag"] > _LAG_INTERVAL_S:
            self.state.claims.expire(now_ms())
            self.metrics.record_ids.set(len(self.state.claims))
            report_lag(inbound.client, self.metrics, inbound.last_routed_ms)
            timers["lag"] = now
        if self.health.ready and now - timers["embargo"] > _EMBARGO_CHECK_INTERVAL_S:
            release_ended_embargoes(self.core, self.runner, self.metrics)
            timers["embargo"] = now

    def _recover(self, exc: KafkaException) -> None:
        """Kafka failed outside a transaction (reading the ledger, metadata, positions,
        while a node dies, say): whatever was polled and not committed is read again from
        the committed offsets, the ledger too, after a pause. Never an exit."""
        log.warning("Kafka failed outside a transaction (%s); rewinding and retrying", exc)
        self.health.ready = False
        assert self.runner is not None
        self.runner.rewind()
        self.runner.inbound.stale = True
        self._stop.wait(_RECOVERY_PAUSE_S)

    def _poll(self) -> list[Inbound]:
        """The next records; a consumer that failed fatally (fenced after a coordinator
        moved, say) is replaced, and the new one starts at the committed offsets."""
        assert self.runner is not None
        try:
            return self.runner.inbound.poll()
        except InboundConsumerFailedError as exc:
            self.runner.renew_consumer(str(exc))
            return []

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
                    self.state.ledger,
                    self.state.claims,
                    self.state.embargo,
                )
                self.producer.start()
                inbound = InboundConsumer(self.kafka, self.settings, self.transactional_id)
                self.runner = TransactionRunner(self.producer, inbound, self.state, self.metrics)
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
        if self.runner is not None:
            self.runner.inbound.close()
        if self._follower is not None:
            self._follower.close()
        self.producer.close()
        self.runner = self._follower = None

    def _route_poll(self, inbound: list[Inbound]) -> None:
        """One poll's records, in transactions of ``router_batch_records``. The workers get
        the whole poll at once, so they route the next transaction's records while the
        current one flushes and commits. An abort drops the rest of the poll (the consumer
        is rewound to the committed offsets); no rebalance can come between, as that only
        happens inside consume()."""
        assert self.runner is not None
        if not self.runner.inbound.routes_alone():
            # With other instances routing, their claims are read before each poll's
            # records are decided: a record a rival sends after seeing another member's
            # delivery is routed after that delivery's transaction committed, and so after
            # its claim, which this read then includes.
            self._catch_up_ledger()
        size = self.settings.router_batch_records
        routed = self.workers.routed(inbound, self.core, self.state.ledger)
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
        assert self.runner is not None
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
                raise InjectedAbortError
            return {tp: record.offset + 1 for tp, record in last.items()}

        try:
            if self.runner.run(fill) is None:
                return False
        except RoutingWorkerLostError as exc:
            log.error("routing workers lost (%s); aborted, restarting them", exc)
            self.metrics.worker_restarts.inc()
            self.workers.lost(exc, self.core)
            return False
        self.workers.settled({tp: record.offset for tp, record in last.items()})
        for tp, record in last.items():
            self.runner.inbound.last_routed_ms[tp] = record.timestamp_ms
        return True

    def _catch_up_ledger(self) -> None:
        """Read the ledger, record-id and embargo topics up to their last stable offsets:
        every indicator and record id committed before now (by any instance) is known."""
        assert self._follower is not None
        assert self.runner is not None
        self._follower.catch_up()
        if self.runner.inbound.stale:
            claims, embargo = self.state.claims, self.state.embargo
            expired = claims.expire(now_ms())
            self.metrics.record_ids.set(len(claims))
            log.info(
                "ledger: %d indicators; record ids: %d remembered, %d expired; %d held "
                "by an embargo",
                len(self.state.ledger),
                len(claims),
                expired,
                len(embargo),
            )
            self.metrics.embargo_held.set(len(embargo))
        self.runner.inbound.stale = False
