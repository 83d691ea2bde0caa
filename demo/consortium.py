"""The end-to-end demo (``make demo``) and its non-interactive check (``make demo-check``).

Starts a local Kafka, provisions the consortium's topics, starts the router, publishes a
SYNTHETIC stream from the example consortium's members (indicators, seizure reports, a
retraction), then shows what each recipient received: the same indicator in different
forms per MOU, and the sellers correlated across members. ``--check`` verifies every
recipient's feed against the policy engine's expected decisions and exits non-zero on
any mismatch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from broker.connection import KafkaConnection
from broker.events import Event, RetractionReason, parse_event
from broker.localkafka import LocalCluster
from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from broker.policy.loader import load_policies
from broker.provision import Consortium
from broker.settings import load_settings
from consumers.feed_reader import Delivery, FeedReader, FeedReaderConfig, decrypt_fields
from consumers.store import FeedStore
from policies import POLICY_DIR
from policies.demo_keys import demo_encryption_key, demo_match_secret, demo_signing_key
from producers.publisher import Publisher, PublisherConfig
from producers.synthetic import SyntheticData

PUBLISHERS = [
    "platform-a",
    "platform-b",
    "platform-c",
    "payments-x",
    "brand-owner",
    "express-carrier",
]
console = Console(stderr=True)
#: Tables on stdout: the terminal's width, or a fixed one when piped (a pipe has no width,
#: and rich would cut every table at 80 columns).
TABLE_WIDTH = None if sys.stdout.isatty() else 160


def _table_console() -> Console:
    return Console(width=TABLE_WIDTH)


def _kid(policies: PolicySet, member: str) -> str:
    return policies.members[member].signing_keys[-1].kid


def build_stream(policies: PolicySet, count: int, seed: int) -> list[Event]:
    """Indicators from every publishing member, IPR Center seizure reports, and a
    retraction by platform-b of one of its indicators."""
    data = SyntheticData(seed=seed, sellers=max(20, count // 3))
    events: list[Event] = [*data.stream(PUBLISHERS, count)]
    events += [data.seizure("ipr-center", "brand-owner") for _ in range(max(3, count // 20))]
    retracted = next(e for e in events if e.source_member == "platform-b")
    events.append(
        parse_event(
            "Retraction",
            {
                "retraction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(retracted.to_avro()))),
                "indicator_id": retracted.to_avro()["indicator_id"],
                "source_member": "platform-b",
                "retracted_at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
                "reason": RetractionReason.APPEAL_WON.value,
                "tlp": "GREEN",
            },
        )
    )
    return events


def publish_all(consortium: Consortium, policies: PolicySet, events: list[Event]) -> None:
    by_member: dict[str, list[Event]] = {}
    for event in events:
        by_member.setdefault(event.source_member, []).append(event)
    for member, mine in by_member.items():
        kafka = consortium.member(member)
        config = PublisherConfig(
            kafka.bootstrap,
            member,
            demo_signing_key(member),
            _kid(policies, member),
            client=kafka.security(),
        )
        with Publisher(config) as publisher:
            for event in mine:
                publisher.publish(event)
        console.print(f"  {member:<16} published {len(mine)} events")


def start_router(
    kafka: KafkaConnection, log: Path, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        **kafka.environment(),
        "ACTION_METRICS_PORT": str(port),
        "ACTION_DEMO_KEYS": "true",  # the example consortium's public secret and router key
    }
    command = [str(Path(sys.executable).parent / "action-broker"), "run"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.findall(r"metrics: (http://\S+)/metrics", log.read_text(errors="replace"))
        if found:
            url = found[-1]
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return process, url
            except OSError:
                pass
        if process.poll() is not None:
            break
        time.sleep(0.3)
    raise SystemExit(f"the router did not start; its log:\n{log.read_text()[-3000:]}")


def start_workspace(store: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The IPR Center's workspace over its store (loopback, no login): its URL once it
    answers."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    command = [
        str(Path(sys.executable).parent / "action-feed"),
        "--member",
        "ipr-center",
        "--store",
        str(store),
        "serve",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url + "correlations", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the workspace did not start; its log:\n{log.read_text()[-3000:]}")


def _metric(metrics_url: str, name: str) -> float:
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=5) as answer:  # noqa: S310
        text = answer.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.split("{")[0].split(" ")[0] == name
    )


def wait_routed(metrics_url: str, count: int, limit_s: float = 300) -> float:
    """Until the router has committed ``count`` inbound records; how many it committed."""
    deadline = time.monotonic() + limit_s
    while _metric(metrics_url, "action_router_records_committed_total") < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return _metric(metrics_url, "action_router_records_committed_total")


def read_feeds(
    consortium: Consortium, members: list[str], folder: Path
) -> dict[str, list[Delivery]]:
    feeds = {}
    for member in members:
        kafka = consortium.member(member)
        config = FeedReaderConfig(
            kafka.bootstrap,
            member,
            demo_encryption_key(member),
            group_id=f"{member}.demo.{int(time.time())}",
            client=kafka.security(),
        )
        with FeedReader(config) as reader:
            deliveries = list(reader.deliveries(idle_timeout_s=3))
            reader.commit()
        store = FeedStore(folder / f"{member}.feed.sqlite")
        store.add(deliveries)
        store.close()
        feeds[member] = deliveries
    return feeds


def expected_deliveries(policies: PolicySet, events: list[Event]) -> dict[tuple[str, str], Any]:
    """(recipient, record id) -> record, as the engine decides (retractions: the
    recipients of the indicator they retract)."""
    now = dt.datetime.now(dt.UTC)
    key = MatchTokenKey(1, demo_match_secret())
    out: dict[tuple[str, str], Any] = {}
    received: dict[str, set[str]] = {}
    for event in events:
        record = event.to_avro()
        if event.avro_type == "Retraction":
            for recipient in received.get(str(record["indicator_id"]), set()):
                out[(recipient, str(record["retraction_id"]))] = None
            continue
        for decision in policies.evaluate_all(record, event.avro_type, now=now, match_key=key):
            if decision.delivered:
                out[(decision.recipient, decision.record_id)] = decision.record
                received.setdefault(decision.record_id, set()).add(decision.recipient)
    return out


def _comparable(record: Any) -> Any:
    return json.loads(json.dumps(record, default=str, sort_keys=True))


def check(feeds: dict[str, list[Delivery]], expected: dict[tuple[str, str], Any]) -> list[str]:
    """Every mismatch between the feeds and the engine's decisions."""
    problems = []
    members = set(feeds)
    got = Counter((member, d.record_id) for member, ds in feeds.items() for d in ds)
    for key, count in got.items():
        if count > 1:
            problems.append(f"{key[0]} received {key[1]} {count} times")
    for key in sorted(set(expected) - set(got)):
        problems.append(f"{key[0]} did not receive {key[1]}")
    for key in sorted(set(got) - set(expected)):
        problems.append(f"{key[0]} received {key[1]}, which the policies withhold")
    for member, deliveries in feeds.items():
        for delivery in deliveries:
            want = expected.get((member, delivery.record_id))
            if want is None or delivery.undecryptable:
                if delivery.undecryptable:
                    problems.append(
                        f"{member}: {delivery.record_id}: cannot decrypt "
                        f"{', '.join(delivery.undecryptable)}"
                    )
                continue
            if delivery.source in members and not delivery.source_verified:
                problems.append(
                    f"{member}: {delivery.record_id}: the source's field proof is missing"
                )
            want = _comparable(want)  # the engine encrypted to the member: open it the same way
            decrypt_fields(want, demo_encryption_key(member), f"{member}-", delivery.record_id)
            if _comparable(delivery.record) != want:
                problems.append(f"{member}: {delivery.record_id} differs from the engine's record")
    return problems


