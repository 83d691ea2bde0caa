"""References cannot widen: a sighting or enforcement action naming an indicator reaches
no one the indicator did not reach, never under a wider marking, and never names a
source the indicator's recipient only knew by an anonymous label."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.events import EVENT_TYPES
from broker.ledger import DeliveryLedger, LedgerEntry, ledger_key
from broker.match_tokens import MatchTokenKey
from broker.policy.loader import load_policies
from broker.routing import REFERENCE_UNKNOWN, Inbound, RecordRouter, Routed, Writes
from tests.members import BASE_TIME, CODEC, signed

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
INDICATOR = "5d0c4c1e-3f65-4c59-9a53-0d1f0c6a0401"

EXTRA_RULES = {
    # express-carrier reports its actions up to AMBER+STRICT; brand-owner's vendor takes
    # actions too, and passes them on to clients; platform-b tells platforms of its actions.
    "express-carrier.yaml": (
        "    fields: {details: drop, explanation: drop}\n",
        "    fields: {details: keep, explanation: drop}\n",
    ),
    "brand-owner.yaml": (
        "  - id: bo.accepts-retractions\n",
        "  - id: bo.accepts-actions-with-vendor\n"
        "    event_types: [EnforcementAction]\n"
        "    shares_with_clients: true\n"
        "  - id: bo.accepts-retractions\n",
    ),
    "platform-b.yaml": (
        "  - id: pb.retractions-to-platforms\n",
        "  - id: pb.actions-to-platforms\n"
        "    event_types: [EnforcementAction]\n"
        "    to: {sectors: [platform]}\n"
        "    max_tlp: AMBER\n"
        "    fields: {details: keep}\n"
        "  - id: pb.retractions-to-platforms\n",
    ),
    "platform-a.yaml": (
        "    event_types: [Retraction, Sighting]\n",
        "    event_types: [Retraction, Sighting, EnforcementAction]\n",
    ),
}


@pytest.fixture(scope="session")
def router_with(match_key: MatchTokenKey) -> Callable[..., RecordRouter]:
    def router_with(policy_copy: Path) -> RecordRouter:
        for name, (old, new) in EXTRA_RULES.items():
            mou = policy_copy / "mou" / name
            text = mou.read_text()
            assert old in text, name
            mou.write_text(text.replace(old, new, 1))
        (policy_copy / "mou" / "express-carrier.yaml").write_text(
            (policy_copy / "mou" / "express-carrier.yaml")
            .read_text()
            .replace(
                "  - id: ec.shipper-events\n    event_types: [EnforcementAction, Retraction]\n"
                "    to: {sectors: [government, rights_holder]}\n    max_tlp: AMBER\n",
                "  - id: ec.shipper-events\n    event_types: [EnforcementAction, Retraction]\n"
                "    to: {sectors: [government, rights_holder]}\n    max_tlp: AMBER_STRICT\n",
            )
        )
        return RecordRouter(load_policies(policy_copy), CODEC, match_key)

    return router_with


def _action(source: str, **changes: Any) -> Inbound:
    record = {
        "action_id": str(uuid.uuid4()),
        "indicator_id": INDICATOR,
        "source_member": source,
        "taken_at": BASE_TIME + dt.timedelta(hours=2),
        "kind": "LISTING_REMOVED",
        "details": "listing 88 removed",
        "tlp": "GREEN",
        **changes,
    }
    key, value, headers = signed(EVENT_TYPES["EnforcementAction"].parse(record))
    return Inbound(f"action.in.{source}", 0, 0, key, value, tuple(headers), 0)


def _ledger(source: str, recipients: dict[str, str], tlp: str) -> DeliveryLedger:
    ledger = DeliveryLedger()
    ledger.load(ledger_key(source, INDICATOR), LedgerEntry(recipients, "pv-x", tlp).encode())
    return ledger


def _delivered(routed: Routed) -> dict[str, dict[str, Any]]:
    return {d.recipient: dict(d.record or {}) for d in routed.decisions if d.delivered}


def test_a_green_action_on_an_amber_strict_indicator_travels_as_amber_strict(
    policy_copy: Path, router_with: Any
) -> None:
    """It used to reach brand-owner's vendor rule, which passes records on to clients, as
    GREEN: the indicator's marking was laundered by the record that quoted it."""
    router = router_with(policy_copy)
    received = {
        "express-carrier": "platform-a",
        "brand-owner": "platform-a",
        "ipr-center": "platform-a",
    }
    ledger = _ledger("platform-a", received, "AMBER_STRICT")
    routed = router.route(_action("express-carrier"), now=NOW, ledger=ledger)
    assert routed.dead_letter is None
    delivered = _delivered(routed)
    assert delivered["ipr-center"]["tlp"] == "AMBER_STRICT"
    assert "brand-owner" not in delivered, "AMBER+STRICT stays in house, not with a vendor"


