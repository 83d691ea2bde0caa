"""Member SDKs and CLIs against a real Kafka and the real router: publish, route, read."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from broker.localkafka import LocalCluster
from broker.policy.engine import PolicySet
from broker.provision import Consortium
from consumers.feed_reader import FeedReader, FeedReaderConfig
from consumers.store import FeedStore
from demo.consortium import expected_deliveries
from policies.demo_keys import demo_encryption_key, demo_signing_key
from producers.publisher import Publisher, PublisherConfig
from tests.feed_stores import free_port
from tests.integration.routers import RouterProcess, TopicReader, publish
from tests.members import CODEC, indicator, mixed_stream, retraction

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def routed(
    consortium: Consortium, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Consortium]:
    router = RouterProcess(consortium.router, tmp_path_factory.mktemp("router"))
    router.start().wait_ready()
    yield consortium
    assert router.stop() == 0


def _dead_letter_reasons(
    consortium: Consortium, keys: set[bytes], limit_s: float = 60
) -> dict[bytes, str]:
    """The dead-letter reason of each record key in ``keys``, as the router wrote them."""
    reader = TopicReader(consortium.admin, ["action.dlq"])
    found: dict[bytes, str] = {}
    deadline = time.monotonic() + limit_s
    try:
        while set(found) != keys and time.monotonic() < deadline:
            for record in reader.poll():
                if record.key in keys:
                    found[record.key] = dict(record.headers)["action.dlq.reason"].decode()
    finally:
        reader.close()
    return found


def _publisher(consortium: Consortium, member: str) -> Publisher:
    """A member's publisher, connected as the member's own principal."""
    kafka = consortium.member(member)
    return Publisher(
        PublisherConfig(
            kafka.bootstrap,
            member,
            demo_signing_key(member),
            f"{member}-sig-2026",
            client=kafka.security(),
        )
    )


def _reader(consortium: Consortium, member: str, group: str) -> FeedReader:
    kafka = consortium.member(member)
    return FeedReader(
        FeedReaderConfig(
            kafka.bootstrap,
            member,
            demo_encryption_key(member),
            group_id=group,
            client=kafka.security(),
        )
    )


def test_publisher_to_feed_reader_round_trip_with_decryption_and_resume(
    routed: Consortium,
) -> None:
    group = f"platform-a.test-{uuid.uuid4().hex[:8]}"  # members own the groups <id>.*
    first = indicator("payments-x", 31, purpose="FRAUD_PREVENTION", confidence=95)
    with _publisher(routed, "payments-x") as publisher:
        publisher.publish(first)
    with _reader(routed, "platform-a", group) as reader:
        mine = [
            d
            for d in reader.deliveries(idle_timeout_s=15)
            if d.record_id == str(first.to_avro()["indicator_id"])
        ]
        reader.commit()
    (delivery,) = mine
    assert delivery.record["seller"]["payment_accounts"] == ["acct_000031"], "decrypted"
    assert delivery.record["seller"]["email"].startswith("mt1.k1."), "hashed by the MOU"
    assert delivery.source == "payments-x"
    assert not delivery.undecryptable
    # Provenance survived the redaction: payments-x's own signature covers every field
    # platform-a got in clear, and its proof names the fields the MOU changed.
    assert delivery.source_verified
    # payments-x's MOU: e-mail hashed, payment accounts encrypted, other optional fields
    # dropped (default_fields: drop) except the kept store domain.
    assert {"seller.email", "seller.payment_accounts", "seller.account_id"} <= set(
        delivery.transformed_fields
    )
    assert "seller.store_domain" not in delivery.transformed_fields
    assert "confidence" not in delivery.transformed_fields
    second = retraction(first)
    with _publisher(routed, "payments-x") as publisher:
        publisher.publish(second)
    with _reader(routed, "platform-a", group) as reader:  # a restart of the same reader
        resumed = list(reader.deliveries(idle_timeout_s=15))
        reader.commit()
    ids = [d.record_id for d in resumed]
    assert str(second.to_avro()["retraction_id"]) in ids
    assert str(first.to_avro()["indicator_id"]) not in ids, "resumed after the committed one"


def test_publish_cli_then_feed_cli_sync_sellers_and_export(
    routed: Consortium, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    # A phone of this run's own: the test factories' sellers share +8613800138000, and
    # records other tests routed earlier in the session would join this seller by it.
    phone = f"+86138{int(run, 16) % 10**8:08d}"
    rows = [
        "seller.account_id,seller.email,seller.phone,seller.country,product_categories,"
        "confidence,tlp"
    ]
    rows += [f"R{run}-{i},s{i}-{run}@shop.example,{phone},CN,FOOTWEAR,90,AMBER" for i in range(3)]
    rows.append("bad-row-only")
    csv_file = tmp_path / "alerts.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    publish_env = {**os.environ, **routed.member("platform-a").environment()}
    publish_env["ACTION_JOURNAL_FILE"] = str(tmp_path / "platform-a.published-ids")
    publish = subprocess.run(
        [
            str(BIN / "action-publish"),
            "--member",
            "platform-a",
            "--demo-keys",
            "indicators",
            str(csv_file),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=publish_env,
    )
    assert publish.returncode == 4, publish.stderr
    assert json.loads(publish.stdout)[0]["published"] == 3
    rejects = (tmp_path / "alerts.csv.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1
    # Run again: nothing is published twice. The whole file is skipped; then, as if the
    # first run had been interrupted before two acknowledgements were recorded, those two
    # rows go out again under the ids they had, and the router refuses them.
    again = subprocess.run(
        publish.args, capture_output=True, text=True, check=False, timeout=120, env=publish_env
    )
    assert json.loads(again.stdout)[0]["published"] == 0, again.stderr
    assert json.loads(again.stdout)[0]["skipped"] == 3
    marker = tmp_path / "alerts.csv.published.jsonl"
    first_line, *resent = marker.read_text().splitlines()
    marker.write_text(first_line + "\n")
    resumed = subprocess.run(
        publish.args, capture_output=True, text=True, check=False, timeout=120, env=publish_env
    )
    assert (
        json.loads(resumed.stdout)[0]["published"],
        json.loads(resumed.stdout)[0]["skipped"],
    ) == (2, 1), resumed.stderr
    resent_ids = {json.loads(line)["id"].encode() for line in resent}
    refused = _dead_letter_reasons(routed, resent_ids)
    assert refused == dict.fromkeys(resent_ids, "record.id_reused")
    with _publisher(routed, "payments-x") as publisher:  # the same seller, from a processor
        publisher.publish(
            indicator(
                "payments-x",
                1,
                purpose="FRAUD_PREVENTION",
                seller={"email": f"s1-{run}@shop.example"},
            )
        )
    store = tmp_path / "ipr.sqlite"
    feed = [
        str(BIN / "action-feed"),
        "--member",
        "ipr-center",
        "--demo-keys",
        "--store",
        str(store),
        "--group",
        f"ipr-center.t{run}",
    ]
    as_ipr_center = {**os.environ, **routed.member("ipr-center").environment()}
    sync = subprocess.run(
        [*feed, "sync", "--idle", "8", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        env=as_ipr_center,
    )
    assert sync.returncode == 0, sync.stderr
    assert json.loads(sync.stdout)[0]["added"] >= 4
    with sqlite3.connect(store) as db:
        copies = db.execute(
            "SELECT count(*) FROM identifiers WHERE kind = 'seller.account_id' AND value LIKE ?",
            (f"R{run}-%",),
        ).fetchone()[0]
    assert copies == 3, "each row once, after three runs of the file"
    sellers = subprocess.run(
        [*feed, "sellers", "--min-sources", "2", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    correlated = [s for s in json.loads(sellers.stdout) if f"R{run}" in s["identifiers"]]
    assert correlated, sellers.stdout
    assert correlated[0]["members"] == "payments-x, platform-a"
    out = tmp_path / "bundle.json"
    export = subprocess.run(
        [*feed, "export", "--format", "stix", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert export.returncode == 0, export.stderr
    from stix2validator import ValidationOptions, validate_file

    assert validate_file(str(out), ValidationOptions(version="2.1")).is_valid


def _feed_identities(consortium: Consortium, member: str) -> set[tuple[str, str]]:
    """(source as delivered, record id) of every record in the member's feed now."""
    reader = TopicReader(consortium.admin, [f"action.feed.{member}"])
    records = reader.read_until_quiet(quiet_s=3)
    reader.close()
    out = set()
    for record in records:
        decoded = CODEC.decode(record.value).record
        out.add((str(decoded["source_member"]), record.key.decode()))
    return out


