"""``action-publish`` as a user runs it: ``--help`` of any subcommand needs no member or
key and lists the file columns; one-off events print with ``-o``; an empty input file, a
wrong CSV header and a retraction of an indicator the member never published are one
error each; ``template`` writes a file that imports as it is; ``--ids-out`` lists the ids
given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PUBLISH = Path(sys.executable).parent / "action-publish"


def _publish(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The console script, with no ACTION_* setting (no member, no key) inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTION_")} | extra_env
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


_DRY = ("--member", "platform-a", "--demo-keys", "--dry-run")


@pytest.mark.parametrize(
    ("command", "columns"),
    [
        ("indicators", ["seller.email", "seller.address.city", "product_categories"]),
        ("seizures", ["seized_on", "origin_economy", "msrp_usd_cents"]),
    ],
)
def test_help_lists_the_file_columns(command: str, columns: list[str]) -> None:
    done = _publish(command, "--help")
    assert done.returncode == 0, done.stderr
    for column in columns:
        assert column in done.stdout
    assert "JSON Lines" in done.stdout


@pytest.mark.parametrize("kind", ["indicators", "seizures"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_template_imports_as_it_is(tmp_path: Path, kind: str, fmt: str) -> None:
    example = tmp_path / f"example.{fmt}"
    written = _publish("template", kind, "--format", fmt, "--out", str(example))
    assert written.returncode == 0, written.stderr
    ids = tmp_path / "ids.txt"
    done = _publish(*_DRY, kind, str(example), "--ids-out", str(ids), "-o", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["accepted"], row["rejected"]) == (1, 0)
    (record_id,) = ids.read_text().split()
    assert len(record_id) == 36
    again = _publish("template", kind, "--out", str(example))
    assert again.returncode == 1
    assert f"error: {example} exists" in again.stderr


def test_a_wrong_header_is_one_error_before_anything_is_sent(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.csv"
    rows = "".join(f"shop{i}@x.example,FOOTWEAR,80\n" for i in range(50))
    alerts.write_text("seller.emial,product_categories,confidence\n" + rows)
    done = _publish(*_DRY, "indicators", str(alerts))
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1
    assert "unknown column(s) 'seller.emial'" in done.stderr
    assert "missing column(s) seller.*" in done.stderr
    assert "action-publish template indicators" in done.stderr
    assert not (tmp_path / "alerts.csv.rejects.jsonl").exists()
    alerts.write_text("seller.email,product_categories\n" + rows.replace(",80", ""))
    missing = _publish(*_DRY, "indicators", str(alerts))
    assert missing.returncode == 1
    assert "missing column(s) confidence" in missing.stderr


def test_a_retraction_of_an_indicator_never_published_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "platform-a.published-ids"
    ours, theirs = "7d5c0000-0000-4000-8000-000000000001", "7d5c0000-0000-4000-8000-000000000002"
    journal.write_text(ours + "\n")
    retract = ("retract", "--reason", "MISTAKE", "-o", "json")
    refused = _publish(*_DRY, *retract, theirs, ACTION_JOURNAL_FILE=str(journal))
    assert refused.returncode == 65
    assert f"error: platform-a has not published indicator {theirs}" in refused.stderr
    assert "--unlisted" in refused.stderr
    assert "Traceback" not in refused.stderr
    taken = _publish(*_DRY, *retract, ours, ACTION_JOURNAL_FILE=str(journal))
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)[0]["indicator_id"] == ours
    unlisted = _publish(*_DRY, *retract, "--unlisted", theirs, ACTION_JOURNAL_FILE=str(journal))
    assert unlisted.returncode == 0, unlisted.stderr
