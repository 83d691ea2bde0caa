"""``action-feed`` as a user runs it (the installed console script): a store that does
not exist is an error, not an empty answer; sellers list every identifier in JSON and CSV
and a summary in a table; times are ISO 8601."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.feed_stores import Deliver, free_port
from tests.unit.test_workspace import correlated_store

FEED_CLI = Path(sys.executable).parent / "action-feed"


def _feed(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(FEED_CLI), "--member", "ipr-center", "--store", str(store), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_mistyped_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "ipr.sqlte"
    for command in (["sellers"], ["export", "--format", "csv", "--out", str(tmp_path / "x")]):
        done = _feed(typo, *command)
        assert done.returncode == 1, done.stderr
        assert f"error: no store at {typo}" in done.stderr
        assert "hint: run `action-feed sync` first" in done.stderr
        assert "Traceback" not in done.stderr
    assert not typo.exists()


def test_sellers_list_every_identifier_in_json_and_a_summary_in_a_table(
    tmp_path: Path, deliver: Deliver
) -> None:
    store = tmp_path / "ipr.sqlite"
    correlated_store(store, deliver, "ipr-center").close()
    done = _feed(store, "sellers", "-o", "json")
    assert done.returncode == 0, done.stderr
    (seller,) = json.loads(done.stdout)
    identifiers = seller["identifiers"].split("; ")
    assert len(identifiers) == 5, "every identifier, not the first four"
    assert "phone=+8613800138000" in identifiers
    assert seller["first_seen"] == "2026-11-20T08:00:00Z"
    table = _feed(store, "sellers")
    assert "and 1 more (-o json)" in table.stdout


def test_a_kafka_that_does_not_answer_is_one_line_and_exit_69(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ACTION_")},
        "ACTION_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    }
    command = [
        str(FEED_CLI),
        "--member",
        "ipr-center",
        "--bootstrap-server",
        f"127.0.0.1:{free_port()}",
        "--store",
        str(tmp_path / "s.sqlite"),
        "sync",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 69, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "cannot reach Kafka at 127.0.0.1:" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["tail", "sync", "sellers", "export", "audit-sync", "serve"])
def test_help_works_without_a_member(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTION_")}
    done = subprocess.run(
        [str(FEED_CLI), command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
