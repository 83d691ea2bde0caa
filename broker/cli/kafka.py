"""``action-broker kafka``: a local Apache Kafka (KRaft) for development and tests."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

from broker.console import emit_rows, info, output_option, waiting
from broker.errors import ClusterNotRunningError
from broker.kafka_target import DEFAULT_CLUSTER, local_cluster
from broker.localkafka import LocalCluster, resolve_distribution
from broker.localkafka.cluster import live_broker_ids
from broker.provision import read_password
from broker.settings import Settings, load_settings

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the cluster (default: <cache>/clusters/<name>).",
)
name_option = click.option(
    "--name", default=DEFAULT_CLUSTER, show_default=True, help="Name of the local cluster."
)


def _cluster(name: str, data_dir: Path | None) -> tuple[LocalCluster, Settings]:
    settings = load_settings()
    return local_cluster(name, data_dir, settings), settings


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka broker (or a 3-node cluster) on 127.0.0.1."""


@kafka.command()
def fetch() -> None:
    """Download Kafka's jars from Maven Central into the cache (once), or check KAFKA_HOME."""
    dist = resolve_distribution(load_settings())
    info(f"Kafka {dist.version} ({dist.source}) in {dist.libs_dir}")


@kafka.command()
@click.option(
    "--nodes",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Number of combined broker+controller nodes; 3 gives a no-data-loss setup.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Broker port of node 1 (node N uses port+N-1). Default: free ports.",
)
@click.option("--fresh", is_flag=True, help="Delete the cluster's data and start anew.")
@click.option(
    "--tls",
    is_flag=True,
    help="Clients connect with SASL_SSL (certificates from a new local CA) instead of "
    "SASL_PLAINTEXT. Fixed when the cluster is created.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done, change nothing.")
@output_option
@name_option
@data_dir_option
def up(
    nodes: int,
    port: int | None,
    fresh: bool,
    tls: bool,
    dry_run: bool,
    output_format: str,
    name: str,
    data_dir: Path | None,
) -> None:
    """Start the cluster (formatting it on first use) and print its bootstrap address.

    The cluster authenticates every client (SCRAM-SHA-512) and denies what no ACL allows;
    its super user is `admin`, with the password in <data-dir>/admin.password."""
    cluster, settings = _cluster(name, data_dir)
    if dry_run:
        action = "replace" if fresh else "start (creating it if absent)"
        info(
            f"would {action} a {nodes}-node Kafka {settings.kafka_version} cluster "
            f"in {cluster.data_dir}"
        )
        return
    running = not fresh and cluster.exists() and all(n.running for n in cluster.status())
    info(
        f"Kafka in {cluster.data_dir} is already running"
        if running
        else f"starting {nodes}-node Kafka in {cluster.data_dir} ..."
    )
    started = time.monotonic()
    with waiting(f"waiting for {nodes} node(s) to serve ..."):
        state = cluster.up(nodes=nodes, port=port, fresh=fresh, tls=tls)
    info(
        f"Kafka {state.kafka_version} is up after {time.monotonic() - started:.1f}s "
        f"(logs: action-broker kafka logs{cluster.selector})"
    )
    if output_format == "table":
        click.echo(state.bootstrap)
    else:
        emit_rows(
            [
                {
                    "bootstrap": state.bootstrap,
                    "cluster_id": state.cluster_id,
                    "nodes": len(state.nodes),
                    "security_protocol": state.security_protocol,
                    "data_dir": str(cluster.data_dir),
                }
            ],
            ["bootstrap", "cluster_id", "nodes", "security_protocol", "data_dir"],
            output_format,
        )


@kafka.command()
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for a clean shutdown before SIGKILL.",
)
@click.option("--purge", is_flag=True, help="Also delete the cluster's data.")
@click.option("--dry-run", is_flag=True, help="Say what would be done, change nothing.")
@name_option
@data_dir_option
def down(timeout: float, purge: bool, dry_run: bool, name: str, data_dir: Path | None) -> None:
    """Stop every node of the cluster (no process is left behind)."""
    cluster, _ = _cluster(name, data_dir)
    if dry_run:
        info(f"would stop the cluster in {cluster.data_dir}" + (" and delete it" if purge else ""))
        return
    stopped = cluster.down(timeout_s=timeout)
    info(f"stopped node(s) {stopped}" if stopped else "no node was running")
    if purge:
        cluster.purge()
        info(f"deleted {cluster.data_dir}")