def _stream_to_ipr_center(consortium: Consortium, policies: PolicySet, count: int) -> set[str]:
    """Publish ``count`` indicators and wait for those the MOUs give the IPR Center."""
    events = mixed_stream(count)
    expected = {rid for who, rid in expected_deliveries(policies, events) if who == "ipr-center"}
    publish(consortium, events)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if expected <= {rid for _, rid in _feed_identities(consortium, "ipr-center")}:
            return expected
        time.sleep(1)
    raise AssertionError("the stream did not reach the IPR Center's feed")


def test_commit_covers_exactly_what_was_yielded_not_the_fetched_batch(
    routed: Consortium, policies: PolicySet
) -> None:
    """After poll(), the consumer's position is past the whole fetched batch. A reader
    that stops after 7 deliveries and commits must resume at the 8th: together the two
    readers see the whole feed, with no gap and nothing twice."""
    _stream_to_ipr_center(routed, policies, 60)
    everything = _feed_identities(routed, "ipr-center")
    group = f"ipr-center.partial-{uuid.uuid4().hex[:8]}"
    with _reader(routed, "ipr-center", group) as reader:
        first = [(d.source, d.record_id) for d in reader.deliveries(max_records=7)]
        reader.commit()
    with _reader(routed, "ipr-center", group) as reader:
        rest = [(d.source, d.record_id) for d in reader.deliveries(idle_timeout_s=5)]
    assert len(first) == 7
    assert not set(first) & set(rest), "nothing twice"
    assert set(first) | set(rest) >= everything, "no gap after the 7th"


