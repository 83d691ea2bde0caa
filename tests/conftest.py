"""Shared test configuration: every test under tests/integration is marked ``integration``,
and the example consortium's compiled objects are fixtures built once per run."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.routing import RecordRouter
from consumers.feed_reader import Delivery, decrypt_fields
from policies import POLICY_DIR
from policies.demo_keys import demo_encryption_key, demo_match_secret, demo_router_key
from tests.members import CODEC

_INTEGRATION_DIR = Path(__file__).parent / "integration"
#: When the ``deliver`` fixture decides (the example records are from before it).
DELIVERY_TIME = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def policies() -> PolicySet:
    """The example consortium's policy folder, compiled once (a PolicySet is immutable)."""
    return load_policies(POLICY_DIR)


@pytest.fixture(scope="session")
def match_key() -> MatchTokenKey:
    """The example consortium's match-token key (its public demo secret, version 1)."""
    return MatchTokenKey(1, demo_match_secret())


@pytest.fixture(scope="session")
def record_router(policies: PolicySet, match_key: MatchTokenKey) -> RecordRouter:
    """Routing one record as the router does, signing feeds with the demo router key."""
    return RecordRouter(
        policies, CODEC, match_key, router_key=("action-router-2026", demo_router_key())
    )


@pytest.fixture(scope="session")
def deliver(policies: PolicySet, match_key: MatchTokenKey) -> Callable[..., Delivery]:
    """What ``recipient`` stores of ``event``: decided under the example MOUs, its
    fields sealed to the recipient opened."""

    def deliver(event: Any, recipient: str) -> Delivery:
        record = event.to_avro()
        decision = policies.evaluate(
            record, event.avro_type, recipient, now=DELIVERY_TIME, match_key=match_key
        )
        assert decision.delivered, decision.reasons
        plain = json.loads(json.dumps(decision.record, default=str))
        failed = decrypt_fields(
            plain, demo_encryption_key(recipient), f"{recipient}-", decision.record_id
        )
        return Delivery(
            event.avro_type,
            decision.record_id,
            decision.decision_id,
            decision.policy_version,
            plain["source_member"],
            0,
            plain,
            "t/0@0",
            tuple(failed),
        )

    return deliver
