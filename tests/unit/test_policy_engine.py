"""The policy engine on the example consortium: rule kinds, treatments, deny by default."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import PolicyError
from broker.events import SellerIndicator
from broker.match_tokens import MatchTokenKey, match_token
from broker.membership import load_trust_store
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.policy.model import Treatment
from policies import POLICY_DIR
from policies.demo_keys import demo_encryption_key
from tests.strategies import seller_indicators

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def match_key() -> MatchTokenKey:
    """Version 3, so the tests see the key version travel in every token."""
    return MatchTokenKey(version=3, secret=b"k" * 32)


def indicator(source: str = "platform-a", **changes: Any) -> dict[str, Any]:
    seller = {
        "account_id": "S-1",
        "display_name": "cheap kicks",
        "email": "sales@cheap-kicks.example",
        "phone": "+8613800138000",
        "country": "CN",
        "addresses": [{"lines": ["1 Factory Rd"], "city": "Putian", "country": "CN"}],
        "payment_accounts": ["acct_123456"],
        "ip_addresses": ["203.0.113.9"],
    }
    record = {
        "indicator_id": str(uuid.uuid4()),
        "source_member": source,
        "observed_at": NOW - dt.timedelta(hours=5),
        "published_at": NOW - dt.timedelta(hours=4),
        "seller": {**seller, **changes.pop("seller", {})},
        "product_categories": ["FOOTWEAR"],
        "confidence": 90,
        "hss": False,
        "tlp": "AMBER",
        "purpose": "IPR_ENFORCEMENT",
        **changes,
    }
    return SellerIndicator.parse(record).to_avro()


@pytest.fixture(scope="session")
def decide(policies: PolicySet, match_key: MatchTokenKey) -> Callable[..., Any]:
    def decide(record: dict[str, Any], recipient: str, now: dt.datetime = NOW) -> Any:
        return policies.evaluate(record, "SellerIndicator", recipient, now=now, match_key=match_key)

    return decide


def test_policy_version_is_a_content_hash(policy_copy: Path, policies: PolicySet) -> None:
    copy = policy_copy
    assert load_policies(copy).version == policies.version
    mou = copy / "mou" / "platform-c.yaml"
    mou.write_text(mou.read_text().replace("min_confidence: 50", "min_confidence: 55"))
    assert load_policies(copy).version != policies.version


def test_no_rule_means_no_delivery(decide: Any) -> None:
    decision = decide(indicator(), "brand-owner")
    assert not decision.delivered
    assert decision.record is None
    assert "no rule allows SellerIndicator from platform-a to brand-owner" in decision.reasons[0]


def test_a_policy_set_pickled_to_another_process_decides_alike(match_key: MatchTokenKey) -> None:
    """The routing workers get the policy set pickled; each decision's reasons must
    still name its own rules there."""
    import pickle

    import broker.routing_pool  # noqa: F401 - registers how members' public keys pickle

    policies = load_policies(POLICY_DIR)
    record = indicator(tlp="RED")
    expected = {
        m.id: policies.evaluate(
            record, "SellerIndicator", m.id, now=NOW, match_key=match_key
        ).reasons
        for m in policies.registry.members
    }
    copied = pickle.loads(pickle.dumps(policies))
    for member, reasons in expected.items():
        again = copied.evaluate(record, "SellerIndicator", member, now=NOW, match_key=match_key)
        assert again.reasons == reasons


def test_recipient_must_accept_too(decide: Any) -> None:
    # platform-c accepts only TLP:GREEN and below.
    decision = decide(indicator(), "platform-c")
    assert not decision.delivered
    assert "above what the recipient accepts" in decision.reasons[0]
    assert decide(indicator(tlp="GREEN"), "platform-c").delivered


def test_hash_gives_match_tokens_and_keeps_correlation(
    match_key: MatchTokenKey, decide: Any
) -> None:
    decision = decide(indicator(), "platform-b")
    assert decision.delivered
    seller = decision.record["seller"]
    assert seller["email"] == match_token(match_key, "email", "sales@cheap-kicks.example")
    assert seller["email"].startswith("mt1.k3.")
    other = decide(indicator(source="platform-c", tlp="GREEN"), "platform-a")
    assert other.record["seller"]["email"] != seller["email"], "platform-c masks instead"


def test_mask_generalize_and_most_restrictive_wins(decide: Any) -> None:
    toys: dict[str, Any] = {"product_categories": ["TOYS"], "purpose": "HEALTH_SAFETY"}
    carrier = decide(indicator(hss=True, **toys), "express-carrier")
    assert carrier.delivered
    assert carrier.record["seller"]["phone"] == "**********8000"
    platform_b = decide(indicator(), "platform-b")
    # platform-a generalizes addresses for platforms; platform-b's MOU drops them: drop wins.
    assert platform_b.treatment_of("seller.addresses") is Treatment.DROP
    assert platform_b.record["seller"]["addresses"] == []
    assert platform_b.record["seller"]["ip_addresses"] == ["203.0.113.0/24"]


def test_encrypt_is_readable_only_by_the_recipient(decide: Any) -> None:
    record = indicator(source="payments-x", purpose="FRAUD_PREVENTION")
    decision = decide(record, "platform-a")
    assert decision.delivered
    (token,) = decision.record["seller"]["payment_accounts"]
    prefix, kid, body = token.split(".", 2)
    assert (prefix, kid) == ("hpke1", "platform-a-enc-2026")
    ciphertext = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    suite = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)
    context = f"{record['indicator_id']}:seller.payment_accounts".encode()
    plain = suite.decrypt(ciphertext, demo_encryption_key("platform-a"), info=context)
    assert plain == b"acct_123456"
    with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: wrong key cannot decrypt
        suite.decrypt(ciphertext, demo_encryption_key("platform-b"), info=context)


def test_conditions_confidence_hss_embargo_expiry(decide: Any) -> None:
    assert "below the minimum 70" in decide(indicator(confidence=60), "platform-b").reasons[0]
    toys: dict[str, Any] = {"product_categories": ["TOYS"], "purpose": "HEALTH_SAFETY"}
    carrier_plain = decide(indicator(**toys), "express-carrier")
    assert "only health/safety/security" in carrier_plain.reasons[0]
    fresh = indicator(
        source="platform-b",
        published_at=NOW - dt.timedelta(minutes=10),
        observed_at=NOW - dt.timedelta(minutes=20),
        tlp="GREEN",
    )
    assert "embargoed for 60 minutes" in decide(fresh, "platform-a").reasons[0]
    assert decide(fresh, "platform-a", NOW + dt.timedelta(hours=1)).delivered
    assert "180-day limit" in decide(fresh, "platform-a", NOW + dt.timedelta(days=181)).reasons[0]


def test_red_goes_only_to_named_recipients(decide: Any) -> None:
    red = indicator(source="payments-x", tlp="RED", purpose="FRAUD_PREVENTION")
    assert decide(red, "ipr-center").delivered, "payments-x names ipr-center"
    to_sector = decide(indicator(tlp="RED", purpose="IPR_ENFORCEMENT"), "ipr-center")
    assert not to_sector.delivered
    assert "TLP:RED goes only to recipients the share rule names" in to_sector.reasons[0]


def test_anonymous_attribution(decide: Any) -> None:
    decision = decide(indicator(source="platform-b", tlp="GREEN"), "platform-a")
    assert decision.delivered
    assert decision.record["source_member"] == "anonymous-platform"
    assert decision.source == "platform-b", "the decision itself still records the source"


def test_decision_ids_are_deterministic_per_recipient_and_version(decide: Any) -> None:
    record = indicator()
    a, b = decide(record, "platform-b"), decide(record, "platform-b")
    assert a.decision_id == b.decision_id
    assert decide(record, "ipr-center").decision_id != a.decision_id
    assert json.loads(json.dumps(a.to_json()))["fields"]["seller.email"]["treatment"] == "hash"


def test_caller_record_is_never_modified(decide: Any) -> None:
    record = indicator()
    before = json.dumps(record, default=str, sort_keys=True)
    decide(record, "platform-b")
    assert json.dumps(record, default=str, sort_keys=True) == before


# --- properties over generated records ---------------------------------------------------

# Strategies need the member ids when the tests are collected: the registry alone.
MEMBERS = [m.id for m in load_trust_store(POLICY_DIR).members]


def _clear_values(record: dict[str, Any]) -> dict[str, set[str]]:
    """path -> its text values, for the seller's fields and the free-text lists a policy
    also treats (a brand may equal a hashed device id: that brand is kept)."""
    fields = {f"seller.{name}": value for name, value in record["seller"].items()}
    fields |= {name: record.get(name) for name in ("brands", "evidence")}
    out: dict[str, set[str]] = {}
    for path, value in fields.items():
        if isinstance(value, str):
            out[path] = {value}
        elif isinstance(value, list) and value and isinstance(value[0], str):
            out[path] = set(value)
    return out


@given(
    event=seller_indicators(), source=st.sampled_from(MEMBERS), recipient=st.sampled_from(MEMBERS)
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_properties_of_every_decision(
    event: SellerIndicator, source: str, recipient: str, policies: PolicySet, decide: Any
) -> None:
    record = event.model_copy(update={"source_member": source}).to_avro()
    decision = decide(record, recipient, now=dt.datetime.now(dt.UTC))
    again = decide(record, recipient, now=dt.datetime.now(dt.UTC))
    assert (decision.delivered, decision.rule_ids, decision.fields) == (
        again.delivered,
        again.rule_ids,
        again.fields,
    ), "deterministic"
    if not decision.delivered:
        assert decision.record is None, "withheld means nothing delivered"
        return
    # Deny by default: an allowing share rule of the source and accept rule of the recipient.
    share_id, accept_id = decision.rule_ids
    assert any(r.id == share_id for r in policies.mous[source].shares)
    accept = next(r for r in policies.mous[recipient].accepts if r.id == accept_id)
    # The TLP marking travels unchanged, and AMBER+STRICT/RED never go to a rule whose
    # member passes records on to its clients.
    assert decision.record["tlp"] == record["tlp"]
    assert not (accept.shares_with_clients and record["tlp"] in ("AMBER_STRICT", "RED"))
    # A field whose treatment is drop/hash/mask/encrypt never appears in clear.
    delivered = json.dumps(decision.record, default=str)
    clear = _clear_values(record)
    for path, values in clear.items():
        treatment = decision.treatment_of(path)
        if treatment in (Treatment.DROP, Treatment.HASH, Treatment.MASK, Treatment.ENCRYPT):
            # The same value may also sit in a field that is kept (a merchant id equal to
            # a device id, or inside a kept brand): only a value no kept field holds must
            # be absent.
            kept = {
                v
                for other, vs in clear.items()
                if other != path
                and decision.treatment_of(other)
                not in (Treatment.DROP, Treatment.HASH, Treatment.MASK, Treatment.ENCRYPT)
                for v in vs
            }
            for value in values:
                inside_kept = any(value in other for other in kept)
                if len(value) >= 6 and not inside_kept:  # short ones occur inside tokens
                    assert json.dumps(value)[1:-1] not in delivered, (path, treatment)


def test_members_without_an_mou_neither_send_nor_receive(
    policy_copy: Path, match_key: MatchTokenKey
) -> None:
    copy = policy_copy
    (copy / "mou" / "platform-b.yaml").unlink()
    reduced: PolicySet = load_policies(copy)
    decision = reduced.evaluate(
        indicator(), "SellerIndicator", "platform-b", now=NOW, match_key=match_key
    )
    assert not decision.delivered


def test_a_member_id_that_looks_like_an_anonymous_label_is_refused(policy_copy: Path) -> None:
    """A member called ``anonymous-platform`` would pass its named records off as some
    platform's anonymous ones (and every anonymous platform record as its own)."""
    registry = policy_copy / "members.yaml"
    text = registry.read_text()
    registry.write_text(text.replace("id: platform-c", "id: anonymous-platform", 1))
    (policy_copy / "mou" / "platform-c.yaml").unlink()
    with pytest.raises(PolicyError) as info:
        load_policies(policy_copy)
    assert any("anonymous label" in p and "members.yaml" in p for p in info.value.problems)


