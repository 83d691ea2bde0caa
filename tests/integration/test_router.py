"""The router against a real Kafka: feeds equal the engine's decisions, exactly once under
SIGKILL and aborted transactions, dead letters, retractions, reloads, metrics."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit import verify_chains
from broker.events import Event
from broker.feed_writer import default_partition
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.policy.model import Treatment
from broker.provision import Consortium
from broker.signing import sign_record
from demo.consortium import expected_deliveries
from policies import POLICY_DIR
from policies.demo_keys import demo_signing_key
from tests.integration.routers import (
    ACTION_BROKER,
    FEEDS,
    FeedWatcher,
    RouterProcess,
    TopicReader,
    assert_exactly_once,
    feed_key,
    metric_value,
    publish,
    send_raw,
    wait_for,
)
from tests.members import CODEC, indicator, mixed_stream, retraction, signed, signing_kid


@pytest.fixture
def router(consortium: Consortium, tmp_path: Path) -> Iterator[RouterProcess]:
    process = RouterProcess(consortium.router, tmp_path).start().wait_ready()
    yield process
    process.stop()


def _without_ciphertext(record: Any) -> Any:
    text = json.dumps(record, default=str, sort_keys=True)
    return json.loads(re.sub(r'"hpke1\.([^".]+)\.[^"]+"', r'"hpke1.\1"', text))


def test_feeds_hold_exactly_what_the_engine_decides(
    consortium: Consortium, router: RouterProcess, policies: PolicySet
) -> None:
    events = mixed_stream(300)
    expected = expected_deliveries(policies, events)
    assert len({recipient for recipient, _ in expected}) >= 6, "the stream fans out widely"
    ids = {str(e.to_avro()["indicator_id"]) for e in events}
    publish(consortium, events)
    reader = TopicReader(consortium.admin, FEEDS)
    seen: Counter[tuple[str, str]] = Counter()
    records = wait_for(reader, set(expected), seen)
    records += [r for r in reader.read_until_quiet(quiet_s=2) if feed_key(r)[1] in ids]
    partitions = {topic: len(reader.consumer.partitions_for_topic(topic) or ()) for topic in FEEDS}
    reader.close()
    got = Counter(feed_key(r) for r in records)
    assert set(got) == set(expected), "every delivery and nothing else"
    assert max(got.values()) == 1, "no duplicate"
    for record in records:
        # The router picks partitions itself (broker.feed_writer.default_partition): a record
        # must still land where the client's partitioner would put its key.
        assert record.partition == default_partition(record.key, partitions[record.topic])
        decoded = CODEC.decode(record.value).record
        want = expected[feed_key(record)]
        assert _without_ciphertext(decoded) == _without_ciphertext(want), feed_key(record)
        headers = dict(record.headers)
        assert headers["action.policy-version"] == policies.version.encode()
    # Encrypted fields open only with the recipient's key (checked in the unit tier); here:
    # payment accounts reach platforms only encrypted.
    encrypted = [
        CODEC.decode(r.value).record
        for r in records
        if r.topic == "action.feed.platform-a" and b"hpke1." in r.value
    ]
    assert encrypted
    assert all(
        a.startswith("hpke1.platform-a-enc")
        for rec in encrypted
        for a in rec["seller"]["payment_accounts"]
    )
    metrics = router.metrics()
    assert metric_value(metrics, "action_router_transactions_total", outcome="committed") >= 1
    assert (
        metric_value(
            metrics,
            "action_router_decisions_total",
            source="platform-a",
            recipient="ipr-center",
            outcome="delivered",
        )
        >= 1
    )
    assert (
        metric_value(
            metrics,
            "action_router_field_treatments_total",
            field="seller.email",
            treatment=Treatment.HASH.value,
        )
        >= 1
    )
    assert metric_value(metrics, "action_router_end_to_end_seconds_count") >= len(expected)
    assert "@shop.example" not in metrics, "never a seller identifier as a label"
    assert "acct_" not in metrics
    assert router.stop() == 0, "SIGTERM: the open transaction is finished, exit 0"


def test_bad_input_goes_to_the_dead_letter_topic_and_the_router_keeps_going(
    consortium: Consortium, router: RouterProcess
) -> None:
    run = uuid.uuid4().hex[:8].encode()
    good = indicator("platform-a", 1, tlp="GREEN")
    key, value, headers = signed(good)
    forged_owner = indicator("platform-b", 2)  # claims platform-b, sent on platform-a's topic
    _, f_value, f_headers = signed(forged_owner)
    cases = {
        b"garbage": ("action.in.platform-a", b"\x07 not avro", headers, "wire.bad_magic"),
        b"truncated": ("action.in.platform-a", value[:40], headers, "avro.truncated"),
        b"owner": ("action.in.platform-a", f_value, f_headers, "source.topic_mismatch"),
        b"badsig": (
            "action.in.platform-a",
            value.replace(b"seller1@", b"seller9@"),
            headers,
            "signature.invalid",
        ),
        b"othersig": (
            "action.in.platform-a",
            value,
            sign_record(value, demo_signing_key("platform-b"), signing_kid("platform-b")),
            "signature.wrong_signer",
        ),
        b"unsigned": ("action.in.platform-a", value, [], "signature.missing"),
        b"huge": (
            "action.in.platform-a",
            b"\x00\x00\x00\x00\x01" + b"\x00" * 1_060_000,
            [],
            "record.too_large",
        ),
        b"tombstone": ("action.in.platform-a", None, [], "record.empty"),
    }
    # Sent by platform-a under its own principal: what a member's credentials can attempt.
    platform_a = consortium.member("platform-a")
    for name, (topic, data, hdrs, _) in cases.items():
        send_raw(platform_a, topic, data, run + b"-" + name, hdrs)
    send_raw(platform_a, "action.in.platform-a", value, key, headers)  # then a good one
    dlq = TopicReader(consortium.admin, ["action.dlq"])
    letters: dict[bytes, Any] = {}
    deadline = time.monotonic() + 60
    while len(letters) < len(cases) and time.monotonic() < deadline:
        for record in dlq.poll():
            if record.key.startswith(run):
                letters[record.key.removeprefix(run + b"-")] = record
    dlq.close()
    for name, (_, data, hdrs, reason) in cases.items():
        letter = letters[name]
        got = dict(letter.headers)
        assert got["action.dlq.reason"] == reason.encode(), name
        assert letter.value == data, "original bytes kept"
        assert all(h in letter.headers for h in hdrs), "original headers kept"
        assert got["action.dlq.origin"].startswith(b"action.in.platform-a/")
    feeds = TopicReader(consortium.admin, FEEDS)
    seen: Counter[tuple[str, str]] = Counter()
    wait_for(feeds, {("ipr-center", str(good.to_avro()["indicator_id"]))}, seen, 60)
    feeds.close()
    assert seen, "the router kept going after the bad records"
    metrics = router.metrics()
    assert metric_value(metrics, "action_router_dlq_records_total", reason="record.too_large") >= 1


def test_a_retraction_reaches_exactly_the_recipients_of_the_original(
    consortium: Consortium, router: RouterProcess, policies: PolicySet
) -> None:
    original = indicator("platform-b", 5, tlp="GREEN", confidence=95)
    publish(consortium, [original, retraction(original)])
    indicator_id = str(original.to_avro()["indicator_id"])
    received = {r for (r, i) in expected_deliveries(policies, [original]) if i == indicator_id}
    reader = TopicReader(consortium.admin, FEEDS)
    retractions: dict[str, Any] = {}
    copies: Counter[str] = Counter()

    def collect(records: list[Any]) -> None:
        for record in records:
            decoded = CODEC.decode(record.value).record
            if decoded.get("retraction_id") and str(decoded["indicator_id"]) == indicator_id:
                recipient = record.topic.removeprefix("action.feed.")
                retractions[recipient] = decoded
                copies[recipient] += 1

    deadline = time.monotonic() + 60
    while set(retractions) != received and time.monotonic() < deadline:
        collect(reader.poll())
    collect(reader.read_until_quiet(quiet_s=3))
    reader.close()
    assert set(copies.values()) == {1}, "once each"
    assert set(retractions) == received == {"ipr-center", "platform-a", "platform-c"}
    assert retractions["platform-a"]["source_member"] == "anonymous-platform"
    assert retractions["ipr-center"]["source_member"] == "platform-b"


def _dead_letters(consortium: Consortium, key: bytes, count: int, limit_s: float = 60) -> list[Any]:
    """The first ``count`` dead letters with ``key``, in DLQ order."""
    dlq = TopicReader(consortium.admin, ["action.dlq"])
    found: list[Any] = []
    deadline = time.monotonic() + limit_s
    while len(found) < count and time.monotonic() < deadline:
        found += [r for r in dlq.poll() if r.key == key]
    dlq.close()
    return found


def test_a_rival_cannot_take_a_record_id_and_nothing_is_delivered_twice(
    consortium: Consortium, tmp_path: Path
) -> None:
    """platform-b learns platform-a's indicator id from its own feed, publishes a decoy
    with that id and retracts the decoy; platform-a replays its record and reuses its id;
    after a router restart it replays again. Only the original is delivered, once each."""
    router = RouterProcess(consortium.router, tmp_path).start().wait_ready()
    genuine = indicator("platform-a", 41, tlp="GREEN")
    genuine_id = str(genuine.to_avro()["indicator_id"])
    key, value, headers = signed(genuine)
    publish(consortium, [genuine])
    feeds = TopicReader(consortium.admin, FEEDS)
    seen: Counter[tuple[str, str]] = Counter()
    wait_for(feeds, {("platform-b", genuine_id)}, seen, 60)
    decoy = indicator("platform-b", 42, indicator_id=genuine_id, tlp="GREEN")
    publish(consortium, [decoy, retraction(decoy)])
    platform_a = consortium.member("platform-a")
    send_raw(platform_a, "action.in.platform-a", value, key, headers)  # a replay
    reused = indicator("platform-a", 43, indicator_id=genuine_id, tlp="GREEN", confidence=99)
    publish(consortium, [reused])
    letters = _dead_letters(consortium, key, 3)
    reasons = [dict(r.headers)["action.dlq.reason"].decode() for r in letters]
    assert reasons == ["record.id_taken", "record.replay", "record.id_reused"]
    assert router.stop() == 0
    router.start().wait_ready()
    try:
        send_raw(platform_a, "action.in.platform-a", value, key, headers)  # after a restart
        letters = _dead_letters(consortium, key, 4)
        assert dict(letters[-1].headers)["action.dlq.reason"] == b"record.replay"
        records = feeds.read_until_quiet(quiet_s=3)
    finally:
        feeds.close()
        assert router.stop() == 0
    for record in records:
        decoded = CODEC.decode(record.value).record
        if str(decoded.get("indicator_id")) == genuine_id:
            seen[feed_key(record)] += 1
            assert not decoded.get("retraction_id"), "the decoy's retraction reached no one"
    assert seen, "the original was delivered"
    assert set(seen.values()) == {1}, f"each recipient got the original once: {seen}"


def test_an_embargoed_record_arrives_when_the_embargo_ends_once_across_a_restart(
    consortium: Consortium, tmp_path: Path
) -> None:
    """platform-b shares with platforms after an embargo (one minute here). The router
    holds the record, is restarted in the middle, and delivers it to the platforms when
    the embargo ends: exactly once each; the government got it at once."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policy_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    mou = policy_dir / "mou" / "platform-b.yaml"
    mou.write_text(mou.read_text().replace("embargo_minutes: 60", "embargo_minutes: 1"))
    router = RouterProcess(consortium.router, tmp_path, policy_dir=policy_dir).start()
    router.wait_ready()
    published = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    event = indicator(
        "platform-b", 61, tlp="GREEN", confidence=95, published_at=published, observed_at=published
    )
    indicator_id = str(event.to_avro()["indicator_id"])
    feeds = TopicReader(consortium.admin, FEEDS)
    seen: Counter[tuple[str, str]] = Counter()
    try:
        publish(consortium, [event])
        wait_for(feeds, {("ipr-center", indicator_id)}, seen, 60)
        assert ("platform-a", indicator_id) not in seen, "held by the embargo"
        assert router.stop() == 0  # a restart while the record is held
        router.start().wait_ready()
        wait_for(feeds, {("platform-a", indicator_id), ("platform-c", indicator_id)}, seen, 180)
        for record in feeds.read_until_quiet(quiet_s=8):
            if feed_key(record)[1] == indicator_id:
                seen[feed_key(record)] += 1
        released = metric_value(
            router.metrics(), "action_router_embargo_released_total", outcome="delivered"
        )
    finally:
        feeds.close()
        assert router.stop() == 0
    assert seen == Counter(
        {
            ("ipr-center", indicator_id): 1,
            ("platform-a", indicator_id): 1,
            ("platform-c", indicator_id): 1,
        }
    )
    assert released >= 2
    assert "held by an embargo" in router.log()