def test_sync_killed_mid_feed_then_restarted_stores_every_record_once(
    routed: Consortium, tmp_path: Path, policies: PolicySet
) -> None:
    """``action-feed sync`` SIGKILLed once its store holds some of the feed; a second
    sync resumes from its committed offsets. The store then holds every record of the
    feed exactly once."""
    _stream_to_ipr_center(routed, policies, 1_500)
    store = tmp_path / "killed.sqlite"
    command = [
        str(BIN / "action-feed"),
        "--member",
        "ipr-center",
        "--demo-keys",
        "--store",
        str(store),
        "--group",
        f"ipr-center.k{uuid.uuid4().hex[:6]}",
        "sync",
        "--idle",
        "8",
    ]
    env = {**os.environ, **routed.member("ipr-center").environment()}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    stored = 0
    while stored == 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(store) as db:
            stored = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    first.kill()
    first.wait(10)
    everything = _feed_identities(routed, "ipr-center")
    assert 0 < stored < len(everything), "killed part-way through the feed"
    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stderr
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT source, record_id FROM deliveries").fetchall()
    assert len(rows) == len(set(rows)), "each record once"
    missing = everything - {tuple(row) for row in rows}
    assert not missing, f"{len(missing)} records missing; second sync said: {second.stderr[-2000:]}"


def _member_env(consortium: Consortium, member: str) -> dict[str, str]:
    """The environment of a command run as ``member``'s Kafka principal."""
    return {**os.environ, **consortium.member(member).environment()}


def _feed_command(member: str, store: Path, group: str | None, *args: str) -> list[str]:
    """``action-feed`` as ``member`` (demo keys) on ``store``, in ``group`` when given."""
    command = [str(BIN / "action-feed"), "--member", member, "--demo-keys", "--store", str(store)]
    return command + (["--group", group] if group else []) + list(args)


