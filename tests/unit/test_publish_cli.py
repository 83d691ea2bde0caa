"""``action-publish`` as a user runs it: ``--help`` of any subcommand needs no member or
key; one-off events print with ``-o``; an empty input file is an error, not a silent 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PUBLISH = Path(sys.executable).parent / "action-publish"


def _publish(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script, with no ACTION_* setting (no member, no key) inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTION_")}
    return subprocess.run(
        [str(PUBLISH), *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.mark.parametrize("command", ["indicators", "seizures", "retract", "sighting", "action"])
def test_help_works_without_a_member_or_a_key(command: str) -> None:
    done = _publish(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout


def test_a_one_off_event_prints_as_asked(tmp_path: Path) -> None:
    args = ["--member", "platform-a", "--demo-keys", "--dry-run"]
    done = _publish(
        *args,
        "sighting",
        "7d5c0000-0000-4000-8000-000000000000",
        "--kind",
        "SEEN_TOO",
        "-o",
        "json",
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["event_type"] == "Sighting"
    assert row["indicator_id"] == "7d5c0000-0000-4000-8000-000000000000"
    assert row["published"] is False


def test_an_empty_input_file_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "alerts.csv"
    empty.write_text("\n")
    done = _publish("--member", "platform-a", "--demo-keys", "--dry-run", "indicators", str(empty))
    assert done.returncode == 1
    assert f"error: {empty} holds no records" in done.stderr
