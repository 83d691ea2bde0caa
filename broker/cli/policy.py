"""``action-policy``: validate MOUs and explain the engine's decisions."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from broker.console import (
    emit_rows,
    info,
    output_option,
    progress,
    quiet_option,
    run_command_line,
)
from broker.errors import ActionError, EventValidationError, PolicyError
from broker.events import parse_typed_event
from broker.membership import MemberRegistry
from broker.policy.decision import Decision
from broker.policy.engine import PolicySet
from broker.policy.impact import Change, policy_impact
from broker.policy.loader import load_policies
from broker.policy.model import Mou
from broker.policy.testing import (
    OFFLINE_MATCH_KEY,
    PolicyTestFile,
    case_files,
    load_case_files,
    run_cases,
)
from policies import POLICY_DIR

_policies_option = click.option(
    "--policies",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=POLICY_DIR,
    show_default="the example consortium",
)
_at_option = click.option(
    "--at", "at", type=click.DateTime(), help="Evaluate as of this UTC time (default: now)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@quiet_option
def cli() -> None:
    """Validate MOU policy folders and explain sharing decisions."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@output_option
def check(directory: Path, output_format: str) -> None:
    """Validate a policy folder. Exit 0 when valid, 1 with every problem listed (and
    fields to review, which no rule names, either way)."""
    try:
        policy_set = load_policies(directory)
    except PolicyError as exc:
        problems = exc.problems or [exc.message]
        emit_rows([{"problem": p} for p in problems], ["problem"], output_format)
        info(f"{len(problems)} problem(s) in {directory}")
        sys.exit(1)
    reviews = [
        f"review: {event_type}.{path} is named by no rule: each share rule's "
        "default_fields decides it (drop unless a rule says keep)"
        for event_type, path in policy_set.unnamed_fields()
    ]
    emit_rows([{"problem": r} for r in reviews], ["problem"], output_format)
    info(
        f"{directory}: valid; {len(policy_set.members)} members, {len(policy_set.mous)} MOUs, "
        f"{len(policy_set.plans)} (source, type, recipient) plans; version {policy_set.version}"
    )