def _run_feed(
    env: dict[str, str], member: str, store: Path, group: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _feed_command(member, store, group, *args),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def test_the_workspace_follows_the_feed(routed: Consortium, tmp_path: Path) -> None:
    """``action-feed serve --follow``: a record published after the workspace started is
    found by its search moments later."""
    run = uuid.uuid4().hex[:8]
    port = free_port()
    command = _feed_command(
        "ipr-center",
        tmp_path / "ipr.sqlite",
        f"ipr-center.follow{run}",
        *("serve", "--follow", "--port", str(port)),
    )
    env = _member_env(routed, "ipr-center")
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with _publisher(routed, "platform-a") as publisher:
            publisher.publish(indicator("platform-a", 1, seller={"account_id": f"FOLLOW-{run}"}))
        url = f"http://127.0.0.1:{port}/search?q=FOLLOW-{run}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the published record never reached the page"
            try:
                if 'class="dossier"' in requests.get(url, timeout=5).text:
                    break
            except requests.ConnectionError:
                pass  # still starting
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(20)


def test_the_ipr_center_syncs_the_audit_trail_and_sees_each_deliverys_rules(
    routed: Consortium, tmp_path: Path
) -> None:
    """``action-feed audit-sync``: the audit entries of the IPR Center's deliveries are in
    its store, by the decision ids its feed carries; a platform may not read them."""
    run = uuid.uuid4().hex[:8]
    with _publisher(routed, "platform-a") as publisher:
        publisher.publish(indicator("platform-a", 1, seller={"account_id": f"AUDIT-{run}"}))
    store_path = tmp_path / "ipr.sqlite"

    def feed(member: str, *command: str) -> subprocess.CompletedProcess[str]:
        env = _member_env(routed, member)
        return _run_feed(env, member, store_path, f"{member}.audit{run}", *command)

    synced = feed("ipr-center", "sync", "--idle", "5")
    assert synced.returncode == 0, synced.stderr
    audited = feed("ipr-center", "audit-sync", "--idle", "5", "-o", "json")
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)[0]["added"] > 0
    store = FeedStore(store_path)
    (decision_id,) = store.db.execute(
        "SELECT d.decision_id FROM deliveries d JOIN identifiers i "
        "ON i.source = d.source AND i.indicator_id = d.record_id WHERE i.value = ?",
        (f"AUDIT-{run}",),
    ).fetchone()
    entry = store.audit_entry(decision_id)
    store.close()
    assert entry is not None
    assert entry.rule_ids == ("pa.to-government", "ipr.accepts-all")
    assert entry.fields["seller.account_id"] == "keep"
    refused = feed("platform-b", "audit-sync", "--idle", "2")
    assert refused.returncode != 0
    assert "platform-b may not read the audit trail" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_wrong_password_is_told_apart_from_an_unreachable_kafka(
    routed: Consortium, tmp_path: Path
) -> None:
    """Reading ipr-center's feed with platform-b's password: Kafka refuses the login, and
    the user is told so (exit 77), not that Kafka is unreachable."""
    env = _member_env(routed, "ipr-center")
    env["ACTION_KAFKA_SASL_PASSWORD"] = routed.member("platform-b").password or "x"
    done = _run_feed(env, "ipr-center", tmp_path / "s.sqlite", None, "sync", "--idle", "2")
    assert done.returncode == 77, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "refused the login of 'ipr-center': wrong user or password" in errors[0]
    assert "Traceback" not in done.stderr


def test_a_group_not_the_members_own_is_one_clear_error(routed: Consortium, tmp_path: Path) -> None:
    """``action-feed tail --group other.tail``: the ACLs give a member only groups named
    ``<member>.``; it used to end in a GroupAuthorizationFailedError traceback."""
    env = _member_env(routed, "ipr-center")
    done = _run_feed(env, "ipr-center", tmp_path / "s.sqlite", "other.tail", "tail", "--idle", "2")
    assert done.returncode == 77, done.stderr
    assert "error: ipr-center may not use the consumer group 'other.tail'" in done.stderr
    assert "hint: name your groups ipr-center.<anything>" in done.stderr
    assert "Traceback" not in done.stderr