def test_policies_reload_on_sighup_and_a_broken_folder_is_refused(
    consortium: Consortium, tmp_path: Path, policies: PolicySet
) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policy_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    router = RouterProcess(consortium.router, tmp_path, policy_dir=policy_dir).start().wait_ready()
    try:
        first = indicator("platform-a", 11)
        publish(consortium, [first])
        mou = policy_dir / "mou" / "platform-a.yaml"
        mou.write_text(mou.read_text().replace("min_confidence: 70", "min_confidence: 71"))
        new_version = load_policies(policy_dir).version
        router.signal(signal.SIGHUP)
        _wait_metric(router, "action_router_policy_reloads_total", 1, result="applied")
        second = indicator("platform-a", 12)
        publish(consortium, [second])
        mou.write_text("member: platform-a\nshares: [oops\n")
        router.signal(signal.SIGHUP)
        _wait_metric(router, "action_router_policy_reloads_total", 1, result="refused")
        third = indicator("platform-a", 13)
        publish(consortium, [third])
        versions = _audited_versions(consortium, [first, second, third])
        assert versions == [policies.version, new_version, new_version]
        assert metric_value(router.metrics(), "action_router_policy_info", version=new_version) == 1
        assert "policy reload refused" in router.log()
    finally:
        assert router.stop() == 0


