"""Expected failures of every command line, run as a user runs them (the installed console
scripts, in subprocesses): one ``error:`` line saying what went wrong, a ``hint:`` saying
what to do, a documented exit code, and never a traceback. (The failures that need a
running Kafka, a refused login or a foreign group, are in
tests/integration/test_members_sdk.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.store import FeedStore

BIN = Path(sys.executable).parent


def _run(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` with no ACTION_* setting inherited and an empty cache (no local cluster),
    in ``tmp_path``: whatever it would leave behind is checked there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTION_")}
    env["ACTION_CACHE_DIR"] = str(tmp_path / "cache")
    return subprocess.run(
        [str(BIN / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,
    )


def _one_error(done: subprocess.CompletedProcess[str], exit_code: int, *said: str) -> None:
    assert done.returncode == exit_code, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1, done.stderr
    for text in said:
        assert text in done.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_the_registry_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    done = _run(tmp_path, "action-broker", "registry", "--port", str(taken_port))
    _one_error(
        done,
        69,
        f"the schema registry cannot listen on 127.0.0.1:{taken_port}: Address already in use",
        "hint: pass another --port (0 picks a free one)",
    )


def test_the_workspace_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    store = tmp_path / "ipr.sqlite"
    FeedStore(store).close()
    done = _run(
        tmp_path,
        "action-feed",
        "--member",
        "ipr-center",
        "--store",
        str(store),
        "serve",
        "--port",
        str(taken_port),
    )
    _one_error(done, 69, f"workspace cannot listen on 127.0.0.1:{taken_port}")


@pytest.mark.parametrize(
    "command",
    [
        ("action-broker", "provision", "--name", "lab"),
        ("action-broker", "run", "--name", "lab"),
        ("action-broker", "audit", "verify", "--name", "lab"),
        ("action-feed", "--member", "ipr-center", "--name", "lab", "sync"),
        (
            *("action-publish", "--member", "platform-a", "--demo-keys", "--name", "lab"),
            *("sighting", "7d5c0000-0000-4000-8000-000000000000", "--kind", "SEEN_TOO"),
        ),
    ],
)
def test_a_local_cluster_by_a_name_that_is_not_running(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    done = _run(tmp_path, *command)
    _one_error(
        done,
        3,
        "error: no local cluster named 'lab'",
        "hint: start it with `action-broker kafka up --name lab`",
    )
    assert not list(tmp_path.glob("*.sqlite")), "a failed connection leaves no store behind"


@pytest.mark.parametrize(
    "command",
    [
        ("action-broker", "provision"),
        ("action-feed", "--member", "ipr-center", "sync"),
    ],
)
def test_no_kafka_at_all_names_every_way_to_give_one(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    done = _run(tmp_path, *command)
    _one_error(done, 3, "error: no Kafka to talk to", "--bootstrap-server or --name")


def test_an_address_and_a_name_together_are_refused(tmp_path: Path) -> None:
    done = _run(
        tmp_path, "action-broker", "provision", "--bootstrap-server", "k:9092", "--name", "lab"
    )
    _one_error(done, 1, "error: --bootstrap-server and --name both name a Kafka")


def test_kafka_hints_name_the_cluster_as_the_user_did(tmp_path: Path) -> None:
    done = _run(tmp_path, "action-broker", "kafka", "env", "--name", "lab")
    _one_error(done, 3, "hint: start it: action-broker kafka up --name lab")
    assert "--data-dir" not in done.stderr
    logs = _run(tmp_path, "action-broker", "kafka", "logs", "--name", "lab")
    _one_error(logs, 3, "`action-broker kafka up --name lab`")


def test_an_unknown_member_is_told_before_kafka(tmp_path: Path) -> None:
    done = _run(tmp_path, "action-feed", "--member", "nosuch", "sync")
    _one_error(done, 1, "'nosuch' is not a member of the consortium", "platform-a")
