"""Routing in worker processes: the same writes as routing in-process, in input order;
retractions left to the ledger holder; a worker that dies at any moment, hangs or fails
is reported, never waited for; no worker outlives a killed parent. No Kafka."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit import ChainHead
from broker.contract import ROUTER_SIGNATURE_HEADER, inbound_topic
from broker.errors import RouterError, RoutingWorkerLostError
from broker.ledger import DeliveryLedger
from broker.routing import Checked, FeedRecord, Inbound, RecordRouter, Writes
from broker.routing_pool import RoutingPool, WorkerSetup
from tests.members import CODEC, indicator, mixed_stream, retraction, signed
from tests.unit import pool_faults

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pool(record_router: RecordRouter) -> Iterator[RoutingPool]:
    pool = RoutingPool(record_router, workers=2)
    yield pool
    pool.close()


def _inbound(events: list[Any]) -> list[Inbound]:
    records = []
    for offset, event in enumerate(events):
        key, value, headers = signed(event)
        topic = inbound_topic(event.source_member)
        records.append(Inbound(topic, 0, offset, key, value, tuple(headers), 1_795_000_000_000))
    return records


def _feed_view(feed: FeedRecord) -> tuple[Any, ...]:
    """A feed record less what encryption randomizes (HPKE ciphertexts, and so the
    router's signature over the value)."""
    record = json.dumps(CODEC.decode(feed.value).record, default=str, sort_keys=True)
    stable = [(n, v) for n, v in feed.headers if n != ROUTER_SIGNATURE_HEADER]
    return (feed.topic, feed.key, re.sub(r'"hpke1\.([^".]+)\.[^"]+"', r"\1", record), stable)


def _comparable(writes: Writes) -> dict[str, Any]:
    """Everything written, with each audit entry's decision time left out."""
    entries = []
    for decision in writes.decisions:
        _, (encoded,) = ChainHead("c").extend([decision.entry])
        entry = json.loads(encoded)
        for volatile in ("decided_at_ms", "hash"):
            entry.pop(volatile)
        entries.append(
            (entry, decision.source, decision.recipient, decision.delivered, decision.treatments)
        )
    return {
        "source": writes.source,
        "event_type": writes.event_type,
        "feeds": [_feed_view(f) for f in writes.feeds],
        "audit": entries,
        "dead_letter": writes.dead_letter,
        "ledger": writes.ledger_update,
    }


def test_workers_write_what_the_router_writes_in_process_in_input_order(
    pool: RoutingPool, record_router: RecordRouter
) -> None:
    events = [e for e in mixed_stream(300) if type(e).__name__ != "Retraction"]
    records = _inbound(events)
    forged = Inbound("action.in.platform-b", 0, 999, b"k", records[0].value, records[0].headers, 1)
    records += [forged, Inbound("action.in.platform-a", 0, 1000, b"k", b"\x00junk", (), 1)]
    outcomes = list(pool.route(records, NOW))
    assert len(outcomes) == len(records)
    for record, (writes, seconds) in zip(records, outcomes, strict=True):
        assert isinstance(writes, Writes)
        assert seconds > 0
        expected = record_router.route(record, now=NOW, ledger=DeliveryLedger())
        assert _comparable(writes) == _comparable(expected.writes(record, decided_at_ms=0))
    reasons = [
        w.dead_letter.reason
        for w, _ in outcomes[-2:]
        if isinstance(w, Writes) and w.dead_letter is not None
    ]
    assert reasons == ["source.topic_mismatch", "schema.unknown_id"]
    assert sum(len(w.feeds) for w, _ in outcomes if isinstance(w, Writes)) > 0


def test_a_retraction_comes_back_checked_for_the_ledger_holder_to_decide(
    pool: RoutingPool, record_router: RecordRouter
) -> None:
    original = indicator("platform-a", 7)
    records = _inbound([original, retraction(original)])
    (first, _), (second, _) = pool.route(records, NOW)
    assert isinstance(first, Writes)
    assert first.ledger_update is not None
    assert isinstance(second, Checked)
    assert second.needs_ledger
    ledger = DeliveryLedger()
    ledger.stage(*first.ledger_update)
    decided = record_router.decide(second, now=NOW, ledger=ledger)
    received = set(first.ledger_update[1].recipients)
    assert {d.recipient for d in decided.decisions if d.delivered} == received
    with pytest.raises(ValueError, match="ledger"):
        record_router.decide(second, now=NOW, ledger=None)


def test_closing_a_routing_early_drops_the_chunks_no_worker_was_given(
    pool: RoutingPool, record_router: RecordRouter
) -> None:
    """The router drops the rest of a poll after an abort: those chunks must not keep the
    workers busy, and the pool must route the next poll as if nothing happened."""
    records = _inbound([indicator("platform-a", i) for i in range(800)])
    routing = pool.route(records, NOW)
    next(routing)
    routing.close()
    assert pool.queued == 0
    again = records[:3]
    outcomes = list(pool.route(again, NOW))
    in_process = [record_router.route(r, now=NOW, ledger=DeliveryLedger()) for r in again]
    assert [
        w.ledger_update[0] for w, _ in outcomes if isinstance(w, Writes) and w.ledger_update
    ] == [routed.ledger_update[0] for routed in in_process if routed.ledger_update]


def _lost(pool: RoutingPool, routing: Iterator[Any]) -> str:
    """How ``routing`` broke, and that the broken pool closes promptly."""
    with pytest.raises(RoutingWorkerLostError) as raised:
        list(routing)
    started = time.monotonic()
    pool.close()  # ends the surviving workers too; must not hang
    assert time.monotonic() - started < 10
    assert not [p for p in pool.pids if _alive(p)]
    return str(raised.value)


def test_a_killed_worker_breaks_the_pool_which_closes_and_is_replaced(
    record_router: RecordRouter,
) -> None:
    records = _inbound(mixed_stream(1_000))  # about a second of work: still running when killed
    broken = RoutingPool(record_router, workers=2)
    broken.warm_up()
    outcomes = broken.route(records, NOW)
    next(outcomes)
    os.kill(broken.pids[0], signal.SIGKILL)
    assert "exit code -9" in _lost(broken, outcomes)
    with pytest.raises(RoutingWorkerLostError):
        next(broken.route(records, NOW))  # a broken pool stays broken
    replacement = RoutingPool(record_router, workers=2)
    try:
        assert len(list(replacement.route(records, NOW))) == len(records)
    finally:
        replacement.close()


def test_a_worker_killed_by_a_record_names_the_task_it_held_and_alone_names_the_record(
    record_router: RecordRouter,
) -> None:
    """The fault hook kills a worker on one chosen record: the loss names the records of
    the task in hand. Routed again with those records each alone, the next loss names
    that one record, and the others route."""
    records = _inbound(mixed_stream(120))
    poison = records[57]
    first = RoutingPool(record_router, workers=2, crash_key=poison.key)
    try:
        with pytest.raises(RoutingWorkerLostError) as raised:
            list(first.route(records, NOW))
    finally:
        first.close()
    suspects = raised.value.suspects
    assert poison in suspects
    assert 1 < len(suspects) < len(records), "the task in hand, not the whole routing"
    second = RoutingPool(record_router, workers=2, crash_key=poison.key)
    try:
        with pytest.raises(RoutingWorkerLostError) as again:
            list(second.route(records, NOW, alone={r.position for r in suspects}))
    finally:
        second.close()
    assert again.value.suspects == (poison,)
    third = RoutingPool(record_router, workers=2, crash_key=poison.key)
    try:
        rest = [r for r in records if r is not poison]
        assert len(list(third.route(rest, NOW, alone={r.position for r in suspects}))) == 119
    finally:
        third.close()


def test_a_worker_killed_half_way_through_sending_its_result_is_noticed_at_once(
    record_router: RecordRouter,
) -> None:
    """The stdlib's ProcessPoolExecutor waits for the rest of such a message for ever (its
    workers share one result pipe). Here the worker's own pipe ends: the loss is reported
    as an exit, long before the deadline."""
    pool = RoutingPool(record_router, workers=2, deadline_s=60)
    pool.warm_up()
    started = time.monotonic()
    reason = _lost(pool, pool.map(pool_faults.die_half_way_through_a_result, [()]))
    assert "exited (exit code -9)" in reason
    assert time.monotonic() - started < 30


def test_a_stopped_worker_breaks_the_pool_at_the_deadline_and_is_killed(
    record_router: RecordRouter,
) -> None:
    records = _inbound(mixed_stream(1_000))
    pool = RoutingPool(record_router, workers=2, deadline_s=1)
    pool.warm_up()
    stopped = pool.pids[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        assert "no routing worker answered within 1 s" in _lost(pool, pool.route(records, NOW))
    finally:
        if _alive(stopped):
            os.kill(stopped, signal.SIGKILL)


def test_an_exception_in_a_worker_is_raised_with_its_traceback_and_the_pool_goes_on(
    pool: RoutingPool,
) -> None:
    with pytest.raises(RouterError, match=r"(?s)failed:.*ValueError: a bug in routing"):
        list(pool.map(pool_faults.fail, [()]))
    assert sorted(set(pool.map(pool_faults.pid, [()] * 8))) == pool.pids  # both still work


def test_a_worker_that_cannot_start_fails_the_warm_up(
    monkeypatch: pytest.MonkeyPatch, record_router: RecordRouter
) -> None:
    def unstartable(cls: type, router: RecordRouter, crash_key: bytes | None) -> WorkerSetup:
        return pool_faults.UnstartableSetup(router.policy_set, router.match_key, None, None, 1024)

    monkeypatch.setattr(WorkerSetup, "of", classmethod(unstartable))
    pool = RoutingPool(record_router, workers=1)
    try:
        with pytest.raises(RouterError, match=r"(?s)could not start:.*manifest\.json"):
            pool.warm_up()
    finally:
        pool.close()


def test_a_pool_needs_a_worker(record_router: RecordRouter) -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        RoutingPool(record_router, workers=0)


_ORPHAN_SCRIPT = textwrap.dedent("""
    import time
    from policies.demo_keys import demo_match_secret
    from broker.policy.loader import load_policies
    from broker.match_tokens import MatchTokenKey
    from broker.routing import RecordRouter
    from broker.routing_pool import RoutingPool, WorkerSetup
    from policies import POLICY_DIR
    from tests.members import CODEC

    if __name__ == "__main__":
        key = MatchTokenKey(1, demo_match_secret())
        router = RecordRouter(load_policies(POLICY_DIR), CODEC, key)
        pool = RoutingPool(router, workers=2)
        pool.warm_up()
        print(" ".join(str(pid) for pid in pool.pids), flush=True)
        time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_workers_exit_when_the_router_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "router_like.py"
    script.write_text(_ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        assert all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], "a routing worker outlived its parent"
    finally:
        parent.kill()
