"""Member-side pure code: imports with rejects, decryption, the analyst store and its
correlation, the exports (STIX validated, MISP loaded by PyMISP), synthetic data."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from broker.contract import decision_id_for
from broker.errors import ActionError
from broker.events import SellerIndicator
from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from consumers.export import export_csv, export_jsonl
from consumers.feed_reader import decrypt_fields
from consumers.store import FeedStore
from policies import POLICY_DIR
from policies.demo_keys import demo_encryption_key
from producers.importing import Accepted, Rejected, read_events
from producers.synthetic import SYNTHETIC_LABEL, SyntheticData
from tests.members import indicator, retraction

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
BIN = Path(sys.executable).parent


# --- imports --------------------------------------------------------------------------


def test_jsonl_import_accepts_good_lines_and_names_each_bad_one(tmp_path: Path) -> None:
    good = {
        "seller": {"account_id": "S-9", "email": "A@Shop.example"},
        "product_categories": ["FOOTWEAR"],
        "confidence": 80,
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "confidence": 180}),
        json.dumps({**good, "source_member": "platform-b"}),
        "",
        json.dumps([1, 2]),
        json.dumps({**good, "tlp": "GREEN", "purpose": "FRAUD_PREVENTION"}),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = list(read_events(path, SellerIndicator, "platform-a", NOW))
    accepted = [i for i in items if isinstance(i, Accepted)]
    rejected = {i.line: i.reason for i in items if isinstance(i, Rejected)}
    assert [a.line for a in accepted] == [1, 7]
    first = accepted[0].event
    assert isinstance(first, SellerIndicator)
    assert first.seller.email == "a@shop.example", "normalized"
    assert accepted[0].event.source_member == "platform-a"
    assert set(rejected) == {2, 3, 4, 6}
    assert "not JSON" in rejected[2]
    assert "confidence" in rejected[3]
    assert "published by 'platform-a'" in rejected[4]


def test_csv_import_reads_dotted_and_list_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "seller.account_id,seller.email,seller.payment_accounts,seller.address.city,"
        "seller.address.country,product_categories,confidence,hss,tlp\n"
        "S-1,a@b.example,acct_1;acct_2,Putian,CN,FOOTWEAR;TOYS,90,true,GREEN\n"
        "S-2,not-an-email,,,,FOOTWEAR,90,false,AMBER\n"
        "S-3,too,few\n"
    )
    items = list(read_events(path, SellerIndicator, "platform-a", NOW))
    (ok,) = [i for i in items if isinstance(i, Accepted)]
    event = ok.event
    assert isinstance(event, SellerIndicator)
    assert event.seller.payment_accounts == ["acct_1", "acct_2"]
    assert event.seller.addresses[0].city == "Putian"
    assert [c.value for c in event.product_categories] == ["FOOTWEAR", "TOYS"]
    assert event.hss is True
    reasons = {i.line: i.reason for i in items if isinstance(i, Rejected)}
    assert "seller.email" in reasons[3]
    assert "3 columns where the header has 9" in reasons[4]


def _publish_dry_run(path: Path, env: dict[str, str] | None = None) -> Any:
    """``action-publish --dry-run indicators PATH -o json`` as platform-a, demo keys."""
    return subprocess.run(
        [
            str(BIN / "action-publish"),
            "--member",
            "platform-a",
            "--demo-keys",
            "--dry-run",
            "indicators",
            str(path),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_rows_without_ids_get_the_same_id_in_every_run_and_a_repeated_row_is_rejected(
    tmp_path: Path,
) -> None:
    """Importing a file again gives each row the id it had, so the router refuses what the
    first run published; two equal rows are one record."""
    path = tmp_path / "in.jsonl"
    row = {"seller": {"account_id": "S-1"}, "product_categories": ["TOYS"], "confidence": 70}
    other = {**row, "confidence": 71}
    path.write_text("\n".join(json.dumps(r) for r in (row, other, row)) + "\n")
    later = NOW + dt.timedelta(hours=3)
    first = list(read_events(path, SellerIndicator, "platform-a", NOW))
    second = list(read_events(path, SellerIndicator, "platform-a", later))
    ids = [str(i.event.to_avro()["indicator_id"]) for i in first if isinstance(i, Accepted)]
    assert ids == [
        str(i.event.to_avro()["indicator_id"]) for i in second if isinstance(i, Accepted)
    ]
    assert len(set(ids)) == 2
    (repeated,) = [i for i in first if isinstance(i, Rejected)]
    assert (repeated.line, repeated.reason) == (3, f"the same record as line 1 (id {ids[0]})")
    elsewhere = list(read_events(path, SellerIndicator, "platform-c", NOW))
    assert not {
        str(i.event.to_avro()["indicator_id"]) for i in elsewhere if isinstance(i, Accepted)
    } & set(ids), "ids depend on the member"


def test_an_oversized_row_is_a_rejected_line_and_the_import_goes_on(tmp_path: Path) -> None:
    """It used to stop the whole file at that row, after earlier rows were published,
    with no line number and nothing in the rejects file."""
    path = tmp_path / "alerts.jsonl"
    small = {"seller": {"account_id": "S-1"}, "product_categories": ["TOYS"], "confidence": 70}
    text = "y" * 4000
    addresses = [{"lines": [f"{i} {text}"] * 8, "country": "CN"} for i in range(16)]
    huge = {
        **small,
        "seller": {"account_id": "S-2", "addresses": addresses},
        "brands": [f"{i} {text}" for i in range(64)],
        "evidence": [
            {"kind": "OTHER", "reference": f"{i} {text}", "description": text} for i in range(64)
        ],
    }
    path.write_text(
        "\n".join(json.dumps(r) for r in (small, huge, {**small, "confidence": 80})) + "\n"
    )
    done = _publish_dry_run(path)
    assert done.returncode == 4, done.stderr
    (summary,) = json.loads(done.stdout)
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    (reject,) = [json.loads(line) for line in Path(summary["rejects"]).read_text().splitlines()]
    assert reject["line"] == 2
    assert "encodes to" in reject["reason"]


def test_action_publish_dry_run_writes_rejects_and_exits_4(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text(
        '{"seller": {"account_id": "S-1"}, "product_categories": ["TOYS"], '
        '"confidence": 70}\n{"confidence": 1}\n'
    )
    done = _publish_dry_run(path)
    assert done.returncode == 4, done.stderr
    (summary,) = json.loads(done.stdout)
    assert (summary["accepted"], summary["rejected"], summary["published"]) == (1, 1, 0)
    rejects = [json.loads(line) for line in Path(summary["rejects"]).read_text().splitlines()]
    assert rejects[0]["line"] == 2
    assert rejects[0]["input"] == '{"confidence": 1}'
    assert "product_categories" in rejects[0]["reason"]


def test_action_publish_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from policies.demo_keys import demo_signing_key

    key = tmp_path / "key.pem"
    key.write_bytes(
        demo_signing_key("platform-a").private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o644)
    done = subprocess.run(
        [
            str(BIN / "action-publish"),
            "--member",
            "platform-a",
            "--signing-key",
            str(key),
            "--dry-run",
            "retract",
            "7d5c0000-0000-4000-8000-000000000000",
            "--reason",
            "MISTAKE",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "readable by others" in done.stderr
    assert "chmod 600" in done.stderr


# --- decryption, store, correlation -------------------------------------------------------


def test_deliveries_become_typed_events_where_values_are_in_clear(deliver: Any) -> None:
    full = deliver(indicator("platform-a", 5), "ipr-center").event()
    assert isinstance(full, SellerIndicator)
    assert full.seller.email == "seller5@shop.example"
    assert deliver(indicator("platform-a", 5), "platform-b").event() is None, "tokens"


def test_fields_encrypted_to_a_member_open_with_its_key_only(
    policies: PolicySet, match_key: MatchTokenKey, deliver: Any
) -> None:
    event = indicator("payments-x", 1, purpose="FRAUD_PREVENTION")
    delivery = deliver(event, "platform-a")
    assert delivery.record["seller"]["payment_accounts"] == ["acct_000001"]
    record = policies.evaluate(
        event.to_avro(), "SellerIndicator", "platform-a", now=NOW, match_key=match_key
    ).record
    assert record is not None
    stolen = json.loads(json.dumps(record, default=str))
    failed = decrypt_fields(
        stolen, demo_encryption_key("platform-b"), "platform-a-", str(record["indicator_id"])
    )
    assert failed == ["seller.payment_accounts"]


def _store_with_correlated_sellers(tmp_path: Path, deliver: Any) -> tuple[FeedStore, list[Any]]:
    store = FeedStore(tmp_path / "ipr.sqlite")
    shared = {
        "account_id": "S-77",
        "email": "x@repeat.example",
        "phone": "+8613800138000",
        "country": "CN",
    }  # the carrier's MOU passes the phone, not the e-mail
    events = [
        indicator("platform-a", 1, seller=shared),
        indicator(
            "payments-x", 2, seller={**shared, "account_id": "PX-1"}, purpose="FRAUD_PREVENTION"
        ),
        indicator(
            "express-carrier",
            3,
            seller={"phone": "+8613800138000", "country": "CN"},
            hss=True,
            purpose="HEALTH_SAFETY",
        ),
        indicator("platform-a", 4, seller={"account_id": "LONER", "country": "CN"}),
    ]
    deliveries = [deliver(e, "ipr-center") for e in events]
    assert store.add(deliveries) == 4
    assert store.add(deliveries) == 0, "a replayed delivery is ignored"
    return store, events


def test_the_store_correlates_sellers_across_sources_and_applies_retractions(
    tmp_path: Path, deliver: Any
) -> None:
    store, events = _store_with_correlated_sellers(tmp_path, deliver)
    (seller,) = store.sellers(2)
    assert seller.sources == ("express-carrier", "payments-x", "platform-a")
    assert len(seller.indicators) == 3
    assert seller.hss
    assert ("seller.email", "x@repeat.example") in seller.identifiers
    assert len(store.sellers(1)) == 2
    store.add([deliver(retraction(events[1]), "ipr-center")])
    (after,) = store.sellers(2)
    assert after.sources == ("express-carrier", "platform-a")
    assert store.counts()["retracted"] == 1
    store.close()


def test_a_rivals_record_with_a_known_id_neither_shadows_nor_retracts_the_original(
    tmp_path: Path, deliver: Any
) -> None:
    """platform-b learned platform-a's indicator id from its own feed and publishes a
    decoy with that id, then a retraction of it. Records are (source, id) in the store:
    platform-a's indicator stays, live, and the decoy's retraction retracts the decoy."""
    store = FeedStore(tmp_path / "decoy.sqlite")
    genuine = indicator("platform-a", 1, seller={"email": "genuine@shop.example"})
    genuine_id = genuine.to_avro()["indicator_id"]
    decoy = indicator(
        "platform-b", 2, indicator_id=genuine_id, seller={"email": "decoy@shop.example"}
    )
    for event in (genuine, decoy, retraction(decoy)):
        assert store.add([deliver(event, "ipr-center")]) == 1
    assert store.counts()["indicators"] == 2
    assert store.retracted() == {("platform-b", str(genuine_id))}
    live = {seller.sources for seller in store.sellers(1)}
    assert live == {("platform-a",)}, "the genuine indicator is live and correlated"
    # The same record again under another policy version is a duplicate, not a second row.
    again = dataclasses.replace(deliver(genuine, "ipr-center"), decision_id="other-version")
    assert store.add([again]) == 0
    store.close()


def test_an_older_store_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE deliveries (decision_id TEXT PRIMARY KEY)")
    old.close()
    with pytest.raises(ActionError, match="schema version 0") as raised:
        FeedStore(path)
    assert "new --store" in (raised.value.hint or "")


def test_decision_ids_belong_to_the_source_as_delivered(deliver: Any) -> None:
    """Two members' records with one id never share a decision id; an anonymous delivery's
    id is computed from its label, so it names no source the delivery does not."""
    ids = {
        decision_id_for(source, "r-1", "ipr-center", "v1")
        for source in ("platform-a", "platform-b", "anonymous-platform")
    }
    assert len(ids) == 3
    anonymous = deliver(indicator("platform-b", 3, tlp="GREEN"), "platform-a")
    assert anonymous.source.startswith("anonymous-")
    assert anonymous.decision_id == decision_id_for(
        anonymous.source, anonymous.record_id, "platform-a", anonymous.policy_version
    )


def test_match_tokens_correlate_where_clear_values_are_withheld(
    tmp_path: Path, deliver: Any
) -> None:
    store = FeedStore(tmp_path / "b.sqlite")
    same = {"email": "seller@twice.example", "country": "CN"}
    store.add(
        [
            deliver(indicator("platform-b", 1, seller=same, tlp="GREEN"), "platform-a"),
            deliver(
                indicator("payments-x", 2, seller=same, purpose="FRAUD_PREVENTION"), "platform-a"
            ),
        ]
    )
    (seller,) = store.sellers(2)
    ((_, token),) = [i for i in seller.identifiers if i[0] == "seller.email"]
    assert token.startswith("mt1.k1.")
    assert "twice" not in json.dumps(seller.identifiers)
    store.close()


# --- exports ----------------------------------------------------------------------------


def test_jsonl_and_csv_exports(tmp_path: Path, deliver: Any) -> None:
    store, _ = _store_with_correlated_sellers(tmp_path, deliver)
    assert export_jsonl(store, tmp_path / "out.jsonl") == 4
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert first["type"] == "SellerIndicator"
    assert export_csv(store, tmp_path / "out.csv") == 4
    assert (tmp_path / "out.csv").read_text().startswith("event_type,source,record_id")
    store.close()


# --- synthetic data ---------------------------------------------------------------------


def test_synthetic_data_is_reproducible_labelled_and_shaped_like_fy2021() -> None:
    members = ["platform-a", "platform-b", "payments-x"]
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    first = SyntheticData(seed=7, now=now).stream(members, 600)
    again = SyntheticData(seed=7, now=now).stream(members, 600)
    assert [e.to_avro() for e in first] == [e.to_avro() for e in again]
    assert all(SYNTHETIC_LABEL in (e.seller.display_name or "") for e in first)
    categories = Counter(e.product_categories[0].value for e in first)
    top_two = {c for c, _ in categories.most_common(2)}
    assert top_two == {"WEARING_APPAREL_ACCESSORIES", "HANDBAGS_WALLETS"}
    hss_share = sum(e.hss for e in first) / len(first)
    assert 0.02 < hss_share < 0.15
    sellers = Counter(e.seller.account_id for e in first)
    assert sum(1 for n in sellers.values() if n > 1) >= 20, "sellers recur across members"


@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_seizures_are_valid(seed: int) -> None:
    data = SyntheticData(seed=seed)
    reports = [data.seizure("ipr-center", "brand-owner") for _ in range(50)]
    assert all(r.to_avro()["quantity"] >= 1 for r in reports)


def test_the_sdk_needs_only_the_trust_store_never_other_members_mous(tmp_path: Path) -> None:
    """A member's tools read members.yaml (public keys) and nothing else of the policy
    folder: with another member's MOU unreadable beside it, publishing works."""
    import shutil

    from broker.membership import load_trust_store

    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(POLICY_DIR / "members.yaml", trust / "members.yaml")
    (trust / "mou").mkdir()  # another member's MOU, unreadable here: never opened
    (trust / "mou" / "platform-b.yaml").write_text("member: platform-b\nshares: [oops\n")
    registry = load_trust_store(trust)
    assert {m.id for m in registry.members} >= {"platform-a", "ipr-center"}
    assert registry.router_keys
    path = tmp_path / "alerts.jsonl"
    path.write_text(
        '{"seller": {"account_id": "S-1"}, "product_categories": ["TOYS"], "confidence": 70}\n'
    )
    done = _publish_dry_run(path, env={**os.environ, "ACTION_POLICY_DIR": str(trust)})
    assert done.returncode == 0, done.stderr