def test_a_sighup_from_the_first_moment_reloads_once_and_never_kills(
    consortium: Consortium, tmp_path: Path
) -> None:
    """A SIGHUP sent as soon as the process can catch one (before its heavy imports)
    is applied once the router is up: the router lives, and one SIGHUP is one reload."""
    router = RouterProcess(consortium.router, tmp_path).start()
    try:
        deadline = time.monotonic() + 10
        while not router.catches(signal.SIGHUP):
            assert time.monotonic() < deadline, "SIGHUP is never caught"
            time.sleep(0.001)
        router.signal(signal.SIGHUP)
        router.wait_ready()
        _wait_metric(router, "action_router_policy_reloads_total", 1, result="applied")
        time.sleep(6)  # past the folder watch's next look
        text = router.metrics()
        assert metric_value(text, "action_router_policy_reloads_total", result="applied") == 1
        assert metric_value(text, "action_router_policy_reloads_total", result="refused") == 0
        assert router.process is not None
        assert router.process.poll() is None
    finally:
        assert router.stop() == 0


def _wait_metric(router: RouterProcess, name: str, at_least: float, **labels: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if metric_value(router.metrics(), name, **labels) >= at_least:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name}{labels} never reached {at_least}")


def _audited_versions(consortium: Consortium, events: list[Event]) -> list[str]:
    ids = [str(e.to_avro()["indicator_id"]) for e in events]
    versions: dict[str, str] = {}
    reader = TopicReader(consortium.admin, ["action.audit"])
    deadline = time.monotonic() + 60
    while len(versions) < len(ids) and time.monotonic() < deadline:
        for record in reader.poll():
            entry = json.loads(record.value)
            if entry["record_id"] in ids:
                versions[entry["record_id"]] = entry["policy_version"]
    reader.close()
    return [versions.get(i, "?") for i in ids]