def test_a_condition_on_a_field_some_event_types_lack_is_refused(policy_copy: Path) -> None:
    """Conditions fail closed, so a rule that puts retractions under a purpose or an HSS
    condition would silently never match them: the loader says so instead."""
    mou = policy_copy / "mou" / "platform-c.yaml"
    old = "event_types: [SellerIndicator]\n    purposes: [HEALTH_SAFETY]"
    new = "event_types: [SellerIndicator, Retraction]\n    purposes: [HEALTH_SAFETY]"
    mou.write_text(mou.read_text().replace(old, new))
    with pytest.raises(PolicyError) as info:
        load_policies(policy_copy)
    problems = "\n".join(info.value.problems)
    assert "shares.1 (pc.hss-to-government): purposes: Retraction records carry no purpose" in (
        problems
    )
    assert "shares.1 (pc.hss-to-government): when.hss: Retraction records have no such field" in (
        problems
    )


def test_a_rule_without_purposes_for_an_event_type_with_one_is_refused(policy_copy: Path) -> None:
    mou = policy_copy / "mou" / "ipr-center.yaml"
    text = mou.read_text()
    old, new = "[EnforcementAction, Sighting, Retraction]", "[EnforcementAction, SellerIndicator]"
    mou.write_text(text.replace(old, new))
    with pytest.raises(PolicyError, match="problem") as info:
        load_policies(policy_copy)
    assert any(
        "purposes: required, as SellerIndicator records carry a purpose" in p
        for p in info.value.problems
    )


