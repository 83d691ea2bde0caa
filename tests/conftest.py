"""Shared test configuration: every test under tests/integration is marked ``integration``,
and the example consortium's compiled objects are fixtures built once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.policy.treatments import MatchTokenKey
from broker.routing import RecordRouter
from policies import POLICY_DIR
from policies.demo_keys import demo_match_secret, demo_router_key
from tests.members import CODEC

_INTEGRATION_DIR = Path(__file__).parent / "integration"


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