def show_side_by_side(feeds: dict[str, list[Delivery]]) -> None:
    """One platform-a indicator as each recipient received it."""
    counts = Counter(
        d.record_id
        for ds in feeds.values()
        for d in ds
        if d.event_type == "SellerIndicator" and d.source in ("platform-a", "anonymous-platform")
    )
    if not counts:
        return
    record_id, _ = counts.most_common(1)[0]
    copies = {m: d for m, ds in feeds.items() for d in ds if d.record_id == record_id}
    fields = [
        "source_member",
        "tlp",
        "seller.account_id",
        "seller.email",
        "seller.phone",
        "seller.store_domain",
        "seller.addresses",
        "seller.payment_accounts",
        "seller.ip_addresses",
    ]
    table = Table(
        "field",
        *copies,
        title=f"one indicator ({record_id[:8]}...), as each recipient's MOU shaped it",
        show_lines=False,
    )
    for path in fields:
        row = []
        for delivery in copies.values():
            value: Any = delivery.record
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, list):
                value = (
                    ", ".join(v if isinstance(v, str) else v.get("country", "?") for v in value)
                    or "-"
                )
            text = "-" if value in (None, "") else str(value)
            row.append(text if len(text) <= 26 else text[:23] + "...")
        table.add_row(path, *row)
    _table_console().print(table)