def _read_record(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ActionError(f"{path}: cannot read a JSON record: {exc}") from exc
    event_type, event = parse_typed_event(data)
    return event_type, event.to_avro()


def _read_records(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The records of a JSON Lines file, and a problem line for each line that is not one."""
    records, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ActionError(f"{path}: cannot read: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event_type, event = parse_typed_event(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not JSON: {exc.msg}")
            continue
        except EventValidationError as exc:
            problems.append(f"{path}:{number}: {exc.message}")
            continue
        records.append((event_type, event.to_avro()))
    return records, problems


def _evaluation_time(at: dt.datetime | None) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at else dt.datetime.now(dt.UTC)


def _render(decision: Decision) -> str:
    lines = [
        f"{decision.event_type} {decision.record_id} from {decision.source} "
        f"to {decision.recipient}: {'DELIVERED' if decision.delivered else 'WITHHELD'}",
        f"policy version {decision.policy_version}; decision id {decision.decision_id}",
    ]
    lines += [f"  why: {reason}" for reason in decision.reasons]
    if decision.delivered:
        lines.append("  fields:")
        width = max(len(f.path) for f in decision.fields) if decision.fields else 0
        for f in decision.fields:
            lines.append(
                f"    {f.path:<{width}}  {f.treatment.value:<10}  by {', '.join(f.rule_ids)}"
            )
    return "\n".join(lines)


@cli.command()
@_policies_option
@click.option(
    "--record",
    "record_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON event with a "type" key naming its event type.',
)
@click.option("--recipient", required=True, help="Member id of the recipient.")
@click.option(
    "--indicator",
    "indicator_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="For a Retraction: the retracted indicator (JSON), to decide who received "
    "it as the router's ledger would.",
)
@_at_option
@output_option
@click.option("--json", "as_json", is_flag=True, hidden=True, help="The same as -o json.")
def explain(
    directory: Path,
    record_file: Path,
    recipient: str,
    indicator_file: Path | None,
    at: dt.datetime | None,
    output_format: str,
    as_json: bool,
) -> None:
    """Why RECIPIENT would or would not get the record, and how each field is treated.
    A Retraction is decided as the router decides it: it reaches exactly the members that
    received the indicator (give it with --indicator; without, RECIPIENT is assumed to
    have received it, named). Exit 0 when delivered, 4 when withheld."""
    policy_set = load_policies(directory)
    event_type, record = _read_record(record_file)
    now = _evaluation_time(at)
    note = None
    if event_type == "Retraction":
        received, note = _received_indicator(policy_set, record, recipient, indicator_file, now)
        decisions = policy_set.retraction_decisions(
            record, received, now=now, match_key=OFFLINE_MATCH_KEY
        )
        decision = (
            next(d for d in decisions if d.recipient == recipient)
            if decisions
            else (
                policy_set.evaluate(
                    record, event_type, recipient, now=now, match_key=OFFLINE_MATCH_KEY
                )
            )
        )
    else:
        decision = policy_set.evaluate(
            record, event_type, recipient, now=now, match_key=OFFLINE_MATCH_KEY
        )
    if as_json or output_format == "json":
        click.echo(
            json.dumps({**decision.to_json(), "record": decision.record, "note": note}, default=str)
        )
    elif output_format == "csv":  # one row per field, each with the decision
        columns = ["recipient", "delivered", "path", "treatment", "rule_ids"]
        rows = [
            {
                "recipient": decision.recipient,
                "delivered": decision.delivered,
                "path": f.path,
                "treatment": f.treatment.value,
                "rule_ids": " ".join(f.rule_ids),
            }
            for f in decision.fields
        ] or [{"recipient": decision.recipient, "delivered": decision.delivered}]
        emit_rows(rows, columns, output_format)
    else:
        click.echo(_render(decision) + (f"\n  note: {note}" if note else ""))
    sys.exit(0 if decision.delivered else 4)


def _received_indicator(
    policy_set: PolicySet,
    retraction: dict[str, Any],
    recipient: str,
    indicator_file: Path | None,
    now: dt.datetime,
) -> tuple[dict[str, str], str]:
    """Who received the retracted indicator (member -> source as delivered), and a note
    saying how that was decided."""
    ledger = (
        "a retraction reaches exactly the members that received the indicator (the "
        "router's delivery ledger), attributed as the indicator was; today's rules "
        "decide only its treatable fields"
    )
    if indicator_file is None:
        return (
            {recipient: str(retraction["source_member"])},
            f"{ledger}. Assumed: {recipient} received it, named (give --indicator to "
            "decide that too)",
        )
    event_type, indicator = _read_record(indicator_file)
    if event_type != "SellerIndicator" or str(indicator.get("indicator_id")) != str(
        retraction["indicator_id"]
    ):
        raise ActionError(
            f"{indicator_file}: not the indicator the retraction names "
            f"({retraction['indicator_id']})"
        )
    received = {
        d.recipient: str(d.record["source_member"])
        for d in policy_set.evaluate_all(
            indicator, event_type, now=now, match_key=OFFLINE_MATCH_KEY
        )
        if d.delivered and d.record is not None
    }
    return received, f"{ledger}. Under these policies the indicator reached: " + (
        ", ".join(sorted(received)) or "nobody"
    )


#: The policy file kinds, as named in policies/schema/<name>.schema.json.
SCHEMA_MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("members", MemberRegistry),
    ("mou", Mou),
    ("policy-tests", PolicyTestFile),
)

_DIFF_COLUMNS = (
    "record_id",
    "event_type",
    "source",
    "recipient",
    "aspect",
    "path",
    "before",
    "after",
    "why",
)


@cli.command()
@click.argument("old_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--records",
    "records_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON Lines, one event per line with a "type" key.',
)
@_at_option
@output_option
@click.option("--exit-code", is_flag=True, help="Exit 4 when anything would change.")
def diff(
    old_dir: Path,
    new_dir: Path,
    records_file: Path,
    at: dt.datetime | None,
    output_format: str,
    exit_code: bool,
) -> None:
    """Impact preview: which recipients and fields would change from OLD_DIR's policies to
    NEW_DIR's for the sample records. Exit 1 when a record line is unreadable (each is
    listed), 4 with --exit-code when anything changes, else 0."""
    old, new = load_policies(old_dir), load_policies(new_dir)
    records, problems = _read_records(records_file)
    for problem in problems:
        info(problem)
    changes: list[Change] = []
    compared = 0
    impact = policy_impact(old, new, records, now=_evaluation_time(at), match_key=OFFLINE_MATCH_KEY)
    with progress("comparing", len(records)) as done:
        for index, (count, found) in enumerate(impact, start=1):
            compared += count
            changes += found
            done(index)
    emit_rows([c.to_row() for c in changes], _DIFF_COLUMNS, output_format)
    by_aspect = {a: sum(c.aspect == a for c in changes) for a in ("delivery", "field")}
    newly = sum(c.aspect == "delivery" and c.after == "delivered" for c in changes)
    info(
        f"{old.version} -> {new.version}: {len(records)} records, {compared} recipient "
        f"decisions; {newly} newly delivered, {by_aspect['delivery'] - newly} newly withheld, "
        f"{by_aspect['field']} field treatment changes"
        + (f"; {len(problems)} unreadable line(s)" if problems else "")
    )
    if problems:
        sys.exit(1)
    if exit_code and changes:
        sys.exit(4)


_TEST_COLUMNS = ("result", "file", "case", "recipient", "detail")


@cli.command("test")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--cases",
    "cases_path",
    type=click.Path(exists=True, path_type=Path),
    help="A test file or folder (default: DIRECTORY/tests).",
)
@output_option
@click.option("-v", "--verbose", is_flag=True, help="List passing cases too.")
def test_command(
    directory: Path, cases_path: Path | None, output_format: str, verbose: bool
) -> None:
    """Run the policy test cases kept beside the MOUs against DIRECTORY's policies.
    Exit 0 when every case passes, 4 when any fails, 1 when the policies or cases are
    invalid."""
    policy_set = load_policies(directory)
    files = load_case_files(case_files(cases_path or directory / "tests"))
    results = run_cases(policy_set, files)
    rows = [
        {
            "result": "PASS" if r.passed else "FAIL",
            "file": r.file,
            "case": r.name,
            "recipient": r.recipient,
            "detail": "; ".join(r.failures),
        }
        for r in results
        if verbose or not r.passed or output_format != "table"
    ]
    if rows:
        emit_rows(rows, _TEST_COLUMNS, output_format)
    failed = sum(not r.passed for r in results)
    info(
        f"{policy_set.version}: {len(results)} cases, {len(results) - failed} passed, "
        f"{failed} failed"
    )
    if failed:
        sys.exit(4)


@cli.command()
@click.argument(
    "out_dir", type=click.Path(file_okay=False, path_type=Path), default=POLICY_DIR / "schema"
)
def schema(out_dir: Path) -> None:
    """Write the JSON Schemas of members.yaml, MOU and test-case files (for editors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, model in SCHEMA_MODELS:
        path = out_dir / f"{name}.schema.json"
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **model.model_json_schema(),
        }
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        info(f"wrote {path}")


def main() -> None:
    run_command_line(cli)