def test_invalid_folder_lists_every_problem(policy_copy: Path) -> None:
    copy = policy_copy
    mou = copy / "mou" / "platform-a.yaml"
    text = mou.read_text()
    text = text.replace("seller.addresses: generalize", "seller.addresses: hash", 1)
    text = text.replace("to: {sectors: [payment]}", "to: {sectors: [banks]}")
    text = text.replace("seller.phone: mask", "seller.shoe_size: keep")
    mou.write_text(text)
    (copy / "mou" / "payments-y.yaml").write_text("member: payments-y\nversion: 1\naccepts: [\n")
    with pytest.raises(PolicyError) as info:
        load_policies(copy)
    problems = "\n".join(info.value.problems)
    assert "platform-a.yaml: shares.4.to.sectors.0: Input should be" in problems
    assert "found 'banks'" in problems
    assert "payments-y.yaml:4:1: not valid YAML" in problems
    assert len(info.value.problems) >= 2


def test_semantic_problems_name_file_rule_and_field(policy_copy: Path) -> None:
    copy = policy_copy
    mou = copy / "mou" / "platform-a.yaml"
    text = mou.read_text()
    text = text.replace("seller.addresses: generalize", "seller.addresses: hash", 1)
    text = text.replace("seller.phone: mask", "seller.shoe_size: keep")
    text = text.replace("to: {sectors: [payment]}", "to: {members: [payments-z]}")
    mou.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policies(copy)
    problems = info.value.problems
    assert any(
        "shares.2 (pa.to-platforms): fields.seller.addresses: hash applies to text fields" in p
        for p in problems
    ), problems
    assert any("fields.seller.shoe_size: not a treatable field" in p for p in problems)
    assert any("names unknown member 'payments-z'" in p for p in problems)