def show_sellers(folder: Path, member: str) -> None:
    store = FeedStore(folder / f"{member}.feed.sqlite")
    found = store.sellers(2)
    store.close()
    table = Table(
        "sources",
        "members",
        "indicators",
        "categories",
        "hss",
        "identifiers",
        title=f"sellers reported by 2+ members, in {member}'s store",
    )
    for seller in found[:8]:
        row = seller.to_row(summary=True)
        table.add_row(
            str(row["sources"]),
            row["members"],
            str(row["indicators"]),
            row["categories"],
            row["hss"],
            row["identifiers"][:60],
        )
    _table_console().print(table)
    console.print(f"  {len(found)} sellers correlated across members in {member}'s store")


def check_analyst_outputs(folder: Path, workspace_url: str) -> list[str]:
    """What other tools do with the IPR Center's real store: its STIX bundle passes
    stix2-validator --strict, its MISP feed loads in PyMISP, and taxii2-client reads its
    TAXII collection page by page, each object version once (dev dependencies: the
    check runs in the test environment)."""
    from pymisp import MISPEvent
    from stix2validator import ValidationOptions, validate_string
    from taxii2client.v21 import Server, as_pages

    from consumers.misp_export import export_misp
    from consumers.stix_export import write_stix

    problems = []
    store = FeedStore(folder / "ipr-center.feed.sqlite")
    bundle = folder / "ipr-center.stix.json"
    objects = write_stix(store, bundle)
    result = validate_string(bundle.read_text(), ValidationOptions(version="2.1", strict=True))
    problems += [f"STIX: {error}" for error in result.errors[:20]]
    events = export_misp(store, folder / "misp", exported_by="ipr-center")
    for path in sorted((folder / "misp").glob("*-*.json")):
        try:
            MISPEvent().load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - reported as a mismatch
            problems.append(f"MISP: {path.name} does not load: {exc}")
    store.close()
    (root,) = Server(workspace_url + "taxii2/").api_roots
    (collection,) = root.collections
    seen = [
        (obj["id"], obj.get("modified", ""))
        for page in as_pages(collection.get_objects, per_request=50, version="all")
        for obj in page.get("objects", [])
    ]
    if len(seen) != len(set(seen)) or not seen:
        problems.append(f"TAXII: {len(seen)} objects read, {len(set(seen))} distinct")
    console.print(
        f"analyst outputs of the IPR Center's store: STIX {objects} objects "
        f"({len(result.errors)} validator errors), MISP {events} events, TAXII "
        f"{len(seen)} object versions read in pages of 50"
    )
    return problems


#: How long the demo's held record waits: platform-b's embargo ends this long after it is
#: published (its published_at is set back by the rest of the hour).
EMBARGO_WAIT_S = 30


