from __future__ import annotations

import base64
import dataclasses
import json
import socket
from pathlib import Path

import pytest

from broker.errors import (
    ClusterNotRunningError,
    KafkaDownloadError,
    PortInUseError,
    ToolNotFoundError,
)
from broker.localkafka import ClusterState, LocalCluster, NodeState
from broker.localkafka.cluster import ensure_port_free, new_cluster_id, server_properties
from broker.localkafka.distribution import fetch_from_maven, resolve_distribution
from broker.localkafka.tls import TlsFiles, create_local_pki
from broker.settings import load_settings


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def _state(nodes: int) -> ClusterState:
    return ClusterState(
        cluster_id="abc",
        kafka_version="4.4.0",
        nodes=tuple(NodeState(i, 9000 + i, 9100 + i) for i in range(1, nodes + 1)),
    )


def _server_props(state: ClusterState, node: int = 0) -> dict[str, str]:
    tls = TlsFiles(Path("/tls"))
    return _props(server_properties(state, state.nodes[node], Path("/data"), "s3cret", tls))


def test_single_node_properties() -> None:
    state = _state(1)
    props = _server_props(state)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101"
    assert props["listeners"] == "CLIENT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["auto.create.topics.enable"] == "false"


def test_three_node_properties_are_durable() -> None:
    state = _state(3)
    props = _server_props(state, 1)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    )
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


def test_clusters_are_secured_by_default() -> None:
    """SCRAM for clients and brokers, the StandardAuthorizer denying what no ACL allows,
    and only the admin as super user."""
    props = _server_props(_state(1))
    assert (
        props["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert 'password="s3cret"' in props["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert not any(key.startswith("listener.name.client.ssl.") for key in props)


def test_tls_cluster_uses_a_pem_key_store_with_hostname_checks() -> None:
    state = dataclasses.replace(_state(1), security_protocol="SASL_SSL")
    props = _server_props(state)
    assert props["listener.security.protocol.map"].startswith("CLIENT:SASL_SSL,")
    assert props["listener.name.client.ssl.keystore.type"] == "PEM"
    assert props["listener.name.client.ssl.keystore.location"] == "/tls/broker.pem"
    assert props["listener.name.client.ssl.truststore.location"] == "/tls/ca.pem"
    assert props["listener.name.client.ssl.endpoint.identification.algorithm"] == "https"


def test_local_pki_issues_a_broker_certificate_for_localhost(tmp_path: Path) -> None:
    from cryptography import x509

    files = create_local_pki(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    chain = x509.load_pem_x509_certificates(files.server_pem.read_bytes())
    assert files.server_pem.stat().st_mode & 0o077 == 0, "the key file is private"
    assert b"PRIVATE KEY" in files.server_pem.read_bytes()
    leaf = chain[0]
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_clusters_from_before_security_stay_open() -> None:
    old = json.loads(_state(1).to_json())
    del old["security_protocol"]
    assert ClusterState.from_json(json.dumps(old)).security_protocol == "PLAINTEXT"


def test_state_round_trips_and_names_bootstrap() -> None:
    state = _state(3)
    assert ClusterState.from_json(state.to_json()) == state
    assert state.bootstrap == "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
    with pytest.raises(Exception, match="no node 7"):
        state.node(7)


def test_cluster_id_is_kafka_shaped() -> None:
    for _ in range(200):
        cid = new_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_taken_port_is_reported() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port}"):
            ensure_port_free(port, "test")


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    with pytest.raises(ToolNotFoundError, match="Java"):
        fetch_from_maven("4.4.0", tmp_path / "cache", pom=pom)


def test_missing_pom_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(KafkaDownloadError, match="missing"):
        fetch_from_maven("4.4.0", tmp_path / "cache", pom=tmp_path / "absent.xml")


def test_complete_cache_is_reused_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn: must not be needed
    cached = tmp_path / "cache" / "kafka-9.9.9"
    (cached / "libs").mkdir(parents=True)
    (cached / ".complete").write_text("9.9.9\n")
    dist = fetch_from_maven("9.9.9", tmp_path / "cache", pom=tmp_path / "absent.xml")
    assert dist.libs_dir == cached / "libs"
    assert dist.classpath.endswith("libs/*")


def test_kafka_home_must_hold_the_server_jar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="does not look like a Kafka installation"):
        resolve_distribution(load_settings())
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.1.0.jar").write_bytes(b"")
    dist = resolve_distribution(load_settings())
    assert (dist.version, dist.source) == ("4.1.0", "KAFKA_HOME")


def test_status_without_cluster_says_not_running(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "none", load_settings())
    assert not cluster.exists()
    assert cluster.down() == []
    with pytest.raises(ClusterNotRunningError) as excinfo:
        cluster.status()
    assert excinfo.value.exit_code == 3
    assert "kafka up" in str(excinfo.value)