def test_cli_check_and_explain(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from broker.cli.policy import cli

    runner = CliRunner()
    ok = runner.invoke(cli, ["check", str(POLICY_DIR)])
    assert ok.exit_code == 0, ok.output
    record_file = tmp_path / "r.json"
    record = {"type": "SellerIndicator", **indicator()}
    record_file.write_text(json.dumps(record, default=str))
    at = ["--at", "2026-11-22 12:00:00", "--record", str(record_file)]
    delivered = runner.invoke(cli, ["explain", *at, "--recipient", "platform-b"])
    assert delivered.exit_code == 0, delivered.output
    assert "DELIVERED" in delivered.output
    assert "seller.email" in delivered.output
    withheld = runner.invoke(cli, ["explain", *at, "-o", "json", "--recipient", "brand-owner"])
    assert withheld.exit_code == 4
    assert json.loads(withheld.output)["delivered"] is False
    fields = runner.invoke(cli, ["explain", *at, "-o", "csv", "--recipient", "platform-b"])
    assert fields.output.splitlines()[0] == "recipient,delivered,path,treatment,rule_ids"
    assert any(
        line.startswith("platform-b,True,seller.email,hash,") for line in fields.output.splitlines()
    )
    checked = runner.invoke(cli, ["check", str(POLICY_DIR), "-o", "json"])
    assert checked.exit_code == 0, checked.output
    assert all(row["problem"].startswith("review: ") for row in json.loads(checked.stdout))


def test_json_schemas_are_current() -> None:
    from broker.cli.policy import SCHEMA_MODELS

    for name, model in SCHEMA_MODELS:
        shipped = json.loads((POLICY_DIR / "schema" / f"{name}.schema.json").read_text())
        shipped.pop("$schema")
        assert shipped == model.model_json_schema(), f"run: action-policy schema ({name})"


def test_evaluate_all_matches_one_by_one_evaluation(
    policies: PolicySet, match_key: MatchTokenKey, decide: Any
) -> None:
    record = indicator(tlp="GREEN", hss=True, purpose="HEALTH_SAFETY")
    together = policies.evaluate_all(record, "SellerIndicator", now=NOW, match_key=match_key)
    assert [d.recipient for d in together] == [m for m in MEMBERS if m != "platform-a"]
    assert sum(d.delivered for d in together) >= 3
    for decision in together:
        alone = decide(record, decision.recipient)
        assert (alone.delivered, alone.rule_ids, alone.fields) == (
            decision.delivered,
            decision.rule_ids,
            decision.fields,
        )
        assert alone.record == decision.record
    delivered = [(d, d.record) for d in together if d.record is not None]
    first, first_record = next((d, r) for d, r in delivered if r["seller"]["ip_addresses"])
    first_record["seller"]["ip_addresses"].append("mutated")
    others = [r for d, r in delivered if d is not first]
    assert all("mutated" not in r["seller"]["ip_addresses"] for r in others)
    assert "mutated" not in record["seller"]["ip_addresses"]
    kept = next(d for d in together if d.treatment_of("seller.addresses") is Treatment.KEEP)
    assert kept.record is not None
    kept.record["seller"]["addresses"][0]["city"] = "mutated"
    assert record["seller"]["addresses"][0]["city"] != "mutated", "keep copies, never aliases"


def test_amber_strict_never_reaches_a_rule_that_shares_with_clients(
    policy_copy: Path, match_key: MatchTokenKey
) -> None:
    mou = policy_copy / "mou" / "brand-owner.yaml"
    text = mou.read_text()
    mou.write_text(text[: text.index("  # AMBER+STRICT and RED stay")])
    reduced = load_policies(policy_copy)
    seizure = {
        "report_id": str(uuid.uuid4()),
        "source_member": "ipr-center",
        "seized_on": dt.date(2026, 11, 18),
        "product_category": "TOYS",
        "origin_economy": "CN",
        "transport_mode": "MAIL",
        "msrp_usd_cents": 5000,
        "quantity": 3,
        "hss": True,
        "de_minimis": True,
        "rights_holder": "brand-owner",
        "tlp": "AMBER",
        "purpose": "HEALTH_SAFETY",
    }

    def decide_tlp(tlp: str) -> Any:
        record = {**seizure, "tlp": tlp}
        return reduced.evaluate(
            record, "SeizureReport", "brand-owner", now=NOW, match_key=match_key
        )

    assert decide_tlp("AMBER").delivered
    for tlp in ("AMBER_STRICT", "RED"):
        decision = decide_tlp(tlp)
        assert not decision.delivered, tlp
        assert "stays inside the recipient organisation" in decision.reasons[0]


def test_an_anonymous_label_that_only_one_member_could_send_is_refused(policy_copy: Path) -> None:
    """Every anonymous-platform record in the example is platform-b's: platforms can tell.
    Without the acknowledgement, check refuses the rule; a second platform sharing
    anonymously with the same recipients makes the label ambiguous again."""
    mou = policy_copy / "mou" / "platform-b.yaml"
    mou.write_text(mou.read_text().replace("    anonymous_traceable: true\n", ""))
    with pytest.raises(PolicyError) as info:
        load_policies(policy_copy)
    assert any(
        "platform-a can trace anonymous-platform SellerIndicator records to platform-b" in p
        for p in info.value.problems
    )
    other = policy_copy / "mou" / "platform-c.yaml"
    rule = "    max_tlp: GREEN\n    when: {min_confidence: 50, hss: never}"
    anonymous = (
        "    max_tlp: GREEN\n    attribution: anonymous\n    when: {min_confidence: 50, hss: never}"
    )
    other.write_text(other.read_text().replace(rule, anonymous))
    with pytest.raises(PolicyError) as again:
        load_policies(policy_copy)
    traced = [p for p in again.value.problems if "SellerIndicator records to platform-b" in p]
    assert traced
    assert traced == [p for p in traced if "platform-c can trace" in p], (
        "platform-a now has two possible senders; platform-c still has only platform-b"
    )
