"""``action-policy``: validate MOUs and explain the engine's decisions."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from broker.cli.output import info, run_command_line
from broker.errors import ActionError, PolicyError
from broker.events import EVENT_TYPES
from broker.policy.decision import Decision
from broker.policy.loader import load_policies
from broker.policy.model import MemberRegistry, Mou
from broker.policy.treatments import MatchTokenKey
from policies import POLICY_DIR

# Explanations never need the real consortium secret: a token's shape is what is explained.
_EXPLAIN_KEY = MatchTokenKey(version=0, secret=b"action-policy explain: not the consortium secret")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Validate MOU policy folders and explain sharing decisions."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def check(directory: Path) -> None:
    """Validate a policy folder. Exit 0 when valid, 1 with every problem listed."""
    try:
        policy_set = load_policies(directory)
    except PolicyError as exc:
        for problem in exc.problems or [exc.message]:
            click.echo(problem)
        info(f"{len(exc.problems) or 1} problem(s) in {directory}")
        sys.exit(1)
    info(
        f"{directory}: valid; {len(policy_set.members)} members, {len(policy_set.mous)} MOUs, "
        f"{len(policy_set.plans)} (source, type, recipient) plans; version {policy_set.version}"
    )


def _read_record(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ActionError(f"{path}: cannot read a JSON record: {exc}") from exc
    event_type = data.pop("type", None) if isinstance(data, dict) else None
    if event_type not in EVENT_TYPES:
        raise ActionError(
            f'{path}: the record needs a "type" key naming its event type '
            f"({', '.join(sorted(EVENT_TYPES))})"
        )
    event = EVENT_TYPES[event_type].parse(data)
    return event_type, event.to_avro()


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
@click.option("--policies", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=POLICY_DIR, show_default="the example consortium")  # fmt: skip
@click.option("--record", "record_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='JSON event with a "type" key naming its event type.')  # fmt: skip
@click.option("--recipient", required=True, help="Member id of the recipient.")
@click.option("--at", "at", type=click.DateTime(), help="Evaluate as of this UTC time.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def explain(directory: Path, record_file: Path, recipient: str, at: dt.datetime | None,
            as_json: bool) -> None:  # fmt: skip
    """Why RECIPIENT would or would not get the record, and how each field is treated.
    Exit 0 when delivered, 4 when withheld."""
    policy_set = load_policies(directory)
    event_type, record = _read_record(record_file)
    now = at.replace(tzinfo=dt.UTC) if at else dt.datetime.now(dt.UTC)
    decision = policy_set.evaluate(record, event_type, recipient, now=now, match_key=_EXPLAIN_KEY)
    if as_json:
        click.echo(json.dumps({**decision.to_json(), "record": decision.record}, default=str))
    else:
        click.echo(_render(decision))
    sys.exit(0 if decision.delivered else 4)


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path),
                default=POLICY_DIR / "schema")  # fmt: skip
def schema(out_dir: Path) -> None:
    """Write the JSON Schemas of members.yaml and MOU files (for editors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, model in (("members", MemberRegistry), ("mou", Mou)):
        path = out_dir / f"{name}.schema.json"
        document = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                    **model.model_json_schema()}  # fmt: skip
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        info(f"wrote {path}")


def main() -> None:
    run_command_line(cli)
