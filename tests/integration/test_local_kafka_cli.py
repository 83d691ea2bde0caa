"""`action-broker kafka up | status | logs | down` through the installed console script."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaProducer

from broker.connection import KafkaConnection
from broker.kafka_target import kafka_target
from broker.localkafka import LocalCluster
from broker.localkafka.cluster import free_port, live_broker_ids
from broker.localkafka.tls import create_local_pki
from broker.member_settings import MemberSettings
from broker.provision import admin_client, password_file
from broker.settings import load_settings


def _script() -> str:
    # The script installed beside this interpreter, whether or not the venv is activated.
    beside = Path(sys.executable).parent / "action-broker"
    path = str(beside) if beside.is_file() else shutil.which("action-broker")
    assert path, "the action-broker console script is not installed (pip install -e .)"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_script(), *args], capture_output=True, text=True, timeout=180)


def _assert_env_reaches_the_cluster(data_dir: Path, tmp_path: Path) -> None:
    """``kafka env`` prints what a member's SDK needs to reach the local cluster: its
    exports make MemberSettings connect, as the admin or as a provisioned user."""
    printed = _run("kafka", "env", "--data-dir", str(data_dir))
    assert printed.returncode == 0, printed.stderr
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in printed.stdout.splitlines()
    )
    assert exported["ACTION_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    settings = MemberSettings(
        kafka_bootstrap=exported["ACTION_KAFKA_BOOTSTRAP"],
        kafka_security_protocol=exported["ACTION_KAFKA_SECURITY_PROTOCOL"],
        kafka_sasl_username=exported["ACTION_KAFKA_SASL_USERNAME"],
        kafka_sasl_password=exported["ACTION_KAFKA_SASL_PASSWORD"],
        kafka_ssl_cafile=Path(exported["ACTION_KAFKA_SSL_CAFILE"]),
    )
    connection = kafka_target(None, None, settings)
    assert live_broker_ids(connection) == {1}
    credentials = tmp_path / "credentials"
    password_file(credentials, "platform-a").parent.mkdir(parents=True, exist_ok=True)
    password_file(credentials, "platform-a").write_text("pa-secret\n")
    as_member = subprocess.run(
        [_script(), "kafka", "env", "--data-dir", str(data_dir), "--user", "platform-a"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ACTION_CREDENTIALS_DIR": str(credentials)},
    )
    assert as_member.returncode == 0, as_member.stderr
    assert "export ACTION_KAFKA_SASL_USERNAME=platform-a" in as_member.stdout
    assert "export ACTION_KAFKA_SASL_PASSWORD=pa-secret" in as_member.stdout


def _kafka_pids_under(folder: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(folder).encode() in cmdline and b"kafka.Kafka" in cmdline:
            pids.append(int(proc.name))
    return pids


def test_up_status_logs_down_leaves_nothing_running(tmp_path: Path) -> None:
    """The whole CLI life cycle, on a cluster with the TLS listener (SASL_SSL): only a
    client that trusts the local CA and checks the host name gets in."""
    data_dir = tmp_path / "cluster"
    port = free_port()
    up = _run("kafka", "up", "--tls", "--data-dir", str(data_dir), "--port", str(port))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"127.0.0.1:{port}"
    admin = LocalCluster(data_dir, load_settings()).connection()
    try:
        assert admin.security_protocol == "SASL_SSL"
        assert live_broker_ids(admin) == {1}
        _assert_tls_is_required(admin, tmp_path)
        state = json.loads(_run("kafka", "state", "--data-dir", str(data_dir)).stdout)
        assert state["ssl_cafile"] == admin.ssl_cafile
        assert "password" not in json.dumps(
            {k: v for k, v in state.items() if k != "sasl_password_file"}
        )

        status = _run("kafka", "status", "--data-dir", str(data_dir), "-o", "json")
        assert status.returncode == 0, status.stderr
        (node,) = json.loads(status.stdout)
        assert node["state"] == "serving"
        assert node["address"] == f"127.0.0.1:{port}"

        _assert_env_reaches_the_cluster(data_dir, tmp_path)

        logs = _run("kafka", "logs", "--data-dir", str(data_dir), "-n", "400")
        assert "Kafka Server started" in logs.stdout
        _assert_private_to_its_user(data_dir)

        again = _run("kafka", "up", "--data-dir", str(data_dir))
        assert again.returncode == 0
        assert "already running" in again.stderr

        clash = _run("kafka", "up", "--data-dir", str(tmp_path / "other"), "--port", str(port))
        assert clash.returncode == 69, "EX_UNAVAILABLE, as for every server on a taken port"
        assert f"port {port}" in clash.stderr
        assert "already in use" in clash.stderr
    finally:
        down = _run("kafka", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped node(s) [1]" in down.stderr
    assert _kafka_pids_under(data_dir) == []
    assert live_broker_ids(admin, timeout_s=1) == set()

    after = _run("kafka", "status", "--data-dir", str(data_dir))
    assert after.returncode == 3, "LSB exit code for 'not running'"


def _assert_private_to_its_user(data_dir: Path) -> None:
    """Records, dead letters, credentials and the logs quoting them: no other local user
    may read them. The folder is 0700, and nothing in it but the CA's public certificate
    is open to group or others."""
    assert data_dir.stat().st_mode & 0o777 == 0o700
    paths = [data_dir, *data_dir.rglob("*")]
    assert any(p.name.endswith(".log") and "data" in p.parts for p in paths), "segments exist"
    exposed = [
        f"{p} {p.stat().st_mode & 0o777:o}"
        for p in paths
        if p.stat().st_mode & 0o077 and p.name != "ca.pem"
    ]
    assert exposed == []


def _assert_tls_is_required(admin: KafkaConnection, tmp_path: Path) -> None:
    """The TLS listener carries data for a client that trusts its CA; a client that trusts
    another CA, or speaks plaintext SASL to it, is refused."""
    from kafka.admin import NewTopic

    with admin_client(admin, "tls-test") as client:
        client.create_topics([NewTopic("tls-check", 1, 1)], timeout_ms=30_000)
    producer = KafkaProducer(**admin.client_config(), acks="all")
    producer.send("tls-check", b"over tls").get(timeout=30)
    producer.close()
    stranger = create_local_pki(tmp_path / "other-ca")
    for wrong in (
        dataclasses.replace(admin, ssl_cafile=str(stranger.ca_cert)),
        dataclasses.replace(admin, security_protocol="SASL_PLAINTEXT", ssl_cafile=None),
    ):
        assert live_broker_ids(wrong, timeout_s=3) == set(), wrong


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "never"
    result = _run("kafka", "up", "--dry-run", "--data-dir", str(data_dir))
    assert result.returncode == 0
    assert "would start" in result.stderr
    assert not data_dir.exists()


@pytest.mark.parametrize("args", [["--help"], ["kafka", "--help"], ["kafka", "up", "--help"]])
def test_help_works(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 0
    assert "Usage:" in result.stdout
