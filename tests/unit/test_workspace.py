"""The workspace's pages over HTTP: search as typed, the dossier and why linked, why this
form, the correlation view, the login, and a hostile member's text kept inert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from broker.match_tokens import MatchTokenKey
from consumers.audit_reader import parse_entry
from consumers.dossier import correlations, delivery_form, dossier, search, typed_forms
from consumers.store import FeedStore
from consumers.workspace import Workspace
from tests.feed_stores import Deliver, ServedApp
from tests.members import indicator

SECRET = "workspace secret"


def correlated_store(path: Path, deliver: Deliver, recipient: str) -> FeedStore:
    """Three members' indicators of one seller, joined by an account id and a phone, and
    a loner; as ``recipient`` stores them (a platform receives only platform-a's)."""
    store = FeedStore(path)
    shared = {"account_id": "S-77", "email": "x@repeat.example", "phone": "+8613800138000"}
    events = [
        indicator("platform-a", 1, seller={**shared, "display_name": "Best Kicks"}),
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
        indicator("platform-a", 4, seller={"account_id": "LONER"}),
    ]
    if recipient.startswith("platform-"):
        events = [e for e in events if e.source_member == "platform-a"]
    store.add([deliver(e, recipient) for e in events])
    return store


@pytest.fixture
def workspace(tmp_path: Path, deliver: Deliver) -> Iterator[ServedApp]:
    correlated_store(tmp_path / "ipr.sqlite", deliver, "ipr-center").close()
    pages = Workspace(tmp_path / "ipr.sqlite", "ipr-center", secret=SECRET)
    served = ServedApp(pages.app())
    try:
        yield served
    finally:
        served.stop()
        pages.close()


def _signed_in(served: ServedApp) -> requests.Session:
    session = requests.Session()
    answer = session.post(served.url + "login", data={"password": SECRET}, timeout=10)
    assert answer.status_code == 200, answer.text
    return session


def test_typed_identifiers_are_normalized_as_the_router_does() -> None:
    assert "seller@shop.example" in typed_forms("  Seller@SHOP.example ")
    assert "+8613800138000" in typed_forms("+86 138 0013 8000")
    assert typed_forms("mt1.k1.abc") == ["mt1.k1.abc"]
    assert typed_forms("   ") == []


def test_the_dossier_says_why_each_indicator_was_linked(tmp_path: Path, deliver: Deliver) -> None:
    store = correlated_store(tmp_path / "s.sqlite", deliver, "ipr-center")
    (hit,) = store.db.execute(
        "SELECT source, indicator_id FROM identifiers WHERE value = 'S-77'"
    ).fetchall()
    found = dossier(store, tuple(hit))
    assert found is not None
    assert found.sources == ["express-carrier", "payments-x", "platform-a"]
    reasons = {source: shared for (source, _), (_, shared) in found.linked_by.items()}
    assert ("seller.phone", "+8613800138000") in reasons["express-carrier"]
    assert all(source != "platform-a" for source in reasons), "the start needs no reason"
    store.close()


def test_pages_need_the_login(workspace: ServedApp) -> None:
    anonymous = requests.get(workspace.url + "search", timeout=10, allow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login"
    wrong = requests.post(workspace.url + "login", data={"password": "guess"}, timeout=10)
    assert wrong.status_code == 401
    session = _signed_in(workspace)
    assert "Do we know this seller?" in session.get(workspace.url + "search", timeout=10).text


def test_search_dossier_delivery_and_correlations(workspace: ServedApp) -> None:
    session = _signed_in(workspace)
    found = session.post(workspace.url + "search", data={"q": "+86 138 0013 8000"}, timeout=10)
    assert found.headers["content-security-policy"].startswith("default-src 'none'")
    assert found.text.count('class="dossier"') == 3
    page = session.get(workspace.url + "correlations", timeout=10)
    assert "express-carrier, payments-x, platform-a" in page.text
    assert "LONER" not in page.text
    hss = session.get(workspace.url + "correlations?hss=yes&min_sources=3", timeout=10)
    assert "1 seller(s)" in hss.text


def test_a_hostile_display_name_stays_text(tmp_path: Path, deliver: Deliver) -> None:
    """A member's free text is markup-escaped on every page: no script runs, no tag lands."""
    store = FeedStore(tmp_path / "x.sqlite")
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    store.add([deliver(indicator("platform-a", 9, seller={"display_name": evil}), "ipr-center")])
    store.close()
    pages = Workspace(tmp_path / "x.sqlite", "ipr-center", secret=None)
    served = ServedApp(pages.app())
    try:
        found = requests.post(served.url + "search", data={"q": evil}, timeout=10)
        link = found.text.split('class="dossier" href="')[1].split('"')[0]
        page = requests.get(served.url + link.lstrip("/"), timeout=10).text
        for text in (found.text, page):
            assert "<script>alert" not in text
            assert "<img src=x" not in text
        assert "&lt;script&gt;" in page
    finally:
        served.stop()
        pages.close()


def test_shared_identifiers_are_counted_as_indicators_arrive_and_for_older_stores(
    tmp_path: Path, deliver: Deliver
) -> None:
    """The correlation view's seeds: per identifier, how many sources hold it. Kept as
    indicators arrive, and counted once for a store written before the table existed."""
    path = tmp_path / "s.sqlite"
    store = correlated_store(path, deliver, "ipr-center")
    query = "SELECT kind, value, sources FROM shared_identifiers ORDER BY 1, 2"
    kept = store.db.execute(query).fetchall()
    assert ("seller.phone", "+8613800138000", 3) in kept
    assert ("seller.account_id", "LONER", 1) in kept
    store.db.execute("DELETE FROM shared_identifiers")
    store.db.commit()
    store.close()
    reopened = FeedStore(path)
    assert reopened.db.execute(query).fetchall() == kept
    (seller,) = correlations(reopened, min_sources=3)
    assert seller.sources == ("express-carrier", "payments-x", "platform-a")
    assert len(correlations(reopened, min_sources=2)) == 1, "one seller, shown once"
    reopened.close()


def test_with_the_consortium_key_a_clear_value_finds_its_token(
    tmp_path: Path, deliver: Deliver, match_key: MatchTokenKey
) -> None:
    """platform-b holds platform-a's e-mails as match tokens: typed in clear, an e-mail
    finds nothing, unless the workspace is the operator's, holding the consortium key."""
    store = correlated_store(tmp_path / "pb.sqlite", deliver, "platform-b")
    typed = ["  X@Repeat.example "]
    assert search(store, typed) == []
    (hit,) = search(store, typed, match_key=match_key)
    assert hit.kind == "seller.email"
    assert hit.value.startswith("mt1.k1.")
    store.close()


def test_why_this_form_names_the_rules_from_the_audit_trail(
    tmp_path: Path, deliver: Deliver
) -> None:
    """A member that reads the audit trail sees the decision's rules and the treatment
    the MOUs gave each field; a malformed entry is skipped, never stored."""
    store = correlated_store(tmp_path / "s.sqlite", deliver, "ipr-center")
    decision_id, record_id = store.db.execute(
        "SELECT decision_id, record_id FROM deliveries WHERE source = 'platform-a' LIMIT 1"
    ).fetchone()
    entry = {
        "decision_id": decision_id,
        "record_id": record_id,
        "source": "platform-a",
        "recipient": "ipr-center",
        "outcome": "delivered",
        "rule_ids": ["pa.to-government", "ipr.accepts-all"],
        "reasons": ["shared by pa.to-government, accepted by ipr.accepts-all"],
        "fields": {"seller.email": "keep"},
        "policy_version": "pv-1",
        "decided_at_ms": 1,
        "input": "action.in.platform-a/0@0",
        "chain": "c",
        "prev": "0",
        "seq": 1,
        "hash": "h",
    }
    parsed = parse_entry(json.dumps(entry).encode(), "action.audit/0@7")
    assert parsed is not None
    assert parse_entry(b"[1, 2]", "p") is None
    assert parse_entry(b"{" * 100_000, "p") is None
    assert parse_entry(json.dumps({**entry, "fields": []}).encode(), "p") is None
    assert store.add_audit([parsed, parsed]) == 1
    form = delivery_form(store, decision_id)
    assert form is not None
    assert form.audit is not None
    assert form.audit.rule_ids == ("pa.to-government", "ipr.accepts-all")
    store.close()
    pages = Workspace(tmp_path / "s.sqlite", "ipr-center", secret=None)
    served = ServedApp(pages.app())
    try:
        page = requests.get(f"{served.url}delivery/{decision_id}", timeout=10).text
        assert '<code class="rule">pa.to-government</code>' in page
        assert "the MOUs said" in page
    finally:
        served.stop()
        pages.close()
