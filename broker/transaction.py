"""What one transaction writes, the state it changes once it commits, and running it.

Each routed record's writes (:class:`broker.routing.Writes`) become records through the
:class:`~broker.feed_writer.FeedWriter`: its record-id claim first (a replay, a reused
id or another source's id is a dead letter instead), then its dead letter, or its feed
records, its audit entries (chained from the partition's head), its embargo hold and its
ledger entry. The ledger, claims and embargo book stage what the transaction wrote; the
:class:`TransactionRunner` commits or aborts them with the transaction, and this
batch's counts go to the metrics once.

The runner begins each transaction, commits it with the inbound offsets it consumed and
the chain heads it reached, and after a failure leaves everything as it was last
committed: it aborts (or replaces a producer whose call timed out) and rewinds the
consumer to the committed offsets and heads.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaException

from broker.audit import ChainHead
from broker.checkpoint import Checkpoint, Partition
from broker.claims import Claim, RecordClaims, content_digest
from broker.clock import now_ms
from broker.contract import topic_owner
from broker.embargo import EmbargoBook, HeldRecord
from broker.errors import RoutingWorkerLostError, TransactionTimeoutError
from broker.feed_writer import FeedWriter
from broker.inbound_consumer import InboundConsumer
from broker.ledger import DeliveryLedger
from broker.metrics import RouterMetrics
from broker.routing import Inbound, Writes
from broker.transactional_producer import TransactionalProducer

log = logging.getLogger("action.router")


@dataclass(frozen=True)
class RouterState:
    """What the router remembers between records: who received each indicator, which
    record ids are taken, which records are held by an embargo."""

    ledger: DeliveryLedger
    claims: RecordClaims
    embargo: EmbargoBook

    def commit(self) -> None:
        self.ledger.commit()
        self.claims.commit()
        self.embargo.commit()

    def abort(self) -> None:
        self.ledger.abort()
        self.claims.abort()
        self.embargo.abort()


@dataclass
class Transaction:
    """What one transaction wrote, applied to the in-memory state only once it commits."""

    checkpoint: Checkpoint
    writer: FeedWriter
    state: RouterState
    metrics: RouterMetrics
    feed_timestamps: list[int] = field(default_factory=list)
    #: The chain heads this transaction reached (the checkpoint's stay until it commits).
    heads: dict[Partition, ChainHead] = field(default_factory=dict)
    records: int = 0
    # Counted per batch and added to the metrics once: a counter per decision and per
    # field was a measurable share of the router's own process.
    records_in: Counter[tuple[str, str]] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    treatments: Counter[tuple[str, str]] = field(default_factory=Counter)

    def head(self, tp: Partition) -> ChainHead:
        return self.heads.get(tp) or self.checkpoint.head(tp)

    def count(self) -> None:
        """Add this transaction's counts to the metrics (once, whatever its outcome)."""
        metrics = self.metrics
        for (source, event_type), n in self.records_in.items():
            metrics.records_in.labels(source, event_type).inc(n)
        for (source, recipient, outcome), n in self.decisions.items():
            metrics.decision(source, recipient, outcome, n)
        for (path, treatment), n in self.treatments.items():
            metrics.treatment(path, treatment, n)

    def _admitted(self, writes: Writes, inbound: Inbound) -> Writes:
        """``writes`` if the record's id is its own and new, after claiming it; else its
        dead letter (:mod:`broker.claims`): a replay, a reused id or another source's id."""
        identity, source = writes.identity, writes.source
        assert identity is not None
        assert source is not None
        at_ms = now_ms()
        value = inbound.value or b""
        refusal = self.state.claims.refusal(
            source,
            identity.record_id,
            value,
            event_ms=identity.event_ms,
            now_ms=at_ms,
            indicator_owner=self.state.ledger.owner_of(identity.record_id),
        )
        if refusal is not None:
            return writes.refused(*refusal)
        claim = Claim(source, content_digest(value), at_ms)
        self.state.claims.stage(identity.record_id, claim)
        self.writer.claim(identity.record_id, claim)
        return writes

    def write(self, writes: Writes, inbound: Inbound, *, count_input: bool = True) -> None:
        """Write one record's outcome; ``count_input`` is False for an embargo's release,
        which is no new input."""
        if writes.dead_letter is None and writes.identity is not None:
            writes = self._admitted(writes, inbound)
        source = writes.source or topic_owner(inbound.topic) or "unknown"
        if count_input:  # a held record's release is not a new input
            self.records_in[(source, writes.event_type or "undecodable")] += 1
        if writes.dead_letter is not None:
            self.writer.dead_letter(inbound, writes.dead_letter)
            self.metrics.dlq.labels(writes.dead_letter.reason).inc()
            return
        for feed in writes.feeds:
            self.writer.feed(feed)
            if count_input:  # a release's wait is the embargo's, not the router's latency
                self.feed_timestamps.append(inbound.timestamp_ms)
        tp = (inbound.topic, inbound.partition)
        head, entries = self.head(tp).extend(decision.entry for decision in writes.decisions)
        self.writer.audit(head.chain, entries)
        for decision in writes.decisions:
            outcome = "delivered" if decision.delivered else "withheld"
            self.decisions[(decision.source, decision.recipient, outcome)] += 1
            self.treatments.update(decision.treatments)
        self.heads[tp] = head
        if writes.embargo is not None:
            self._hold(*writes.embargo)
        if writes.ledger_update is not None:
            key, entry = writes.ledger_update
            self.state.ledger.stage(key, entry)
            self.writer.ledger(key, entry)

    def _hold(self, key: str, held: HeldRecord | None) -> None:
        """Hold a record (or end what is held of it: a tombstone, when anything is)."""
        if held is None and self.state.embargo.get(key) is None:
            return
        self.state.embargo.stage(key, held)
        self.writer.embargo(key, held)


