"""`action-broker kafka up | status | logs | down` through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker.localkafka.cluster import free_port, live_broker_ids


def _script() -> str:
    # The script installed beside this interpreter, whether or not the venv is activated.
    beside = Path(sys.executable).parent / "action-broker"
    path = str(beside) if beside.is_file() else shutil.which("action-broker")
    assert path, "the action-broker console script is not installed (pip install -e .)"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_script(), *args], capture_output=True, text=True, timeout=180)


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
    data_dir = tmp_path / "cluster"
    port = free_port()
    up = _run("kafka", "up", "--data-dir", str(data_dir), "--port", str(port))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"127.0.0.1:{port}"
    try:
        assert live_broker_ids(f"127.0.0.1:{port}") == {1}

        status = _run("kafka", "status", "--data-dir", str(data_dir), "-o", "json")
        assert status.returncode == 0, status.stderr
        (node,) = json.loads(status.stdout)
        assert node["state"] == "serving"
        assert node["address"] == f"127.0.0.1:{port}"

        logs = _run("kafka", "logs", "--data-dir", str(data_dir), "-n", "400")
        assert "Kafka Server started" in logs.stdout

        again = _run("kafka", "up", "--data-dir", str(data_dir))
        assert again.returncode == 0
        assert "already running" in again.stderr

        clash = _run("kafka", "up", "--data-dir", str(tmp_path / "other"), "--port", str(port))
        assert clash.returncode == 1
        assert f"port {port}" in clash.stderr
        assert "already in use" in clash.stderr
    finally:
        down = _run("kafka", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped node(s) [1]" in down.stderr
    assert _kafka_pids_under(data_dir) == []
    assert live_broker_ids(f"127.0.0.1:{port}", timeout_s=1) == set()

    after = _run("kafka", "status", "--data-dir", str(data_dir))
    assert after.returncode == 3, "LSB exit code for 'not running'"


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
