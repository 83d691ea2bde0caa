"""Deciding the records an embargo held, once it ends: in one transaction, every held record
of this instance's partitions whose embargo (for some recipient) has ended gets its
deliveries, audit entries, ledger and embargo entries, and the partitions' chain heads
are committed with their offsets unchanged (see docs/router.md, Embargoes)."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

from broker.checkpoint import Partition
from broker.clock import now_ms
from broker.metrics import RouterMetrics
from broker.routing import Inbound, RecordRouter
from broker.transaction import Transaction, TransactionRunner

log = logging.getLogger("action.router")


def release_ended_embargoes(
    core: RecordRouter, runner: TransactionRunner, metrics: RouterMetrics
) -> None:
    """Decide every held record whose embargo has ended, if any, in one transaction. The
    ledger, claims and embargo book must be current (read since the last rebalance)."""
    assigned = runner.inbound.assigned()
    embargo = runner.state.embargo
    due = embargo.due(now_ms(), assigned) if assigned else []
    if not due:
        metrics.embargo_held.set(len(embargo))
        return
    outcomes: Counter[str] = Counter()
    now = dt.datetime.now(dt.UTC)
    checkpoint = runner.inbound.checkpoint

    def fill(work: Transaction) -> dict[Partition, int]:
        touched: set[Partition] = set()
        for key, held in due:
            writes = core.released(
                key, held, now=now, ledger=runner.state.ledger, decided_at_ms=now_ms()
            )
            work.write(writes, Inbound.held(held), count_input=False)
            touched.add(assigned[(held.topic, held.partition)])
            for decision in writes.decisions:
                outcomes["delivered" if decision.delivered else "withheld"] += 1
        return {tp: checkpoint.position(tp) for tp in touched}

    if runner.run(fill) is None:
        return
    for outcome, count in outcomes.items():
        metrics.embargo_released.labels(outcome).inc(count)
    metrics.embargo_held.set(len(embargo))
    log.info(
        "embargoes ended: %d held records decided (%s)",
        len(due),
        ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())),
    )
