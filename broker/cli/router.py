"""``action-broker provision`` and ``action-broker run``: the consortium's topics and router."""

from __future__ import annotations

import logging
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from broker import early_signals
from broker.console import bootstrap_option, cluster_name_option, emit_rows, info, output_option
from broker.kafka_target import kafka_target
from broker.listening import binding
from broker.policy.loader import load_policies
from broker.quiet_logs import quiet_kafka_client
from broker.settings import load_settings

if TYPE_CHECKING:
    from broker.router import RouterService

policies_option = click.option(
    "--policies",
    "policy_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Policy folder (default: ACTION_POLICY_DIR, else the example consortium).",
)


@click.command()
@bootstrap_option
@cluster_name_option
@policies_option
@click.option(
    "--partitions",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="Partitions of each new topic.",
)
@click.option(
    "--credentials-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where new SCRAM passwords are written, one 0600 file per user "
    "(default: ACTION_CREDENTIALS_DIR, else <cache>/credentials).",
)
@click.option(
    "--rotate-credentials",
    is_flag=True,
    help="Give every member and the router a new SCRAM password.",
)
@click.option(
    "--topics-only",
    is_flag=True,
    help="Create topics only: no users, no ACLs (for a cluster without an authorizer).",
)
@click.option("--dry-run", is_flag=True, help="List what would change, change nothing.")
@output_option
def provision(
    bootstrap: str | None,
    cluster_name: str | None,
    policy_dir: Path | None,
    partitions: int,
    credentials_dir: Path | None,
    rotate_credentials: bool,
    topics_only: bool,
    dry_run: bool,
    output_format: str,
) -> None:
    """Create the inbound, feed, audit, dead-letter and ledger topics for every member in
    the registry (existing topics are reported, not changed); replication is 3 with
    min.insync.replicas 2 on a cluster of 3 or more brokers, else 1. Then a SCRAM user for
    every member and the router, and exactly the ACLs the registry implies: missing ones
    are created, those of a member removed from the registry are deleted. Idempotent;
    run it as a super user."""
    settings = load_settings(credentials_dir=credentials_dir)
    registry = load_policies(policy_dir or settings.policy_dir).registry
    from broker.provision import provision_access, provision_topics

    kafka = kafka_target(bootstrap, cluster_name, settings)
    topics = provision_topics(kafka, registry, partitions=partitions, dry_run=dry_run)
    access = (
        []
        if topics_only
        else provision_access(
            kafka,
            registry,
            router_principal=settings.router_principal,
            router_group=settings.router_group,
            credentials_dir=settings.credentials_folder,
            rotate=rotate_credentials,
            dry_run=dry_run,
            produce_byte_rate=settings.member_produce_byte_rate,
            request_percentage=settings.member_request_percentage,
        )
    )
    rows = [o.to_row() for o in topics] + [o.to_row() for o in access if o.action != "exists"]
    emit_rows(rows, ["kind", "name", "detail", "action"], output_format)
    short = [o.topic for o in topics if o.action == "too-few-partitions"]
    if short:
        info(f"fewer partitions than asked (not changed): {', '.join(short)}")
    tally = Counter(f"topics {o.action}" for o in topics)
    tally.update(f"{o.kind}s {o.action}" for o in access)
    info(
        "; ".join(f"{n} {what}" for what, n in sorted(tally.items()))
        + ("" if topics_only else f"; passwords in {settings.credentials_folder}")
    )


@click.command()
@bootstrap_option
@cluster_name_option
@policies_option
@click.option("--instance", help="Instance id, stable across restarts (default: 0).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Port of /metrics, /livez, /readyz (default 9464; 0: any free).",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    help="Routing worker processes beside the Kafka I/O (default 2; 0: route in this process).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
def run(
    bootstrap: str | None,
    cluster_name: str | None,
    policy_dir: Path | None,
    instance: str | None,
    metrics_port: int | None,
    workers: int | None,
    log_level: str,
) -> None:
    """Run the router: every inbound record is decoded, checked, decided for every member
    and written to the feeds, the audit trail or the dead-letter topic, exactly once.
    SIGHUP reloads the policies; SIGTERM or Ctrl-C stops after the open transaction."""
    # Signals kept since the process began (broker.entrypoint) come here, and any that
    # arrives while the router is still starting is applied once it is up: none is fatal.
    early: list[str] = []
    service: RouterService | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        info(f"{signal.Signals(signum).name}: stopping after the open transaction")
        service.request_stop() if service else early.append("stop")

    def reload(_signum: int, _frame: FrameType | None) -> None:
        service.request_reload() if service else early.append("reload")

    early_signals.hand_over({signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload})
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(log_level)))
    for handler in logging.getLogger().handlers:
        quiet_kafka_client(handler)  # one line per state change, not one per retry
    settings = load_settings(
        policy_dir=policy_dir,
        router_instance=instance,
        metrics_port=metrics_port,
        router_workers=workers,
    )
    from broker.metrics import RouterMetrics, serve
    from broker.router import RouterService

    metrics = RouterMetrics()
    service = RouterService(settings, kafka_target(bootstrap, cluster_name, settings), metrics)
    for request in early:
        service.request_stop() if request == "stop" else service.request_reload()
    host = settings.metrics_host
    with binding("the router's metrics endpoint", host, settings.metrics_port, "--metrics-port"):
        _, port = serve(metrics, service.health, host, settings.metrics_port)
    info(f"metrics: http://{settings.metrics_host}:{port}/metrics")
    sys.exit(service.run())