class InjectedAbortError(Exception):
    """Fault injection (router_abort_ratio): abort this transaction on purpose."""


#: Fills an open transaction and says the inbound positions (next offsets) it consumed.
Fill = Callable[[Transaction], dict[Partition, int]]


class TransactionRunner:
    def __init__(
        self,
        producer: TransactionalProducer,
        inbound: InboundConsumer,
        state: RouterState,
        metrics: RouterMetrics,
    ) -> None:
        self.producer = producer
        self.inbound = inbound
        self.state = state
        self.metrics = metrics
        self.writer = FeedWriter(producer)

    def run(self, fill: Fill) -> Transaction | None:
        """Begin a transaction, let ``fill`` write it, and commit the positions it
        consumed with the chain heads reached; the transaction, or None when it was
        aborted. A lost routing worker aborts it and is raised again, for the router to
        start its workers afresh."""
        work = Transaction(self.inbound.checkpoint, self.writer, self.state, self.metrics)
        try:
            self.producer.begin()
            positions = fill(work)
            heads = {tp: work.head(tp) for tp in positions}
            offsets = self.inbound.checkpoint.offsets(positions, heads)
            self.producer.commit(offsets, self.inbound.client.consumer_group_metadata())
        except (InjectedAbortError, KafkaException) as exc:
            self._abort(exc)
            return None
        except TransactionTimeoutError as exc:
            log.error("%s; replacing the producer and rewinding", exc)
            self._fail()
            return None
        except RoutingWorkerLostError as exc:
            self._abort(exc)
            raise
        finally:
            work.count()
        self.inbound.checkpoint.committed(work.heads)
        self.state.commit()
        self.metrics.transactions.labels("committed").inc()
        self.metrics.records_committed.inc(work.records)
        now_ms = time.time() * 1000
        self.metrics.last_success.set(now_ms / 1000)
        for timestamp in work.feed_timestamps:
            self.metrics.end_to_end.observe(max(0.0, (now_ms - timestamp) / 1000))
        return work

    def renew_consumer(self, why: str) -> None:
        """A new inbound consumer in place of one that cannot go on: nothing staged
        survives, and it starts from the committed offsets and chain heads."""
        log.warning("the inbound consumer failed (%s); replacing it", why)
        self.metrics.transactions.labels("failed").inc()
        self.state.abort()
        self.inbound.renew()

    def _abort(self, cause: BaseException) -> None:
        if not isinstance(cause, InjectedAbortError):
            log.warning("transaction failed (%s: %s); aborting", type(cause).__name__, cause)
        try:
            self.producer.abort()
        except (TransactionTimeoutError, KafkaException) as exc:
            log.error("abort failed (%s); replacing the producer", exc)
            self._fail()
            return
        self.metrics.transactions.labels("aborted").inc()
        self.rewind()

    def _fail(self) -> None:
        self.metrics.transactions.labels("failed").inc()
        self.producer.replace()
        self.rewind()

    def rewind(self) -> None:
        """Back to the last committed offsets and chain heads; staged ledger entries,
        record-id claims and embargo holds go."""
        self.state.abort()
        try:
            positions = self.inbound.checkpoint.rewind()
        except KafkaException as exc:  # the consumer cannot read or seek to its offsets
            self.renew_consumer(f"rewind failed: {exc}")
            return
        log.info("rewound %d inbound partitions to their committed offsets", len(positions))
