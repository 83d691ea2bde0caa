"""Policy test cases kept beside the MOUs (``<policies>/tests/*.yaml``), like ``opa test``.

A case names a record, a recipient and what the engine must decide: delivered or not, by
which rules, how chosen fields are treated, which values the delivered record carries, or
why it is withheld. A file can define named records once and vary them per case::

    at: 2026-11-20T12:00:00Z          # evaluation time of every case (a case may override)
    records:
      shoes:
        type: SellerIndicator
        indicator_id: 7d5c...
        ...
    cases:
      - name: platforms see the e-mail only as a match token
        record: shoes
        with: {confidence: 95}        # deep-merged into the named record
        recipient: platform-b
        expect:
          delivered: true
          rules: [pa.to-platforms, pb.accepts-from-platforms-and-government]
          fields: {seller.email: hash}
          record: {source_member: platform-a}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from broker.errors import EventValidationError, PolicyError
from broker.events import parse_typed_event
from broker.match_tokens import MatchTokenKey
from broker.membership import MemberId
from broker.policy.decision import Decision
from broker.policy.engine import PolicySet
from broker.policy.model import Treatment
from broker.typed_yaml import read_model_file

#: Offline previews (explain, diff, test) never need the consortium secret: what they show
#: is which fields become match tokens, not the tokens' values.
OFFLINE_MATCH_KEY = MatchTokenKey(version=0, secret=b"action-policy offline: not the secret")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Expectation(_Strict):
    delivered: bool
    rules: tuple[str, ...] | None = Field(
        default=None, description="rule ids that decided, in order; omit to not check"
    )
    fields: dict[str, Treatment] = Field(
        default_factory=dict, description="expected treatment of each listed field"
    )
    record: dict[str, Any] = Field(
        default_factory=dict,
        description="expected values in the delivered record, by dotted path",
    )
    reason: str | None = Field(
        default=None, description="text that one of the decision's reasons must contain"
    )


class PolicyCase(_Strict):
    name: str = Field(min_length=1)
    record: str | dict[str, Any] = Field(
        description="the name of a record in this file's records, or a record with a type key"
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    recipient: MemberId
    at: dt.datetime | None = None
    expect: Expectation


class PolicyTestFile(_Strict):
    at: dt.datetime = Field(description="evaluation time of every case that gives none")
    records: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cases: tuple[PolicyCase, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    name: str
    recipient: str
    failures: tuple[str, ...]
    decision: Decision | None

    @property
    def passed(self) -> bool:
        return not self.failures


def load_case_files(paths: list[Path]) -> list[tuple[Path, PolicyTestFile]]:
    """Parse every test file; PolicyError lists each problem with file and path."""
    problems: list[str] = []
    loaded = []
    for path in paths:
        parsed = read_model_file(PolicyTestFile, path, problems)
        if parsed is not None:
            loaded.append((path, parsed))
    if problems:
        raise PolicyError(f"{len(problems)} problem(s) in the policy test cases", problems=problems)
    return loaded


def case_files(location: Path) -> list[Path]:
    """The test files at ``location``: a file, or every ``*.yaml`` in a folder."""
    if location.is_file():
        return [location]
    files = sorted(location.glob("*.yaml"))
    if not files:
        raise PolicyError(
            f"{location}: no policy test cases (*.yaml) found",
            problems=[f"{location}: expected a test file or a folder holding *.yaml test files"],
        )
    return files


def run_cases(policy_set: PolicySet, files: list[tuple[Path, PolicyTestFile]]) -> list[CaseResult]:
    return [
        _run_case(policy_set, path, test_file, case)
        for path, test_file in files
        for case in test_file.cases
    ]


def _run_case(
    policy_set: PolicySet, path: Path, test_file: PolicyTestFile, case: PolicyCase
) -> CaseResult:
    def result(*failures: str, decision: Decision | None = None) -> CaseResult:
        return CaseResult(str(path), case.name, case.recipient, failures, decision)

    if isinstance(case.record, str):
        if case.record not in test_file.records:
            return result(f"no record named {case.record!r} in this file's records")
        data = deep_merge(test_file.records[case.record], case.with_)
    else:
        data = deep_merge(case.record, case.with_)
    try:
        event_type, event = parse_typed_event(data)
    except EventValidationError as exc:
        return result(f"the case's record is invalid: {exc.message}")
    if case.recipient not in policy_set.members:
        return result(f"recipient {case.recipient!r} is not in members.yaml")
    now = _utc(case.at or test_file.at)
    decision = policy_set.evaluate(
        event.to_avro(), event_type, case.recipient, now=now, match_key=OFFLINE_MATCH_KEY
    )
    return result(*expectation_failures(case.expect, decision), decision=decision)


def expectation_failures(expect: Expectation, decision: Decision) -> list[str]:
    """What in ``decision`` differs from ``expect``; empty when it meets it."""
    failures = []
    outcome = "delivered" if decision.delivered else "withheld"
    if expect.delivered != decision.delivered:
        wanted = "delivered" if expect.delivered else "withheld"
        failures.append(f"expected {wanted}, was {outcome}: {'; '.join(decision.reasons)}")
    if expect.rules is not None and tuple(expect.rules) != decision.rule_ids:
        failures.append(
            f"expected rules {list(expect.rules)}, decided by {list(decision.rule_ids)}"
        )
    for path, wanted_treatment in expect.fields.items():
        actual = decision.treatment_of(path)
        if actual is not wanted_treatment:
            failures.append(
                f"field {path}: expected {wanted_treatment.value}, "
                f"was {actual.value if actual else 'not delivered'}"
            )
    for path, wanted_value in expect.record.items():
        found, value = _at_path(decision.record, path)
        if not found or _plain(value) != _plain(wanted_value):
            shown = repr(value) if found else "absent"
            failures.append(f"record {path}: expected {wanted_value!r}, was {shown}")
    if expect.reason is not None and not any(expect.reason in r for r in decision.reasons):
        failures.append(f"no reason contains {expect.reason!r}: {list(decision.reasons)}")
    return failures


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: nested mappings merge, anything else replaces."""
    merged = dict(base)
    for key, value in changes.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _at_path(record: Mapping[str, Any] | None, path: str) -> tuple[bool, Any]:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _plain(value: Any) -> Any:
    """Comparable form: YAML gives datetimes and lists where a record may hold the same."""
    if isinstance(value, dt.datetime):
        return _utc(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
