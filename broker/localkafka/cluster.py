"""Start, stop and inspect a local Apache Kafka cluster in KRaft mode.

Each node is one JVM running ``kafka.Kafka`` as a combined broker and controller on
127.0.0.1. A cluster lives in one folder::

    <data_dir>/cluster.json          ids, ports, cluster id, security (fixed at first start)
    <data_dir>/admin.password        the SCRAM password of the super user ``admin`` (0600)
    <data_dir>/tls/                  CA certificate and broker key+chain, with ``--tls``
    <data_dir>/node-<id>/            server.properties, log4j2.properties, data/,
                                     kafka.log (stdout+stderr of the JVM), kafka.pid

Ports and the cluster id are kept across restarts, so a node that a test hard-kills can
be started again with the same identity and rejoin the quorum.

Secured like a production cluster: clients authenticate with SCRAM-SHA-512 over
SASL_PLAINTEXT (SASL_SSL with ``--tls``) and the StandardAuthorizer denies anything no
ACL allows. The super user ``admin`` is created at format time (``--add-scram``); the
controllers talk SASL/PLAIN among themselves with the same admin identity, because
SCRAM credentials live in the metadata log the controllers have not read yet at boot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from broker.connection import KafkaConnection
from broker.errors import BrokerStartError, ClusterNotRunningError, LocalKafkaError, PortInUseError
from broker.localkafka.distribution import KafkaDistribution, find_java, resolve_distribution
from broker.localkafka.tls import TlsFiles, create_local_pki
from broker.settings import Settings

_STATE_FILE = "cluster.json"
_ADMIN_PASSWORD_FILE = "admin.password"  # noqa: S105 - a file name, not a password
#: The super user of a local cluster; every other principal needs ACLs.
ADMIN_USER = "admin"
_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_LOG_TAIL_LINES = 30
_MAIN_CLASS = "kafka.Kafka"

_LOG4J2_PROPERTIES = """\
# Written by action-broker: the JVM's stdout is redirected to kafka.log.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


@dataclass(frozen=True)
class NodeState:
    """One combined broker+controller node of a local cluster."""

    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class ClusterState:
    """What ``cluster.json`` records: fixed at the first ``up`` and reused afterwards."""

    cluster_id: str
    kafka_version: str
    nodes: tuple[NodeState, ...]
    #: How clients connect: SASL_PLAINTEXT, or SASL_SSL for a cluster made with ``--tls``.
    security_protocol: str = "SASL_PLAINTEXT"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, node_id: int) -> NodeState:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        known = ", ".join(str(n.node_id) for n in self.nodes)
        raise LocalKafkaError(f"no node {node_id} in this cluster (nodes: {known})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        raw = json.loads(text)
        nodes = tuple(NodeState(**n) for n in raw["nodes"])
        return cls(
            cluster_id=raw["cluster_id"],
            kafka_version=raw["kafka_version"],
            nodes=nodes,
            # Clusters made before security existed are open; `kafka up --fresh` secures them.
            security_protocol=raw.get("security_protocol", "PLAINTEXT"),
        )


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    port: int
    pid: int | None
    running: bool
    log: Path


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):  # Kafka's own generator avoids these too
            return candidate


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable and writable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, 0o600)
        file.write(text)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the JVM's server sockets: connections of a stopped broker lingering in
        # TIME_WAIT must not count as "in use"; a live listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on 127.0.0.1 ({what}) is already in use",
                hint="stop whatever listens there, or choose another with --port",
            ) from exc


def _security_properties(state: ClusterState, admin_password: str, tls: TlsFiles) -> dict[str, str]:
    """SASL (SCRAM for clients and brokers, PLAIN for controllers), TLS, and the authorizer."""
    if state.security_protocol == "PLAINTEXT":
        return {
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    admin = f'username="{ADMIN_USER}" password="{admin_password}"'
    lines = {
        "inter.broker.listener.name": "CLIENT",
        "listener.security.protocol.map": (
            f"CLIENT:{state.security_protocol},CONTROLLER:SASL_PLAINTEXT"
        ),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.client.scram-sha-512.sasl.jaas.config": f"{scram} required {admin};",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{plain} required {admin} user_{ADMIN_USER}="{admin_password}";'
        ),
        "authorizer.class.name": _AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER}",
    }
    if state.security_protocol == "SASL_SSL":
        lines |= {
            "listener.name.client.ssl.keystore.type": "PEM",
            "listener.name.client.ssl.keystore.location": str(tls.server_pem),
            "listener.name.client.ssl.truststore.type": "PEM",
            "listener.name.client.ssl.truststore.location": str(tls.ca_cert),
            "listener.name.client.ssl.endpoint.identification.algorithm": "https",
        }
    return lines