@kafka.command()
@output_option
@name_option
@data_dir_option
def status(output_format: str, name: str, data_dir: Path | None) -> None:
    """Show each node. Exit 0: all serving; 1: some down; 3: none running."""
    cluster, _ = _cluster(name, data_dir)
    nodes = cluster.status()
    rows = []
    for node in nodes:
        serving = node.running and node.node_id in live_broker_ids(cluster.connection(node.node_id))
        rows.append(
            {
                "node": node.node_id,
                "address": f"127.0.0.1:{node.port}",
                "pid": node.pid if node.running else None,
                "state": "serving" if serving else ("starting" if node.running else "down"),
                "log": str(node.log),
            }
        )
    emit_rows(rows, ["node", "address", "pid", "state", "log"], output_format)
    if all(r["state"] == "serving" for r in rows):
        return
    sys.exit(ClusterNotRunningError.exit_code if not any(n.running for n in nodes) else 1)


@kafka.command(name="env")
@click.option(
    "--user",
    help="A provisioned SCRAM user (a member's principal name, or the router's); "
    "default: the cluster's admin.",
)
@name_option
@data_dir_option
def environment(user: str | None, name: str, data_dir: Path | None) -> None:
    """Print the ACTION_KAFKA_* variables that reach the local cluster, as shell exports:

    eval "$(action-broker kafka env --user platform-a)"

    so action-publish, action-feed and the SDK connect as that member (its password from
    the credentials folder `action-broker provision` wrote)."""
    cluster, settings = _cluster(name, data_dir)
    if not cluster.exists():
        raise ClusterNotRunningError(
            f"no local cluster in {cluster.data_dir}",
            hint=f"start it: action-broker kafka up{cluster.selector}",
        )
    connection = cluster.connection()
    if user and connection.uses_sasl:
        connection = connection.as_user(user, read_password(settings.credentials_folder, user))
    for variable, value in sorted(connection.environment().items()):
        click.echo(f"export {variable}={shlex.quote(value)}")


@kafka.command()
@click.option("--node", "node_id", type=int, help="Only this node (default: all).")
@click.option("-n", "--lines", type=click.IntRange(1), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@name_option
@data_dir_option
def logs(node_id: int | None, lines: int, follow: bool, name: str, data_dir: Path | None) -> None:
    """Print the last lines of the broker log(s)."""
    cluster, _ = _cluster(name, data_dir)
    state = cluster.state()
    node_ids = [state.node(node_id).node_id] if node_id else [n.node_id for n in state.nodes]
    for nid in node_ids:
        if len(node_ids) > 1:
            click.echo(f"==> node {nid}: {cluster.log_path(nid)} <==")
        click.echo(cluster.tail_log(nid, lines))
    if follow:
        _follow([cluster.log_path(nid) for nid in node_ids])


def _follow(paths: list[Path]) -> None:
    handles = []
    for path in paths:
        handle = path.open("r", encoding="utf-8", errors="replace")
        handle.seek(0, 2)
        handles.append(handle)
    try:
        while True:
            quiet = True
            for handle in handles:
                line = handle.readline()
                if line:
                    quiet = False
                    click.echo(line, nl=False)
            if quiet:
                time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        for handle in handles:
            handle.close()


@kafka.command(name="state")
@name_option
@data_dir_option
def show_state(name: str, data_dir: Path | None) -> None:
    """Print cluster.json (ids, ports, cluster id, security) for scripts; the admin password
    is not printed, only the file that holds it."""
    cluster, _ = _cluster(name, data_dir)
    state = cluster.state()
    extra: dict[str, str] = {"bootstrap": state.bootstrap}
    if state.security_protocol != "PLAINTEXT":
        extra["sasl_username"] = "admin"
        extra["sasl_password_file"] = str(cluster.data_dir / "admin.password")
    if state.security_protocol == "SASL_SSL":
        extra["ssl_cafile"] = str(cluster.tls_files.ca_cert)
    click.echo(json.dumps({**json.loads(state.to_json()), **extra}))