def show_embargo(consortium: Consortium, policies: PolicySet) -> str | None:
    """Publish a platform-b indicator whose one-hour embargo for platforms ends in
    EMBARGO_WAIT_S seconds: the router holds it, then delivers it to platform-a. Returns
    what went wrong, or None."""
    embargo = next(
        r.when.embargo_minutes for r in policies.mous["platform-b"].shares if r.when.embargo_minutes
    )
    now = dt.datetime.now(dt.UTC)
    published = now - dt.timedelta(minutes=embargo) + dt.timedelta(seconds=EMBARGO_WAIT_S)
    event = parse_event(
        "SellerIndicator",
        {
            "indicator_id": str(uuid.uuid4()),
            "source_member": "platform-b",
            "observed_at": published,
            "published_at": published,
            "seller": {"account_id": "HELD-1", "email": "held@late-seller.example"},
            "product_categories": ["FOOTWEAR"],
            "confidence": 95,
            "hss": False,
            "tlp": "GREEN",
            "purpose": "IPR_ENFORCEMENT",
        },
    )
    indicator_id = str(event.to_avro()["indicator_id"])
    publish_all(consortium, policies, [event])
    due = published + dt.timedelta(minutes=embargo)
    console.print(
        f"\nplatform-b shares with platforms after a {embargo}-minute embargo: a new "
        f"indicator is held until {due:%H:%M:%S} UTC, then delivered ..."
    )
    kafka = consortium.member("platform-a")
    config = FeedReaderConfig(
        kafka.bootstrap,
        "platform-a",
        demo_encryption_key("platform-a"),
        group_id=f"platform-a.demo-held.{int(time.time())}",
        client=kafka.security(),
    )
    copies: list[Delivery] = []
    with FeedReader(config) as reader:
        deadline = time.monotonic() + EMBARGO_WAIT_S + 90
        while time.monotonic() < deadline and not copies:
            copies = [d for d in reader.deliveries(idle_timeout_s=2) if d.record_id == indicator_id]
        arrived = dt.datetime.now(dt.UTC)
        copies += [d for d in reader.deliveries(idle_timeout_s=3) if d.record_id == indicator_id]
    if len(copies) != 1:
        return f"the held indicator reached platform-a {len(copies)} times, not once"
    if arrived < due:
        return f"the held indicator reached platform-a at {arrived:%H:%M:%S}, before {due:%H:%M:%S}"
    console.print(
        f"  arrived at platform-a at {arrived:%H:%M:%S} UTC (as "
        f"{copies[0].source}), {(arrived - due).total_seconds():.0f} s after "
        "the embargo ended, once"
    )
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify and exit (for CI)")
    parser.add_argument("--events", type=int, default=240)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--metrics-port", type=int, default=9464)
    parser.add_argument("--workspace-port", type=int, default=9480)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (Kafka's data, the stores)"
    )
    args = parser.parse_args()
    policies = load_policies(POLICY_DIR)
    folder = Path(tempfile.mkdtemp(prefix="action-demo-"))
    console.print(f"[bold]ACTION broker demo[/bold]: SYNTHETIC data; work folder {folder}")
    cluster = LocalCluster(folder / "kafka", load_settings())
    router = workspace = None
    try:
        console.print("starting a local Apache Kafka ...")
        cluster.up(nodes=1)
        consortium = Consortium.provision(
            cluster.connection(), policies.registry, folder / "credentials"
        )
        console.print(
            f"Kafka at {consortium.admin}: topics, SCRAM users and ACLs provisioned; "
            "starting the router ..."
        )
        port = 0 if args.check else args.metrics_port
        router, metrics_url = start_router(consortium.router, folder / "router.log", port)
        events = build_stream(policies, args.events, args.seed)
        console.print(f"publishing {len(events)} synthetic events, signed by their members:")
        publish_all(consortium, policies, events)
        routed = wait_routed(metrics_url, len(events))
        dead = _metric(metrics_url, "action_router_dlq_records_total")
        console.print(
            f"routed {routed:.0f} of {len(events)} ({dead:.0f} dead letters); "
            "reading every member's feed"
        )
        members = [m.id for m in policies.registry.members]
        feeds = read_feeds(consortium, members, folder)
        summary = Table(
            "recipient",
            "deliveries",
            "indicators",
            "retractions",
            "seizures",
            "source-signed",
            title="what each member received",
        )
        for member, deliveries in feeds.items():
            kinds = Counter(d.event_type for d in deliveries)
            verified = sum(d.source_verified for d in deliveries)
            summary.add_row(
                member,
                str(len(deliveries)),
                str(kinds["SellerIndicator"]),
                str(kinds["Retraction"]),
                str(kinds["SeizureReport"]),
                str(verified),
            )
        _table_console().print(summary)
        show_side_by_side(feeds)
        show_sellers(folder, "ipr-center")
        held = show_embargo(consortium, policies)
        workspace, workspace_url = start_workspace(
            folder / "ipr-center.feed.sqlite",
            0 if args.check else args.workspace_port,
            folder / "workspace.log",
        )
        if args.check:
            problems = check(feeds, expected_deliveries(policies, events))
            if held is not None:
                problems.append(held)
            if routed < len(events) or dead:
                problems.append(f"routed {routed:.0f} of {len(events)}, {dead:.0f} dead letters")
            problems += check_analyst_outputs(folder, workspace_url)
            total = sum(len(d) for d in feeds.values())
            for problem in problems[:50]:
                console.print(f"[red]MISMATCH[/red] {problem}")
            console.print(
                f"demo-check: {total} deliveries to {len(feeds)} members checked "
                f"against the policy engine: {len(problems)} mismatch(es)"
            )
            raise SystemExit(1 if problems else 0)
        console.print(f"\nmetrics: {metrics_url}/metrics   (Prometheus rules: deploy/prometheus)")
        feed_cli = Path(sys.executable).parent / "action-feed"
        console.print(
            f"stores: {folder}/<member>.feed.sqlite; try:\n  {feed_cli} --member ipr-center "
            f"--store {folder / 'ipr-center.feed.sqlite'} sellers"
            + ("" if args.keep else "\n(the work folder goes when the demo stops; --keep keeps it)")
        )
        console.print(f"[bold]the IPR Center's workspace: {workspace_url}[/bold]")
        console.print("[bold]Ctrl-C stops everything.[/bold]")
        signal.pause()
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        if workspace is not None:
            workspace.terminate()
            workspace.wait(20)
        if router is not None and router.poll() is None:
            router.send_signal(signal.SIGTERM)
            router.wait(60)
        cluster.down()
        if args.keep:
            console.print(f"work folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