def server_properties(
    state: ClusterState, node: NodeState, data_dir: Path, admin_password: str, tls: TlsFiles
) -> str:
    """The broker configuration of one node; durable settings when there are 3+ nodes."""
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in state.nodes)
    replicas = min(len(state.nodes), 3)
    min_isr = 2 if replicas >= 3 else 1
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"CLIENT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        **_security_properties(state, admin_password, tls),
        "log.dirs": str(data_dir),
        # Topics are created on purpose (provisioning, tests), never by a typo'd producer.
        "auto.create.topics.enable": "false",
        "num.partitions": "3",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        # A node that stops heartbeating is fenced, and its partitions (coordinators
        # among them) get new leaders, after 4 s instead of Kafka's default 9: what
        # bounds how soon clients resume after a node dies (docs/router.md, Exactly once).
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> str | None:
    """The process start time in clock ticks: with the pid, it names one process for good."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _pid_running(pid: int, start_ticks: str | None) -> bool:
    """True while process ``pid`` (started at ``start_ticks``) still holds any resources."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # reap our own dead children
        if reaped == pid:
            return False
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if start_ticks is not None and fields[19] != start_ticks:
        return False  # the pid now belongs to an unrelated process
    if fields[0] != "Z":
        return True
    # A killed JVM's main thread turns zombie while its other threads, which may still
    # hold the listening sockets, are torn down: it is gone once they are.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_kafka_client_logs() -> Iterator[None]:
    """kafka-python logs every refused connection while a broker boots; that is expected."""
    logger = logging.getLogger("kafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def live_broker_ids(kafka: KafkaConnection, timeout_s: float = 5.0) -> set[int]:
    """Ids of the unfenced brokers a metadata request reports, or an empty set."""
    # The only Kafka client imports of this module; kept local so `--help` stays fast.
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    host, _, port = kafka.bootstrap.split(",")[0].rpartition(":")
    try:  # a refused TCP connect answers "not yet" in microseconds
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return set()
    with _quiet_kafka_client_logs():
        try:
            admin = KafkaAdminClient(
                **kafka.client_config(),
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
                client_id="action-broker-readiness",
            )
        except KafkaConfigurationError:
            raise
        except (KafkaError, OSError):  # not listening yet, or not answering yet
            return set()
        try:
            described = admin.describe_cluster()
        except (KafkaError, OSError):
            return set()
        finally:
            admin.close()
    return {int(b["broker_id"]) for b in described["brokers"] if not b.get("is_fenced")}


class LocalCluster:
    """A local KRaft cluster of 1 or more nodes kept in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        settings: Settings,
        distribution: KafkaDistribution | None = None,
        *,
        selector: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self._distribution = distribution
        #: The options that name this cluster on a command line (" --name X"), for hints.
        self.selector = selector

    # --- state --------------------------------------------------------------------------

    @property
    def distribution(self) -> KafkaDistribution:
        if self._distribution is None:
            self._distribution = resolve_distribution(self.settings)
        return self._distribution

    def exists(self) -> bool:
        """True once ``up`` has created (formatted) the cluster in ``data_dir``."""
        return (self.data_dir / _STATE_FILE).is_file()

    def state(self) -> ClusterState:
        path = self.data_dir / _STATE_FILE
        if not path.is_file():
            raise ClusterNotRunningError(
                f"no local Kafka cluster in {self.data_dir}",
                hint=f"start one with `action-broker kafka up{self.selector}`",
            )
        return ClusterState.from_json(path.read_text(encoding="utf-8"))

    def node_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}"

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(self.data_dir / "tls")

    def admin_password(self) -> str:
        try:
            return (self.data_dir / _ADMIN_PASSWORD_FILE).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LocalKafkaError(
                f"cannot read the admin password of the cluster in {self.data_dir}: {exc.strerror}",
                hint=f"recreate the cluster with `action-broker kafka up --fresh{self.selector}`",
            ) from exc

    def connection(self, node_id: int | None = None) -> KafkaConnection:
        """How to reach the cluster (or one node of it) as its super user ``admin``."""
        state = self.state()
        address = f"127.0.0.1:{state.node(node_id).port}" if node_id else state.bootstrap
        tls = state.security_protocol == "SASL_SSL"
        if state.security_protocol == "PLAINTEXT":
            return KafkaConnection(address)
        return KafkaConnection(
            address,
            security_protocol=state.security_protocol,
            username=ADMIN_USER,
            password=self.admin_password(),
            ssl_cafile=str(self.tls_files.ca_cert) if tls else None,
        )

    def log_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.log"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.pid"

    def _pid_record(self, node_id: int) -> tuple[int, str | None] | None:
        """(pid, start ticks) of the node's JVM as recorded at launch."""
        try:
            fields = self._pid_file(node_id).read_text().split()
            return int(fields[0]), (fields[1] if len(fields) > 1 else None)
        except (OSError, ValueError, IndexError):
            return None

    def node_pid(self, node_id: int) -> int | None:
        record = self._pid_record(node_id)
        return record[0] if record else None

    def node_running(self, node_id: int) -> bool:
        record = self._pid_record(node_id)
        return record is not None and _pid_running(*record)

    def status(self) -> list[NodeStatus]:
        state = self.state()
        return [
            NodeStatus(
                node_id=n.node_id,
                port=n.port,
                pid=self.node_pid(n.node_id),
                running=self.node_running(n.node_id),
                log=self.log_path(n.node_id),
            )
            for n in state.nodes
        ]

    def tail_log(self, node_id: int, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path(node_id).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    # --- lifecycle ----------------------------------------------------------------------

    def up(
        self, nodes: int = 1, port: int | None = None, fresh: bool = False, tls: bool = False
    ) -> ClusterState:
        """Start every node that is not running; create and format the cluster on first use.

        ``tls`` makes a new cluster's client listener SASL_SSL (SASL_PLAINTEXT otherwise);
        an existing cluster keeps what it was made with."""
        if fresh:
            self.down()
            self.purge()
        if self.exists():
            state = self.state()
            if nodes != len(state.nodes):
                raise LocalKafkaError(
                    f"the cluster in {self.data_dir} has {len(state.nodes)} node(s), not {nodes}",
                    hint="add --fresh to replace it (its data is deleted), or use another --name",
                )
            if port is not None and port != state.nodes[0].port:
                raise LocalKafkaError(
                    f"the cluster in {self.data_dir} listens on port {state.nodes[0].port}, "
                    f"not {port}",
                    hint="add --fresh to replace it, or drop --port",
                )
            if tls and state.security_protocol != "SASL_SSL":
                raise LocalKafkaError(
                    f"the cluster in {self.data_dir} was made without TLS "
                    f"({state.security_protocol})",
                    hint="add --fresh to replace it with a TLS one, or drop --tls",
                )
        else:
            state = self._create(nodes, port, tls)
        to_start = [n for n in state.nodes if not self.node_running(n.node_id)]
        for node in to_start:
            ensure_port_free(node.port, f"broker port of node {node.node_id}")
            ensure_port_free(node.controller_port, f"controller port of node {node.node_id}")
        for node in to_start:
            self._launch(state, node)
        self.wait_ready(state, {n.node_id for n in state.nodes})
        return state

    def purge(self) -> None:
        """Delete the cluster's folder; refuses while any node runs."""
        if self.exists() and any(s.running for s in self.status()):
            raise LocalKafkaError(
                f"the cluster in {self.data_dir} is running", hint="stop it first (kafka down)"
            )
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)

    def _create(self, nodes: int, port: int | None, tls: bool) -> ClusterState:
        if nodes < 1:
            raise LocalKafkaError(f"--nodes must be at least 1, got {nodes}")
        if port is not None:
            for offset in range(nodes):
                ensure_port_free(port + offset, f"broker port of node {offset + 1}")
        broker_ports = (
            [port + i for i in range(nodes)] if port else [free_port() for _ in range(nodes)]
        )
        node_states = tuple(
            NodeState(node_id=i + 1, port=broker_ports[i], controller_port=free_port())
            for i in range(nodes)
        )
        state = ClusterState(
            cluster_id=new_cluster_id(),
            kafka_version=self.distribution.version,
            nodes=node_states,
            security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
        )
        self._private_dir(self.data_dir)
        password_file = self.data_dir / _ADMIN_PASSWORD_FILE
        write_private(password_file, secrets.token_hex(24) + "\n")
        if tls:
            create_local_pki(self.tls_files.folder)
        for node in state.nodes:
            self._format(state, node)
        write_private(self.data_dir / _STATE_FILE, state.to_json())
        return state

    def _java_command(self, main_class: str, node: NodeState, *args: str) -> list[str]:
        node_dir = self.node_dir(node.node_id)
        return [
            find_java(),
            f"-Xmx{self.settings.kafka_heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node_dir}",
            "-cp",
            self.distribution.classpath,
            main_class,
            *args,
        ]

    @staticmethod
    def _private_dir(folder: Path) -> None:
        """Create ``folder`` readable by its owner only: it holds inbound records, the
        dead letters, the SCRAM credentials and logs that quote them."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)

    def _format(self, state: ClusterState, node: NodeState) -> None:
        node_dir = self.node_dir(node.node_id)
        self._private_dir(node_dir)
        config = node_dir / "server.properties"
        password = self.admin_password()
        # It holds the admin password: readable by the owner only (like all in the folder).
        write_private(
            config, server_properties(state, node, node_dir / "data", password, self.tls_files)
        )
        write_private(node_dir / "log4j2.properties", _LOG4J2_PROPERTIES)
        cmd = self._java_command(
            "kafka.tools.StorageTool",
            node,
            "format",
            "-t",
            state.cluster_id,
            "-c",
            str(config),
            # KIP-966: eligible leader replicas, so a shrinking ISR never elects a lossy leader.
            "--feature",
            "eligible.leader.replicas.version=1",
            # The super user exists from the first boot; members are added by provisioning.
            "--add-scram",
            f"SCRAM-SHA-512=[name={ADMIN_USER},password={password}]",
        )
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, umask=0o077
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BrokerStartError(
                f"formatting KRaft storage for node {node.node_id} failed "
                f"(exit {result.returncode}):\n{tail}"
            )

    def _launch(self, state: ClusterState, node: NodeState) -> None:
        node_dir = self.node_dir(node.node_id)
        cmd = self._java_command(_MAIN_CLASS, node, str(node_dir / "server.properties"))
        self._private_dir(self.data_dir)  # a folder made by an older version is tightened too
        self._private_dir(node_dir)
        log_fd = os.open(self.log_path(node.node_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            banner = f"\n=== action-broker: starting node {node.node_id} at {time.ctime()} ===\n"
            log.write(banner.encode())
            log.flush()
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node_dir,
                start_new_session=True,  # outlives the CLI; killpg reaches only this JVM
                umask=0o077,  # the broker's segments, checkpoints and logs: owner only
            )
        ticks = _start_ticks(process.pid) or ""
        write_private(self._pid_file(node.node_id), f"{process.pid} {ticks}\n")

    def wait_ready(self, state: ClusterState, node_ids: set[int]) -> None:
        """Block until every node in ``node_ids`` is an unfenced broker in the metadata."""
        deadline = time.monotonic() + self.settings.kafka_start_timeout_s
        while True:
            for node_id in sorted(node_ids):
                if not self.node_running(node_id):
                    raise BrokerStartError(
                        f"Kafka node {node_id} exited during start-up; last lines of "
                        f"{self.log_path(node_id)}:\n{self.tail_log(node_id)}"
                    )
            # Ask each node itself: the cluster's metadata can still list a node that was
            # just killed as unfenced until its session times out.
            if all(node_id in live_broker_ids(self.connection(node_id)) for node_id in node_ids):
                return
            if time.monotonic() > deadline:
                slowest = min(node_ids)
                raise BrokerStartError(
                    f"Kafka did not answer metadata requests at {state.bootstrap} within "
                    f"{self.settings.kafka_start_timeout_s:.0f}s; last lines of "
                    f"{self.log_path(slowest)}:\n{self.tail_log(slowest)}",
                    hint="raise ACTION_KAFKA_START_TIMEOUT_S on a slow machine",
                )
            time.sleep(0.5)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (no controlled shutdown)."""
        self.state().node(node_id)
        record = self._pid_record(node_id)
        if record is None or not _pid_running(*record):
            raise ClusterNotRunningError(f"node {node_id} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record[0], signal.SIGKILL)
        if self._wait_exit({node_id: record}, timeout_s=30.0):
            raise LocalKafkaError(f"node {node_id} (pid {record[0]}) survived SIGKILL")

    def start_node(self, node_id: int) -> None:
        """Start one stopped node again with its old identity, and wait until it serves."""
        state = self.state()
        node = state.node(node_id)
        if self.node_running(node_id):
            return
        ensure_port_free(node.port, f"broker port of node {node_id}")
        self._launch(state, node)
        self.wait_ready(state, {node_id})

    def down(self, timeout_s: float = 30.0) -> list[int]:
        """Stop every running node: SIGTERM (controlled shutdown), SIGKILL after ``timeout_s``.

        Returns the ids of the nodes that were running.
        """
        if not self.exists():
            return []
        running: dict[int, tuple[int, str | None]] = {}
        for node in self.state().nodes:
            record = self._pid_record(node.node_id)
            if record is not None and _pid_running(*record):
                running[node.node_id] = record
        for pid, _ in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        survivors = self._wait_exit(running, timeout_s)
        for pid, _ in survivors.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        leftover = self._wait_exit(survivors, 10.0)
        if leftover:
            pids = sorted(pid for pid, _ in leftover.values())
            raise LocalKafkaError(f"Kafka processes {pids} would not exit")
        for node_id in running:
            self._pid_file(node_id).unlink(missing_ok=True)
        return sorted(running)

    @staticmethod
    def _wait_exit(
        records: dict[int, tuple[int, str | None]], timeout_s: float
    ) -> dict[int, tuple[int, str | None]]:
        """Wait for the processes to exit; returns those still alive at the deadline."""
        deadline = time.monotonic() + timeout_s
        alive = dict(records)
        while alive and time.monotonic() < deadline:
            alive = {node: rec for node, rec in alive.items() if _pid_running(*rec)}
            if alive:
                time.sleep(0.2)
        return alive
