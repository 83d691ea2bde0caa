"""The STIX 2.1 and MISP exports: strict validation (stix2-validator, PyMISP), what each
event type becomes, no clear value a recipient received hashed, creators and stable ids,
streamed output with progress."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import stix2
from stix2validator import ValidationOptions, validate_string

from consumers.misp_export import event_uuid, export_misp, organisation
from consumers.stix_export import TLP2_IDS, stable_id, stix_objects, write_stix
from consumers.store import FeedStore
from tests.feed_stores import Deliver, every_event_type
from tests.members import indicator


def _objects(store: FeedStore) -> list[dict[str, Any]]:
    return list(stix_objects(store))


# --- STIX 2.1 ---------------------------------------------------------------------------


def test_the_bundle_passes_the_strict_validator(tmp_path: Path, deliver: Deliver) -> None:
    store = every_event_type(tmp_path, deliver, "ipr-center")
    out = tmp_path / "bundle.json"
    count = write_stix(store, out)
    text = out.read_text()
    result = validate_string(text, ValidationOptions(version="2.1", strict=True))
    assert result.is_valid, [str(e) for e in result.errors] + [str(w) for w in result.warnings]
    objects = json.loads(text)["objects"]
    assert count == len(objects)
    for obj in objects:  # and the stix2 library reads each one, no custom content
        stix2.parse(obj, allow_custom=False)
    store.close()


def test_each_event_type_becomes_its_stix_objects(tmp_path: Path, deliver: Deliver) -> None:
    store = every_event_type(tmp_path, deliver, "ipr-center")
    objects = _objects(store)
    kinds = Counter(o["type"] for o in objects)
    assert kinds["indicator"] == 3, "two published, and the retracted one's revoked version"
    assert kinds["sighting"] == 1
    assert kinds["note"] == 2, "an enforcement action and a seizure report"
    assert kinds["location"] == 1
    for observable in ("email-addr", "domain-name", "url", "ipv4-addr", "ipv6-addr"):
        assert kinds[observable] >= 1, observable
    assert kinds["user-account"] == 1
    kept = next(o for o in objects if o["type"] == "indicator" and "x@kicks" in o["pattern"])
    assert "[email-addr:value = 'x@kicks.example']" in kept["pattern"]
    assert "[user-account:user_id = 'S-77']" in kept["pattern"]
    assert "[ipv6-addr:value = '2001:db8::1']" in kept["pattern"]
    # The retraction is the indicator's newer, revoked version.
    (revoked,) = [o for o in objects if o.get("revoked")]
    assert revoked["type"] == "indicator"
    assert revoked["modified"] > revoked["created"]
    (published,) = [o for o in objects if o["id"] == revoked["id"] and not o.get("revoked")]
    assert published["modified"] < revoked["modified"]
    assert {k: v for k, v in published.items() if k != "modified"} == {
        k: v for k, v in revoked.items() if k not in ("modified", "revoked")
    }
    # Every object but the marking definitions carries a TLP 2.0 marking.
    for obj in objects:
        if obj["type"] != "marking-definition":
            assert set(obj["object_marking_refs"]) <= set(TLP2_IDS.values()), obj["id"]
    store.close()


def test_identifiers_received_hashed_never_appear_in_clear(
    tmp_path: Path, deliver: Deliver
) -> None:
    """platform-b receives platform-a's e-mails and phones as match tokens: no observable,
    pattern or name of its export holds them."""
    store = every_event_type(tmp_path, deliver, "platform-b")
    text = json.dumps(_objects(store))
    assert "x@kicks.example" not in text
    assert "8613800138000" not in text
    kinds = Counter(o["type"] for o in _objects(store))
    assert kinds["email-addr"] == 0
    assert kinds["indicator"] >= 1, "the identifiers it received in clear still make one"
    result = validate_string(
        json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": _objects(store)}),
        ValidationOptions(version="2.1", strict=True),
    )
    assert result.is_valid, [str(e) for e in result.errors]
    store.close()


def test_ids_are_stable_and_in_uuid4_form(tmp_path: Path, deliver: Deliver) -> None:
    store = every_event_type(tmp_path, deliver, "ipr-center")
    versions = [(o["id"], o.get("modified")) for o in _objects(store)]
    assert versions == [(o["id"], o.get("modified")) for o in _objects(store)], "stable"
    assert len(set(versions)) == len(versions), "each version of each object once"
    first = [ident for ident, _ in versions]
    for ident in first:
        kind, _, value = ident.partition("--")
        version = uuid.UUID(value).version
        observable = kind in ("email-addr", "domain-name", "url", "user-account")
        assert version == (5 if observable or kind.startswith("ipv") else 4), ident
    assert stable_id("note", "a", "b") != stable_id("note", "a", "c")
    store.close()


@pytest.mark.parametrize("count", [0, 1_000])
def test_progress_is_reported_while_streaming(tmp_path: Path, deliver: Deliver, count: int) -> None:
    store = FeedStore(tmp_path / "many.sqlite")
    store.add([deliver(indicator("platform-a", n), "ipr-center") for n in range(count)])
    seen: list[int] = []
    write_stix(store, tmp_path / "out.json", progress=seen.append)
    assert seen[-1] == count
    assert seen == sorted(seen)
    json.loads((tmp_path / "out.json").read_text())  # well-formed, empty or not
    store.close()


# --- MISP ---------------------------------------------------------------------------------


def _feed(folder: Path) -> dict[str, Any]:
    """Each event of a feed folder, loaded by PyMISP, by uuid."""
    from pymisp import MISPEvent

    manifest = json.loads((folder / "manifest.json").read_text())
    events = {}
    for own in manifest:
        event = MISPEvent()
        event.load_file(str(folder / f"{own}.json"))
        assert event.uuid == own
        events[own] = event
    return events


def test_every_record_is_a_misp_event_created_by_its_reporter(
    tmp_path: Path, deliver: Deliver
) -> None:
    store = every_event_type(tmp_path, deliver, "ipr-center")
    folder = tmp_path / "misp"
    count = export_misp(store, folder, exported_by="ipr-center")
    events = _feed(folder)
    assert count == len(events) == store.counts()["deliveries"] == 6
    creators = {e.Orgc.name for e in events.values()}
    assert creators == {"platform-a", "ipr-center"}, "the reporter, not the exporter"
    assert all(e.Org.name == "ipr-center" for e in events.values())
    infos = sorted(e.info.split(" ")[0] for e in events.values())
    assert infos == ["Enforcement", "Retraction", "Seizure", "Sighting", "Violative", "Violative"]
    # What is said of an indicator extends the indicator's own event.
    for event in events.values():
        if event.info.startswith(("Sighting", "Enforcement", "Retraction")):
            assert event.extends_uuid in events
    rejected = [e for e in events.values() if e.info.endswith("[retracted]")]
    assert len(rejected) == 1
    assert any(t.name == 'workflow:state="rejected"' for t in rejected[0].tags)
    assert not any(a.to_ids for a in rejected[0].attributes), "nothing left to detect"
    hashes = (folder / "hashes.csv").read_text().splitlines()
    assert all(any(line.endswith(own) for line in hashes) for own in events)
    for event in events.values():
        assert any(t.name.startswith("tlp:") for t in event.tags)
    store.close()


def test_misp_attributes_are_typed_only_when_received_in_clear(
    tmp_path: Path, deliver: Deliver
) -> None:
    clear = _feed_of(tmp_path / "ipr", deliver, "ipr-center")
    email = [a for e in clear for a in e.attributes if a.value == "x@kicks.example"]
    assert [a.type for a in email] == ["email-src"]
    hashed = _feed_of(tmp_path / "pb", deliver, "platform-b")
    text = json.dumps([e.to_dict() for e in hashed], default=str)
    assert "x@kicks.example" not in text
    tokens = [a for e in hashed for a in e.attributes if a.comment.startswith("seller.email")]
    assert tokens
    assert all(a.type == "text" and not a.to_ids for a in tokens)


def _feed_of(folder: Path, deliver: Deliver, recipient: str) -> list[Any]:
    folder.mkdir()
    store = every_event_type(folder, deliver, recipient)
    export_misp(store, folder / "misp", exported_by=recipient)
    store.close()
    return list(_feed(folder / "misp").values())


def test_two_members_records_with_one_id_stay_two_misp_events(
    tmp_path: Path, deliver: Deliver
) -> None:
    """A rival reusing a member's indicator id neither overwrites its event nor borrows
    its creator."""
    genuine = indicator("platform-a", 1)
    rival = indicator("platform-b", 2, indicator_id=genuine.to_avro()["indicator_id"], tlp="GREEN")
    store = FeedStore(tmp_path / "s.sqlite")
    store.add([deliver(genuine, "ipr-center"), deliver(rival, "ipr-center")])
    events = _feed_of_store(store, tmp_path / "misp")
    assert len(events) == 2
    ident = str(genuine.to_avro()["indicator_id"])
    assert events[event_uuid("platform-a", ident)].Orgc.name == "platform-a"
    assert events[event_uuid("platform-b", ident)].Orgc.name == "platform-b"
    assert organisation("platform-a")["uuid"] != organisation("platform-b")["uuid"]
    store.close()


def _feed_of_store(store: FeedStore, folder: Path) -> dict[str, Any]:
    export_misp(store, folder, exported_by="ipr-center")
    return _feed(folder)
