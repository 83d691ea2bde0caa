"""Routing a poll's records: in the routing workers (or in the router's own process when
configured with none), in input order, and what happens when a record kills a worker.

The pool knows which records a dead worker held. Those are *suspects*, routed again each
in a task of its own; one that kills a worker again while routed alone is *poison* and
becomes a dead letter (``router.worker_lost``) instead of stopping routing for every
member. Suspects are held in memory: a router restart forgets them, and the record gets
its two tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Generator

from broker.checkpoint import Partition
from broker.clock import now_ms
from broker.contract import topic_owner
from broker.errors import RoutingWorkerLostError
from broker.ledger import DeliveryLedger
from broker.routing import Checked, DeadLetter, Inbound, RecordRouter, Writes
from broker.routing_pool import RoutingPool
from broker.settings import Settings

log = logging.getLogger("action.router")


class WorkerSupervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: RoutingPool | None = None
        self._suspects: dict[str, str] = {}

    def start(self, core: RecordRouter) -> None:
        """(Re)start the routing workers with ``core`` (the policies in force); none
        when configured so."""
        self.close()
        if self.settings.router_workers > 0:
            crash_key = self.settings.router_fault_crash_key
            self._pool = RoutingPool(
                core,
                self.settings.router_workers,
                deadline_s=self.settings.router_worker_deadline_s,
                crash_key=crash_key.encode() if crash_key else None,
            )
            self._pool.warm_up()
            log.info("routing workers %s (policies %s)", self._pool.pids, self._pool.policy_version)

    @property
    def running(self) -> bool:
        return self._pool is not None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def lost(self, exc: RoutingWorkerLostError, core: RecordRouter) -> None:
        """Workers died: their records become suspects (or poison) and the workers are
        started again."""
        self._suspect(exc.suspects)
        self.start(core)

    def settled(self, committed: dict[Partition, int]) -> None:
        """Records up to each committed offset are done with, dead-lettered or routed."""
        for tp, offset in committed.items():
            for position in [p for p in self._suspects if _before_or_at(p, tp, offset)]:
                del self._suspects[position]

    def routed(
        self, records: list[Inbound], core: RecordRouter, ledger: DeliveryLedger
    ) -> Generator[tuple[Inbound, Writes, float]]:
        """Each record's writes, in order, with the seconds spent deciding it. Lazy: the
        ledger entries of earlier records are staged before a later retraction is decided."""
        now = dt.datetime.now(dt.UTC)
        if self._pool is None:
            for record in records:
                started = time.perf_counter()
                writes = core.writes(record, now=now, ledger=ledger, decided_at_ms=now_ms())
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
                    outcome = core.decided_writes(
                        outcome, now=now, ledger=ledger, decided_at_ms=now_ms()
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


def _before_or_at(position: str, tp: Partition, offset: int) -> bool:
    topic_partition, _, at = position.rpartition("@")
    return topic_partition == f"{tp[0]}/{tp[1]}" and int(at) <= offset
