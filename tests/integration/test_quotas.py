"""Per-member Kafka quotas against a real cluster: provisioning sets them, and a member
flooding its inbound topic is throttled by the brokers while another member's records
still route."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from broker.provision import (
    DEFAULT_PRODUCE_BYTE_RATE,
    DEFAULT_REQUEST_PERCENTAGE,
    Consortium,
    admin_client,
)
from broker.quotas import PRODUCE_BYTE_RATE, REQUEST_PERCENTAGE, current_quotas, provision_quotas
from tests.integration.routers import FEEDS, RouterProcess, TopicReader, publish, wait_for
from tests.members import indicator

FLOODER = "platform-c"
FLOOD_RATE = 100_000  # bytes/s for this test, so that the flood is throttled at once


@pytest.fixture
def slow_flooder(consortium: Consortium) -> Iterator[None]:
    with admin_client(consortium.admin, "quota-test") as admin:
        before = current_quotas(admin)
        tight = {FLOODER: {PRODUCE_BYTE_RATE: float(FLOOD_RATE), REQUEST_PERCENTAGE: 50.0}}
        provision_quotas(admin, tight, [], dry_run=False)
    yield
    with admin_client(consortium.admin, "quota-test") as admin:
        provision_quotas(admin, {FLOODER: before[FLOODER]}, [], dry_run=False)


def test_provisioning_gives_every_member_its_quotas(consortium: Consortium) -> None:
    with admin_client(consortium.admin, "quota-test") as admin:
        quotas = current_quotas(admin)
    defaults = {
        PRODUCE_BYTE_RATE: float(DEFAULT_PRODUCE_BYTE_RATE),
        REQUEST_PERCENTAGE: DEFAULT_REQUEST_PERCENTAGE,
    }
    for member in consortium.registry.members:
        assert quotas[member.principal.removeprefix("User:")] == defaults
    assert "action-router" not in quotas, "the router is not throttled"


def _throttled_ms(producer: KafkaProducer) -> float:
    """The longest throttle time the brokers reported to ``producer``."""
    worst = 0.0
    for metrics in producer.metrics().values():
        for name, value in metrics.items():
            if name == "throttle-time-max" and isinstance(value, int | float):
                worst = max(worst, float(value))
    return worst


def test_a_flooding_member_is_throttled_and_another_members_record_still_routes(
    consortium: Consortium, slow_flooder: None, tmp_path: Path
) -> None:
    router = RouterProcess(consortium.router, tmp_path).start().wait_ready()
    flood = KafkaProducer(
        **consortium.member(FLOODER).client_config(),
        acks="all",
        linger_ms=5,
        max_request_size=1_200_000,
    )
    junk = b"\x07" + bytes(50_000)  # not a record: every one is a dead letter

    def send_flood() -> None:
        for number in range(24):  # 1.2 MB at 100 kB/s
            flood.send(f"action.in.{FLOODER}", value=junk, key=b"flood-%d" % number)
        flood.flush(120)

    flooding = threading.Thread(target=send_flood, daemon=True)
    flooding.start()
    try:
        wanted = indicator("platform-a", 77, tlp="GREEN")
        publish(consortium, [wanted])
        feeds = TopicReader(consortium.admin, FEEDS)
        seen: Counter[Any] = Counter()
        wait_for(feeds, {("ipr-center", str(wanted.to_avro()["indicator_id"]))}, seen, 90)
        feeds.close()
        assert seen, "another member's record routed while the flood was throttled"
        flooding.join(120)
        assert not flooding.is_alive()
        assert _throttled_ms(flood) > 0, "the brokers throttled the flooding member"
    finally:
        flood.close()
        assert router.stop() == 0
