"""A policy reload in a running router lets the old policies go (no Kafka needed)."""

from __future__ import annotations

import gc
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from broker.connection import KafkaConnection
from broker.metrics import RouterMetrics
from broker.router import RouterService
from broker.settings import load_settings
from policies import POLICY_DIR


@pytest.fixture
def frozen() -> Iterator[None]:
    """The router freezes start-up's objects once it runs (gc.freeze); so does this test."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_a_reload_releases_the_old_policies_even_after_gc_freeze(
    tmp_path: Path, frozen: None
) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policy_dir)
    settings = load_settings(policy_dir=policy_dir, router_workers=0, demo_keys=True)
    service = RouterService(settings, KafkaConnection("127.0.0.1:9"), RouterMetrics())
    old_core, old_policies = weakref.ref(service.core), weakref.ref(service.core.policy_set)
    gc.freeze()  # as run() does, with the service built
    service.request_reload()
    service.reload_if_changed()
    # Frozen objects are still freed by reference counting, but never as cyclic garbage:
    # a reference cycle in the compiled policies would leak them on every reload.
    assert old_core() is None, "the replaced router core is still alive after the reload"
    assert old_policies() is None, "the replaced policy set is still alive after the reload"


def test_one_sighup_after_a_folder_change_is_one_reload(tmp_path: Path) -> None:
    """The SIGHUP path never updated the folder's fingerprint, so the folder watch saw the
    same change again 5 s later and reloaded a second time, restarting the workers."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policy_dir)
    settings = load_settings(policy_dir=policy_dir, router_workers=0, demo_keys=True)
    registry = CollectorRegistry()
    service = RouterService(settings, KafkaConnection("127.0.0.1:9"), RouterMetrics(registry))
    mou = policy_dir / "mou" / "platform-a.yaml"
    mou.write_text(mou.read_text().replace("min_confidence: 70", "min_confidence: 71"))
    service.request_reload()  # SIGHUP
    service.reload_if_changed()
    service.reload_if_changed()  # the folder watch's next look
    sample = "action_router_policy_reloads_total"
    assert registry.get_sample_value(sample, {"result": "applied"}) == 1


class _Inbound:
    """An inbound consumer that holds its partitions and polls nothing."""

    joined = True
    stale = False
    client = None
    last_routed_ms: dict[tuple[str, int], int] = {}  # noqa: RUF012 - a test double

    def poll(self) -> list[object]:
        return []


class _Runner:
    def __init__(self) -> None:
        self.inbound = _Inbound()
        self.rewinds = 0

    def rewind(self) -> None:
        self.rewinds += 1


def test_kafka_failing_outside_a_transaction_rewinds_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on a 3-node cluster: reading the ledger's offsets while a node died raised
    FENCED_LEADER_EPOCH out of the main loop, and the router exited. Now what was polled
    is read again from the committed offsets, the ledger too, and the loop goes on."""
    from confluent_kafka import KafkaError, KafkaException

    settings = load_settings(router_workers=0, demo_keys=True)
    service = RouterService(settings, KafkaConnection("127.0.0.1:9"), RouterMetrics())
    runner = _Runner()

    def connect() -> bool:
        service.runner = runner  # type: ignore[assignment]
        return True

    turns = 0

    def turn() -> None:
        nonlocal turns
        turns += 1
        if turns == 1:
            raise KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH))
        service.request_stop()

    monkeypatch.setattr(service, "_connect", connect)
    monkeypatch.setattr(service, "_turn", turn)
    monkeypatch.setattr(service, "_close_clients", lambda: None)
    monkeypatch.setattr("broker.router._RECOVERY_PAUSE_S", 0.0)
    try:
        assert service.run() == 0
    finally:
        gc.unfreeze()
    assert turns == 2, "the loop went on after the failure"
    assert runner.rewinds == 1
    assert runner.inbound.stale, "the ledger is read again before routing"
    assert not service.health.ready