def test_audit_verify_names_a_removed_entry(
    consortium: Consortium, router: RouterProcess, new_topic: Any, policies: PolicySet
) -> None:
    from kafka import KafkaProducer

    events = mixed_stream(30)
    publish(consortium, events)
    reader = TopicReader(consortium.admin, FEEDS)
    wait_for(reader, set(expected_deliveries(policies, events)), Counter(), 120)
    reader.close()
    verify = [ACTION_BROKER, "audit", "verify", "-o", "json"]
    # The IPR Center's analysts may verify the trail: its ACLs let it read the audit topic
    # and the router's committed chain heads. They verify while the router is at work:
    # entries it commits during the read are no loss (the heads are read first).
    as_ipr_center = {**os.environ, **consortium.member("ipr-center").environment()}
    verifying = threading.Event()

    def keep_publishing() -> None:
        while not verifying.is_set():
            publish(consortium, mixed_stream(10))
            time.sleep(0.05)

    more = threading.Thread(target=keep_publishing, daemon=True)
    more.start()
    try:
        intact = subprocess.run(
            verify, capture_output=True, text=True, check=False, timeout=600, env=as_ipr_center
        )
    finally:
        verifying.set()
        more.join(120)
    assert intact.returncode == 0, intact.stderr
    rows = json.loads(intact.stdout)
    assert rows
    assert {r["status"] for r in rows} == {"intact"}
    assert router.stop() == 0
    # A copy of one chain with an entry in its middle left out; no committed heads are
    # compared (an unknown group), so only the gap can be found.
    reader = TopicReader(consortium.admin, ["action.audit"])
    records = reader.read_until_quiet(quiet_s=3, limit_s=300)
    reader.close()
    chain_of = [json.loads(r.value)["chain"] for r in records]
    shortest = min(Counter(chain_of).items(), key=lambda item: (item[1] < 5, item[1]))[0]
    chain = [r for r, c in zip(records, chain_of, strict=True) if c == shortest]
    victim = len(chain) // 2
    copy = new_topic(partitions=1)
    producer = KafkaProducer(**consortium.admin.client_config())
    for index, record in enumerate(chain):
        if index != victim:
            producer.send(copy, value=record.value, key=record.key)
    producer.flush()
    producer.close()
    as_admin = {**os.environ, **consortium.admin.environment()}
    tampered = subprocess.run(
        [*verify, "--topic", copy, "--group", f"none-{uuid.uuid4().hex}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=as_admin,
    )
    assert tampered.returncode == 4, tampered.stderr
    (bad,) = json.loads(tampered.stdout)
    seq = json.loads(chain[victim].value)["seq"]
    assert (bad["chain"], bad["status"]) == (shortest, "removed")
    assert f"entry {seq} missing before entry {seq + 1}" in bad["detail"]


@pytest.mark.slow
def test_exactly_once_when_the_router_is_killed_repeatedly(
    consortium: Consortium, tmp_path: Path, policies: PolicySet
) -> None:
    events = mixed_stream(50_000)
    watcher = FeedWatcher(consortium, policies, events)
    router = RouterProcess(consortium.router, tmp_path, router_batch_records=500).start()
    publisher = threading.Thread(target=publish, args=(consortium, events), daemon=True)
    publisher.start()
    kills = 0
    try:
        for threshold in (0.2, 0.45, 0.7):
            watcher.await_share(threshold)
            time.sleep(0.05 * kills)  # land the kills at different points of a transaction
            router.kill()
            kills += 1
            router.start()
        publisher.join(120)
        assert_exactly_once(consortium, watcher)
    finally:
        router.stop()
    assert kills == 3
    assert router.log().count("--- start") == 4
    _assert_audit_chains_intact(consortium)


def test_exactly_once_with_aborted_transactions_and_two_instances(
    consortium: Consortium, tmp_path: Path, policies: PolicySet
) -> None:
    events = mixed_stream(4_000)
    watcher = FeedWatcher(consortium, policies, events)
    # Instance 1 routes in its own process (no workers): both paths under the same faults.
    routers = [
        RouterProcess(
            consortium.router,
            tmp_path,
            instance=str(i),
            router_abort_ratio=0.33,
            router_batch_records=100,
            args=["--workers", str(1 - i)],
        ).start()
        for i in (0, 1)
    ]
    try:
        publish(consortium, events)
        assert_exactly_once(consortium, watcher)
        texts = [r.metrics() for r in routers]
        aborted = sum(
            metric_value(t, "action_router_transactions_total", outcome="aborted") for t in texts
        )
        committed = sum(
            metric_value(t, "action_router_transactions_total", outcome="committed") for t in texts
        )
        assert aborted >= 0.2 * (aborted + committed), (aborted, committed)
        owned = [metric_value(t, "action_router_assigned_partitions") for t in texts]
        assert owned[0] == owned[1] > 0, f"the instances split the partitions evenly: {owned}"
        assert "routing workers [" in routers[0].log()
        assert "routing workers" not in routers[1].log(), "--workers 0 routes in-process"
    finally:
        for router in routers:
            assert router.stop() == 0
    _assert_audit_chains_intact(consortium)


def test_a_killed_routing_worker_costs_an_aborted_transaction_and_nothing_else(
    consortium: Consortium, tmp_path: Path, policies: PolicySet
) -> None:
    events = mixed_stream(3_000)
    watcher = FeedWatcher(consortium, policies, events)
    router = (
        RouterProcess(consortium.router, tmp_path, router_batch_records=100, router_workers=2)
        .start()
        .wait_ready()
    )
    publisher = threading.Thread(target=publish, args=(consortium, events), daemon=True)
    publisher.start()
    replacements: list[int] = []
    try:
        watcher.await_share(0.2)
        victims = router.workers()
        assert len(victims) == 2, router.log()[-2000:]
        os.kill(victims[0], signal.SIGKILL)
        publisher.join(120)
        assert_exactly_once(consortium, watcher)
        assert "exited (exit code -9)); aborted, restarting them" in router.log()
        assert metric_value(router.metrics(), "action_router_worker_restarts_total") >= 1
        replacements = router.workers()
        assert len(replacements) == 2
        assert not set(replacements) & set(victims), "the whole pool was replaced"
        assert not router.exited()
    finally:
        assert router.stop() == 0
    left = [pid for pid in replacements if Path(f"/proc/{pid}").exists()]
    assert not left, f"routing workers {left} outlived the router"
    _assert_audit_chains_intact(consortium)


def test_a_record_that_kills_a_routing_worker_each_time_is_dead_lettered_and_routing_goes_on(
    consortium: Consortium, tmp_path: Path, policies: PolicySet
) -> None:
    """A record that crashes the worker routing it (the fault hook SIGKILLs the worker, as a
    segfault in a C library would) is retried alone once, then dead-lettered as
    router.worker_lost; every other record is delivered exactly once."""
    events = mixed_stream(400)
    poison = events[200]
    poison_key, _, _ = signed(poison)
    others = [e for e in events if e is not poison]
    watcher = FeedWatcher(consortium, policies, others)
    router = RouterProcess(
        consortium.router,
        tmp_path,
        router_batch_records=100,
        router_workers=2,
        router_fault_crash_key=poison_key.decode(),
    ).start()
    router.wait_ready()
    try:
        publish(consortium, events)
        (letter,) = _dead_letters(consortium, poison_key, 1, limit_s=120)
        assert dict(letter.headers)["action.dlq.reason"] == b"router.worker_lost"
        assert_exactly_once(consortium, watcher)
        assert not router.exited()
        assert metric_value(router.metrics(), "action_router_worker_restarts_total") >= 2
        assert "killed a routing worker twice: dead-lettered" in router.log()
    finally:
        assert router.stop() == 0


def _assert_audit_chains_intact(consortium: Consortium) -> None:
    reader = TopicReader(consortium.admin, ["action.audit"])
    records = reader.read_until_quiet(quiet_s=3, limit_s=300)
    reader.close()
    entries = [(f"{r.topic}/{r.partition}@{r.offset}", json.loads(r.value)) for r in records]
    report = verify_chains(entries)
    assert report.intact, report.problems[:3]
    assert report.entries == len(entries) > 0
