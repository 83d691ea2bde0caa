"""TAXII 2.1 over a member's store, read with taxii2-client as a real client: discovery,
the member's API root and collection, paging with no duplicate and no gap while records
arrive, filters, versions (a retraction is a revoked version), media type and login."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from consumers.stix_collection import StixCollection
from consumers.store import FeedStore
from consumers.taxii_server import TAXII_MEDIA_TYPE, TaxiiServer, collection_id
from tests.feed_stores import Deliver, ServedApp, every_event_type, free_port
from tests.members import indicator

SECRET = "correct horse battery staple"


@pytest.fixture
def served(tmp_path: Path, deliver: Deliver) -> Iterator[tuple[ServedApp, Path]]:
    store = every_event_type(tmp_path, deliver, "ipr-center")
    store.close()
    taxii = TaxiiServer(tmp_path / "ipr-center.sqlite", "ipr-center", secret=SECRET)
    running = ServedApp(taxii.app(), path="/taxii2/")
    try:
        yield running, tmp_path / "ipr-center.sqlite"
    finally:
        running.stop()
        taxii.close()


def _collection(running: ServedApp) -> Collection:
    server = Server(running.url, user="ipr-center", password=SECRET)
    (root,) = server.api_roots
    (collection,) = root.collections
    return collection


def test_discovery_api_root_and_collection(served: tuple[ServedApp, Path]) -> None:
    running, _ = served
    server = Server(running.url, user="ipr-center", password=SECRET)
    assert server.title
    (root,) = server.api_roots
    assert isinstance(root, ApiRoot)
    assert root.url.endswith("/taxii2/ipr-center/")
    assert TAXII_MEDIA_TYPE in root.versions
    (collection,) = root.collections
    assert collection.id == collection_id("ipr-center")
    assert collection.can_read
    assert not collection.can_write


def test_objects_read_page_by_page_with_no_duplicate_and_no_gap(
    served: tuple[ServedApp, Path], deliver: Deliver
) -> None:
    """Pages of 7 while more records arrive between pages: every object version exactly
    once, in the order added."""
    running, store_path = served
    collection = _collection(running)
    seen: list[tuple[str, str]] = []
    writer = FeedStore(store_path)
    number = 100
    for envelope in as_pages(collection.get_objects, per_request=7, version="all"):
        seen += [(o["id"], o.get("modified", "")) for o in envelope.get("objects", [])]
        if number < 103:  # a record arrives while the reader pages
            writer.add([deliver(indicator("platform-a", number), "ipr-center")])
            number += 1
    writer.close()
    assert len(seen) == len(set(seen)), "no object version twice"
    everything = StixCollection(FeedStore(store_path))
    everything.refresh()
    stored = everything.page(limit=1000, versions=["all"]).objects
    assert [(o.id, o.object.get("modified", "")) for o in stored] == seen, "no gap"
    assert len(seen) > 40


def test_manifest_filters_and_added_after(served: tuple[ServedApp, Path]) -> None:
    running, _ = served
    collection = _collection(running)
    manifest = collection.get_manifest()
    entries = manifest["objects"]
    assert all(e["media_type"] == "application/stix+json;version=2.1" for e in entries)
    indicators = collection.get_objects(type="indicator")["objects"]
    assert {o["type"] for o in indicators} == {"indicator"}
    first = indicators[0]["id"]
    (one,) = collection.get_objects(id=first)["objects"]
    assert one["id"] == first
    newest = max(e["date_added"] for e in entries)
    assert "objects" not in collection.get_objects(added_after=newest)


def test_a_retraction_is_a_revoked_version(served: tuple[ServedApp, Path]) -> None:
    running, _ = served
    collection = _collection(running)
    (revoked,) = [
        o for o in collection.get_objects(type="indicator")["objects"] if o.get("revoked")
    ]
    versions = collection.object_versions(revoked["id"])["versions"]
    assert len(versions) == 2
    assert versions[-1] == revoked["modified"]
    (first,) = collection.get_object(revoked["id"], version="first")["objects"]
    assert not first.get("revoked")
    everything = collection.get_object(revoked["id"], version="all")["objects"]
    assert len(everything) == 2


def test_login_is_required_and_checked(served: tuple[ServedApp, Path]) -> None:
    running, _ = served
    for user, password in ((None, None), ("ipr-center", "wrong"), ("platform-a", SECRET)):
        with pytest.raises(requests.HTTPError) as refused:
            Server(running.url, user=user, password=password).title  # noqa: B018 - fetches
        response = refused.value.response
        assert response is not None
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
    headers = {"Authorization": f"Bearer {SECRET}", "Accept": TAXII_MEDIA_TYPE}
    answer = requests.get(running.url, headers=headers, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == TAXII_MEDIA_TYPE


def test_media_type_and_bad_parameters(served: tuple[ServedApp, Path]) -> None:
    running, _ = served
    auth = ("ipr-center", SECRET)
    base = f"{running.url}ipr-center/collections/{collection_id('ipr-center')}/objects/"

    def get(url: str, **headers: str) -> Any:
        return requests.get(url, auth=auth, headers=headers, timeout=10)

    assert get(base, Accept="application/taxii+json;version=2.0").status_code == 406
    assert get(base + "?next=not-a-cursor", Accept=TAXII_MEDIA_TYPE).status_code == 400
    assert get(base + "?added_after=yesterday", Accept=TAXII_MEDIA_TYPE).status_code == 400
    many = ",".join(f"indicator--{n}" for n in range(101))
    assert get(base + f"?match[id]={many}", Accept=TAXII_MEDIA_TYPE).status_code == 400
    missing = get(base + "indicator--00000000-0000-4000-8000-000000000000/")
    assert missing.status_code == 404
    assert missing.json()["title"].startswith("no object")


# --- action-feed serve ------------------------------------------------------------------

FEED_CLI = Path(sys.executable).parent / "action-feed"


def _serve(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    command = [str(FEED_CLI), "--member", "ipr-center", "--store", str(store), "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_serve_refuses_what_it_cannot_serve_safely(tmp_path: Path, deliver: Deliver) -> None:
    missing = _serve(store=tmp_path / "nosuch.sqlite")
    assert missing.returncode != 0
    assert "error: no store at" in missing.stderr
    assert "Traceback" not in missing.stderr
    every_event_type(tmp_path, deliver, "ipr-center").close()
    store = tmp_path / "ipr-center.sqlite"
    open_to_all = _serve("--host", "0.0.0.0", store=store)
    assert open_to_all.returncode != 0
    assert "needs a login" in open_to_all.stderr
    password = tmp_path / "password"
    password.write_text(SECRET)
    password.chmod(0o644)
    readable = _serve("--password-file", str(password), store=store)
    assert readable.returncode != 0
    assert "chmod 600" in readable.stderr


def test_serve_answers_taxii_with_the_login(tmp_path: Path, deliver: Deliver) -> None:
    every_event_type(tmp_path, deliver, "ipr-center").close()
    password = tmp_path / "password"
    password.write_text(SECRET + "\n")
    password.chmod(0o600)
    port = free_port()
    command = [
        str(FEED_CLI),
        "--member",
        "ipr-center",
        "--store",
        str(tmp_path / "ipr-center.sqlite"),
        "serve",
        "--port",
        str(port),
        "--password-file",
        str(password),
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/taxii2/"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(url, auth=("ipr-center", SECRET), timeout=5)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "action-feed serve did not answer"
                time.sleep(0.2)
        assert answer.status_code == 200
        assert answer.json()["api_roots"] == [f"http://127.0.0.1:{port}/taxii2/ipr-center/"]
        assert requests.get(url, timeout=5).status_code == 401
    finally:
        server.terminate()
        server.wait(10)
