"""The envelope is a list, not a consequence of Avro types: every other field, including
one a later schema version adds, is treatable and withheld unless a rule keeps it."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.catalog import SchemaCatalog
from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from broker.policy.envelope import (
    ENVELOPE,
    TEXT,
    EnvelopeError,
    TreatableField,
    treatable_fields,
)
from policies import POLICY_DIR
from tests.members import indicator

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def _with_field(event_type: str, field: dict[str, Any]) -> dict[str, Any]:
    schema = dict(copy.deepcopy(SchemaCatalog.load().latest(event_type).schema))
    schema["fields"].append(field)
    return schema


def test_a_new_non_nullable_field_with_a_default_is_treatable_not_envelope() -> None:
    """It used to count as envelope (neither nullable nor a list) and travel in clear to
    every recipient, even under default_fields: drop."""
    schema = _with_field("SellerIndicator", {"name": "notes", "type": "string", "default": ""})
    fields = treatable_fields("SellerIndicator", schema)
    assert fields["notes"] == TreatableField(TEXT, "")


def test_a_field_outside_the_envelope_without_a_default_is_refused() -> None:
    schema = _with_field("Retraction", {"name": "case_number", "type": "long"})
    with pytest.raises(EnvelopeError, match=r"Retraction\.case_number .* no default"):
        treatable_fields("Retraction", schema)


def test_every_current_field_is_envelope_or_treatable() -> None:
    catalog = SchemaCatalog.load()
    for event_type in catalog.type_names:
        schema = catalog.latest(event_type).schema
        names = {f["name"] for f in schema["fields"]}
        assert ENVELOPE[event_type] <= names, "the envelope names real fields"
        treatable = treatable_fields(event_type, schema)
        tops = {path.partition(".")[0] for path in treatable}
        assert names == ENVELOPE[event_type] | tops


@pytest.fixture(scope="session")
def policy_set_with_notes(policies: PolicySet) -> Callable[..., PolicySet]:
    def policy_set_with_notes() -> PolicySet:
        treatable = dict(policies.treatable)
        treatable["SellerIndicator"] = {
            **treatable["SellerIndicator"],
            "notes": TreatableField(TEXT, ""),
        }
        return PolicySet(policies.registry, policies.mous, treatable, policies.version)

    return policy_set_with_notes


def test_a_new_field_is_withheld_under_default_drop_and_kept_where_a_rule_keeps_all(
    match_key: MatchTokenKey, policy_set_with_notes: Any
) -> None:
    policies = policy_set_with_notes()
    record = {**indicator("platform-a", tlp="GREEN").to_avro(), "notes": "call +8613800138000"}
    # platform-a shares with platforms under default_fields: drop
    to_platform = policies.evaluate(
        record, "SellerIndicator", "platform-b", now=NOW, match_key=match_key
    )
    assert to_platform.delivered
    assert to_platform.record is not None
    assert to_platform.record["notes"] == "", "withheld: the field's default"
    hss = {
        **indicator("platform-c", hss=True, tlp="GREEN", purpose="HEALTH_SAFETY").to_avro(),
        "notes": "kept",
    }
    # platform-c's HSS rule to the government keeps every field (default_fields: keep)
    to_government = policies.evaluate(
        hss, "SellerIndicator", "ipr-center", now=NOW, match_key=match_key
    )
    assert to_government.record is not None
    assert to_government.record["notes"] == "kept"


def test_recipients_learn_expires_at(policies: PolicySet, match_key: MatchTokenKey) -> None:
    """Part of the envelope: a recipient must know when to stop using an indicator."""
    expires = NOW + dt.timedelta(days=30)
    record = indicator("platform-a", tlp="GREEN", expires_at=expires).to_avro()
    decision = policies.evaluate(
        record, "SellerIndicator", "platform-b", now=NOW, match_key=match_key
    )
    assert decision.delivered
    assert decision.record is not None
    assert decision.record["expires_at"] == expires


def test_policy_and_schema_checks_name_the_fields_no_rule_names(policies: PolicySet) -> None:
    from broker.cli.policy import cli as policy_cli

    result = CliRunner().invoke(policy_cli, ["check", str(POLICY_DIR)])
    assert result.exit_code == 0, result.output
    for event_type, path in policies.unnamed_fields():
        assert f"review: {event_type}.{path} is named by no rule" in result.output
    named = {(t, p) for t, p in policies.unnamed_fields()}
    assert ("SellerIndicator", "seller.email") not in named, "named by the MOUs"


def _retraction(**changes: Any) -> dict[str, Any]:
    record = {
        "retraction_id": "5d0c4c1e-3f65-4c59-9a53-0d1f0c6a0302",
        "indicator_id": "5d0c4c1e-3f65-4c59-9a53-0d1f0c6a0301",
        "source_member": "platform-b",
        "retracted_at": NOW - dt.timedelta(hours=1),
        "reason": "MISTAKE",
        "explanation": "appeal won",
        "tlp": "GREEN",
    }
    return {**record, **changes}


def test_a_retraction_goes_through_the_engines_treatments_like_any_record(
    policies: PolicySet, match_key: MatchTokenKey
) -> None:
    """The router used to copy a retraction and treat only ``explanation`` by hand, so any
    other field (one a later schema adds) travelled in clear. Now the rules treat every
    field, and a recipient with no retraction rule today gets the envelope only."""
    treatable = dict(policies.treatable)
    treatable["Retraction"] = {**treatable["Retraction"], "notes": TreatableField(TEXT, "")}
    policies = PolicySet(policies.registry, policies.mous, treatable, policies.version)
    received = {"platform-a": "anonymous-platform", "payments-y": "platform-b"}
    decisions = {
        d.recipient: d
        for d in policies.retraction_decisions(
            _retraction(notes="ring +8613800138000"), received, now=NOW, match_key=match_key
        )
    }
    to_platform = decisions["platform-a"]
    assert to_platform.delivered
    assert to_platform.record is not None
    assert to_platform.record["notes"] == "", "a field no rule keeps is withheld"
    assert to_platform.record["explanation"] is None, "pb.retractions-to-platforms drops it"
    assert to_platform.record["source_member"] == "anonymous-platform", "as the indicator was"
    assert to_platform.rule_ids[0] == "ledger.retraction"
    # platform-b shares no retractions with payments-y today, yet payments-y got the
    # indicator: the retraction reaches it, with nothing but its envelope.
    to_payments = decisions["payments-y"]
    assert to_payments.delivered
    assert to_payments.record is not None
    assert (to_payments.record["explanation"], to_payments.record["notes"]) == (None, "")
    assert to_payments.rule_ids == ("ledger.retraction",)
    assert not decisions["platform-c"].delivered, "it did not receive the indicator"


def test_explain_answers_for_a_retraction_what_the_router_does(tmp_path: Path) -> None:
    import json

    from broker.cli.policy import cli as policy_cli

    record = {**_retraction(), "type": "Retraction", "retracted_at": "2026-11-20T10:00:00Z"}
    indicator_record = {
        "type": "SellerIndicator",
        "indicator_id": record["indicator_id"],
        "source_member": "platform-b",
        "observed_at": "2026-11-20T07:00:00Z",
        "published_at": "2026-11-20T08:00:00Z",
        "seller": {"account_id": "B-1"},
        "product_categories": ["FOOTWEAR"],
        "confidence": 90,
        "hss": False,
        "tlp": "GREEN",
        "purpose": "IPR_ENFORCEMENT",
    }
    (tmp_path / "r.json").write_text(json.dumps(record))
    (tmp_path / "i.json").write_text(json.dumps(indicator_record))
    base = [
        "explain",
        "--policies",
        str(POLICY_DIR),
        "--record",
        str(tmp_path / "r.json"),
        "--indicator",
        str(tmp_path / "i.json"),
        "--at",
        "2026-11-20T12:00:00",
    ]
    runner = CliRunner()
    got = runner.invoke(policy_cli, [*base, "--recipient", "platform-a"])
    assert got.exit_code == 0, got.output
    assert "explanation  drop" in got.output
    assert "the indicator reached: ipr-center, platform-a, platform-c" in got.output
    missed = runner.invoke(policy_cli, [*base, "--recipient", "payments-x"])
    assert missed.exit_code == 4
    assert "payments-x did not receive indicator" in missed.output