def test_a_reference_reaches_only_members_that_received_the_indicator(
    policy_copy: Path, router_with: Any
) -> None:
    router = router_with(policy_copy)
    ledger = _ledger("platform-a", {"express-carrier": "platform-a"}, "GREEN")
    routed = router.route(_action("express-carrier"), now=NOW, ledger=ledger)
    withheld = {d.recipient: d for d in routed.decisions if not d.delivered}
    assert "ipr-center" in withheld
    assert "did not receive indicator" in withheld["ipr-center"].reasons[0]
    assert "ledger.reference" in withheld["ipr-center"].rule_ids


def test_the_indicators_own_source_hears_of_actions_on_it(
    policy_copy: Path, router_with: Any
) -> None:
    router = router_with(policy_copy)
    ledger = _ledger("ipr-center", {"express-carrier": "ipr-center"}, "GREEN")
    routed = router.route(_action("express-carrier"), now=NOW, ledger=ledger)
    assert "ipr-center" in _delivered(routed), "the source counts as having its indicator"


def test_a_named_action_on_an_anonymous_indicator_keeps_the_label(
    policy_copy: Path, router_with: Any
) -> None:
    """platform-b shared the indicator with platform-a anonymously; a named action of
    platform-b's about it would tell platform-a who shared it."""
    router = router_with(policy_copy)
    ledger = _ledger("platform-b", {"platform-a": "anonymous-platform"}, "GREEN")
    routed = router.route(_action("platform-b"), now=NOW, ledger=ledger)
    delivered = _delivered(routed)
    assert delivered["platform-a"]["source_member"] == "anonymous-platform"
    (feed,) = routed.feeds
    assert b"platform-b" not in feed.value, "the delivered bytes do not name the source"


def test_an_unknown_marking_in_the_ledger_fails_closed(policy_copy: Path, router_with: Any) -> None:
    router = router_with(policy_copy)
    ledger = _ledger("platform-a", {"ipr-center": "platform-a", "express-carrier": "x"}, "?")
    routed = router.route(_action("express-carrier"), now=NOW, ledger=ledger)
    assert not _delivered(routed)


def test_a_reference_to_an_unknown_or_unreceived_indicator_is_a_dead_letter(
    policy_copy: Path, router_with: Any
) -> None:
    router = router_with(policy_copy)
    unknown = router.route(_action("express-carrier"), now=NOW, ledger=DeliveryLedger())
    assert unknown.dead_letter is not None
    assert unknown.dead_letter.reason == REFERENCE_UNKNOWN
    # A rival probing an id it never received gets the same answer.
    ledger = _ledger("platform-a", {"ipr-center": "platform-a"}, "GREEN")
    probe = router.route(_action("express-carrier"), now=NOW, ledger=ledger)
    assert probe.dead_letter is not None
    assert probe.dead_letter.reason == REFERENCE_UNKNOWN


def test_the_audit_names_an_anonymous_source_by_a_pseudonym_only_the_operator_reverses(
    tmp_path: Path, match_key: MatchTokenKey
) -> None:
    """platform-b shares anonymously with platforms and named with the government. The
    audit trail (which the IPR Center reads) names platform-b only in the named delivery;
    every other entry of the record carries a per-record pseudonym, and no decision id
    can be recomputed from the real source."""
    import json
    import os
    import subprocess
    import sys

    from broker.audit import ChainHead, pseudonym_key, reveal_source
    from broker.contract import decision_id_for
    from broker.routing import RecordRouter as Router
    from policies import POLICY_DIR
    from tests.members import indicator

    router = Router(load_policies(POLICY_DIR), CODEC, match_key)
    event = indicator("platform-b", 5, tlp="GREEN", confidence=95)
    key, value, headers = signed(event)
    inbound = Inbound("action.in.platform-b", 0, 0, key, value, tuple(headers), 0)
    writes = router.writes(inbound, now=NOW, ledger=DeliveryLedger(), decided_at_ms=1)
    assert isinstance(writes, Writes)
    _, encoded = ChainHead("c").extend(d.entry for d in writes.decisions)
    entries = [json.loads(entry) for entry in encoded]
    by_recipient = {e["recipient"]: e for e in entries}
    assert by_recipient["ipr-center"]["source"] == "platform-b", "a named delivery"
    record_id = str(event.to_avro()["indicator_id"])
    pseudonyms = {e["source"] for e in entries if e["recipient"] != "ipr-center"}
    (pseudonym,) = pseudonyms
    assert pseudonym.startswith("anon-")
    for entry in entries:
        if entry["recipient"] != "ipr-center":
            assert entry["decision_id"] != decision_id_for(
                "platform-b", record_id, entry["recipient"], entry["policy_version"]
            )
    members = [m.id for m in router.policy_set.registry.members]
    assert (
        reveal_source(pseudonym_key(match_key.secret), pseudonym, record_id, members)
        == "platform-b"
    )
    assert {d.source for d in writes.decisions} == {"platform-b"}, "metrics keep the name"
    env = {**os.environ, "ACTION_DEMO_KEYS": "true"}  # the example's secret, asked for
    env.pop("ACTION_MATCH_SECRET", None)
    cli = Path(sys.executable).parent / "action-broker"
    done = subprocess.run(
        [str(cli), "audit", "reveal", pseudonym, "--record-id", record_id, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["source"] == "platform-b"
