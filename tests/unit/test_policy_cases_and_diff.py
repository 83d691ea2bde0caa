"""``action-policy test`` (cases beside the MOUs) and ``action-policy diff`` (impact preview)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.policy import cli
from broker.errors import PolicyError
from broker.policy.loader import load_policies
from broker.policy.model import Treatment
from broker.policy.testing import case_files, load_case_files, run_cases
from policies import POLICY_DIR

CASES = load_case_files(case_files(POLICY_DIR / "tests"))


def test_the_example_consortium_passes_its_own_cases() -> None:
    results = run_cases(load_policies(POLICY_DIR), CASES)
    failed = [(r.file, r.name, r.failures) for r in results if not r.passed]
    assert not failed
    assert len(results) >= 30


def test_the_shipped_cases_cover_every_rule_kind() -> None:
    cases = [case for _, test_file in CASES for case in test_file.cases]
    treatments = {t for case in cases for t in case.expect.fields.values()}
    assert treatments == set(Treatment), "a golden case for every field treatment"
    reasons = " | ".join(case.expect.reason or "" for case in cases)
    for rule_kind in (
        "no rule allows",  # deny by default: no share rule, no accept rule, sources
        "not among the share rule's purposes",
        "TLP:RED goes only to recipients the share rule names",
        "above the share rule's ceiling",
        "above what the recipient accepts",
        "below the minimum",
        "product category",
        "only health/safety/security",
        "does not share health/safety/security",
        "embargoed",
        "day limit",
        "expired at",
    ):
        assert rule_kind in reasons, rule_kind
    anonymous = [c for c in cases if c.expect.record.get("source_member", "").startswith("anon")]
    assert anonymous, "a golden case for anonymous attribution"
    assert any(c.expect.record.get("tlp") == "AMBER_STRICT" for c in cases)


def test_a_wrong_expectation_fails_and_says_why(policy_copy: Path) -> None:
    cases = policy_copy / "tests" / "tlp.yaml"
    text = cases.read_text()
    cases.write_text(
        text.replace(
            "rules: [pb.to-government, ipr.accepts-all]",
            "rules: [pb.to-government, ipr.something-else]",
        )
    )
    result = CliRunner().invoke(cli, ["test", str(policy_copy), "-o", "json"])
    assert result.exit_code == 4, result.output
    rows = json.loads(result.stdout)
    failed = [row for row in rows if row["result"] == "FAIL"]
    assert len(failed) == 1
    assert "decided by ['pb.to-government', 'ipr.accepts-all']" in failed[0]["detail"]
    assert "1 failed" in result.stderr


def test_a_policy_change_breaks_the_cases_that_pin_it(policy_copy: Path) -> None:
    mou = policy_copy / "mou" / "platform-b.yaml"
    mou.write_text(mou.read_text().replace("attribution: anonymous", "attribution: named"))
    results = run_cases(load_policies(policy_copy), CASES)
    failed = {r.name: r.failures for r in results if not r.passed}
    pinned = "an anonymous share names only the source's sector"
    assert list(failed) == [pinned]
    assert "expected 'anonymous-platform', was 'platform-b'" in failed[pinned][0]


def test_invalid_case_files_are_listed_with_file_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("at: 2026-11-20T12:00:00Z\ncases:\n  - name: x\n    recipient: Platform A\n")
    with pytest.raises(PolicyError) as info:
        load_case_files([bad])
    problems = "\n".join(info.value.problems)
    assert f"{bad}: cases.0.recipient: String should match pattern" in problems
    assert f"{bad}: cases.0.expect: Field required" in problems
    result = CliRunner().invoke(cli, ["test", str(POLICY_DIR), "--cases", str(bad)])
    assert result.exit_code == 1


def test_a_case_with_an_invalid_record_fails_rather_than_crashes(tmp_path: Path) -> None:
    case = tmp_path / "c.yaml"
    case.write_text(
        "at: 2026-11-20T12:00:00Z\ncases:\n  - name: broken\n    recipient: platform-b\n"
        "    record: {type: SellerIndicator, confidence: 500}\n    expect: {delivered: false}\n"
    )
    (result,) = run_cases(load_policies(POLICY_DIR), load_case_files([case]))
    assert not result.passed
    assert "the case's record is invalid" in result.failures[0]
    assert "confidence" in result.failures[0]


def _records_file(tmp_path: Path, *extra_lines: str) -> Path:
    # Two records from the shipped cases: a full platform-a indicator and a platform-b one.
    fields_file = next(f for p, f in CASES if p.name == "fields.yaml")
    conditions = next(f for p, f in CASES if p.name == "conditions.yaml")
    lines = [
        json.dumps(fields_file.records["full"], default=str),
        json.dumps(conditions.records["boots"], default=str),
        *extra_lines,
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_diff_previews_changed_recipients_and_fields(policy_copy: Path, tmp_path: Path) -> None:
    mou = policy_copy / "mou" / "platform-a.yaml"
    text = mou.read_text()
    text = text.replace("when: {min_confidence: 80}", "when: {min_confidence: 95}")  # payments
    text = text.replace("      seller.phone: hash\n", "      seller.phone: mask\n", 1)
    mou.write_text(text)
    records = _records_file(tmp_path)
    at = ["--at", "2026-11-20 12:00:00"]
    args = ["diff", str(POLICY_DIR), str(policy_copy), "--records", str(records), *at]
    result = CliRunner().invoke(cli, [*args, "-o", "json", "--exit-code"])
    assert result.exit_code == 4, result.output
    changes = json.loads(result.stdout)
    delivery = {
        (c["recipient"], c["before"], c["after"]) for c in changes if c["aspect"] == "delivery"
    }
    assert delivery == {
        ("payments-x", "delivered", "withheld"),
        ("payments-y", "delivered", "withheld"),
    }
    fields = {
        (c["recipient"], c["path"], c["before"], c["after"])
        for c in changes
        if c["aspect"] == "field"
    }
    assert fields == {("platform-b", "seller.phone", "hash", "mask")}  # platform-c: GREEN only
    assert all(c["record_id"].endswith("0301") for c in changes), "platform-b's record unchanged"
    assert "2 newly withheld, 1 field treatment changes" in result.stderr


def test_diff_of_equal_policies_is_empty_and_bad_lines_are_named(tmp_path: Path) -> None:
    records = _records_file(tmp_path, '{"type": "SellerIndicator", "confidence": 101}', "{oops")
    args = ["diff", str(POLICY_DIR), str(POLICY_DIR), "--records", str(records), "-o", "csv"]
    result = CliRunner().invoke(cli, [*args, "--exit-code"])
    assert result.exit_code == 1, "unreadable lines make the preview incomplete"
    header = "record_id,event_type,source,recipient,aspect,path,before,after,why"
    assert result.stdout.strip() == header
    assert f"{records}:3: invalid SellerIndicator" in result.stderr
    assert f"{records}:4: not JSON" in result.stderr
    assert "2 records, 14 recipient decisions" in result.stderr