def test_commands_reach_a_local_cluster_by_name_as_admin_or_as_the_member(
    routed: Consortium, local_kafka: LocalCluster | None, tmp_path: Path
) -> None:
    """With only ``action-broker kafka up --name lab`` to go by (no address, no password
    exported), the operator's commands connect as the cluster's admin and a member's as
    that member; an indicator published so is in the member's journal, and so can be
    retracted, and an id that is not is refused before it is sent."""
    if local_kafka is None:
        pytest.skip("ACTION_KAFKA_BOOTSTRAP names an external Kafka: no local cluster to name")
    cache = tmp_path / "cache"
    (cache / "clusters").mkdir(parents=True)
    (cache / "clusters" / "lab").symlink_to(local_kafka.data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTION_")}
    env |= {
        "ACTION_CACHE_DIR": str(cache),
        "ACTION_CREDENTIALS_DIR": str(routed.credentials_dir),
        "ACTION_JOURNAL_FILE": str(tmp_path / "platform-a.published-ids"),
    }

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
            env=env,
        )

    provision = run("action-broker", "provision", "--name", "lab", "--dry-run", "-o", "json")
    assert provision.returncode == 0, provision.stderr
    assert {row["action"] for row in json.loads(provision.stdout)} == {"exists"}

    alerts = tmp_path / "alerts.csv"
    template = run("action-publish", "template", "indicators", "--out", str(alerts))
    assert template.returncode == 0, template.stderr
    alerts.write_text(alerts.read_text().replace("seller-4821", f"seller-{uuid.uuid4().hex}"))
    ids = tmp_path / "ids.txt"
    as_member = ("action-publish", "--member", "platform-a", "--demo-keys", "--name", "lab")
    published = run(*as_member, "indicators", str(alerts), "--ids-out", str(ids), "-o", "json")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)[0]["published"] == 1
    (indicator_id,) = ids.read_text().split()
    retract = ("retract", "--reason", "MISTAKE", "-o", "json")
    retracted = run(*as_member, *retract, indicator_id)
    assert retracted.returncode == 0, retracted.stderr
    assert json.loads(retracted.stdout)[0]["published"] is True
    unknown = run(*as_member, *retract, str(uuid.uuid4()))
    assert unknown.returncode == 65, unknown.stderr
    assert "has not published indicator" in unknown.stderr

    store = tmp_path / "ipr.sqlite"
    feed = ("action-feed", "--member", "ipr-center", "--demo-keys", "--name", "lab")
    synced = run(
        *feed,
        "--store",
        str(store),
        "--group",
        f"ipr-center.lab{uuid.uuid4().hex[:8]}",
        "sync",
        "--idle",
        "8",
    )
    assert synced.returncode == 0, synced.stderr
    retraction_id = json.loads(retracted.stdout)[0]["id"]
    with sqlite3.connect(store) as db:
        kinds = db.execute(
            "SELECT record_id, event_type FROM deliveries WHERE record_id IN (?, ?)",
            (indicator_id, retraction_id),
        ).fetchall()
    assert dict(kinds) == {indicator_id: "SellerIndicator", retraction_id: "Retraction"}
    tailed = run(
        *feed,
        *("--store", str(tmp_path / "tail.sqlite"), "--group", f"ipr-center.t{uuid.uuid4().hex}"),
        *("tail", "--idle", "3", "-o", "json"),
    )
    assert tailed.returncode == 0, tailed.stderr
    rows = {row["record_id"]: row for row in map(json.loads, tailed.stdout.splitlines())}
    assert rows[retraction_id]["gist"] == f"retracts {indicator_id} (MISTAKE)"
    assert rows[indicator_id]["time"].endswith("Z"), "ISO 8601, UTC"
