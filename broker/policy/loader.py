"""Load and validate a policy folder into a compiled :class:`PolicySet`.

Layout::

    <dir>/members.yaml        the member registry
    <dir>/mou/<member>.yaml   one MOU per member (the file name is the member id)

Every problem is collected, each naming the file, the path inside it, what was expected
and what was found, so ``action-policy check`` can list them all at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from broker.catalog import SchemaCatalog
from broker.errors import PolicyError
from broker.membership import REGISTRY_FILE, MemberRegistry
from broker.policy.engine import PolicySet
from broker.policy.envelope import EnvelopeError, TreatableField, treatable_fields
from broker.policy.model import (
    AcceptRule,
    Attribution,
    HssCondition,
    Mou,
    Parties,
    ShareRule,
    Treatment,
)
from broker.policy.treatments import GENERALIZERS
from broker.typed_yaml import read_model_file

_TEXT_TREATMENTS = {Treatment.HASH, Treatment.MASK, Treatment.ENCRYPT}


def policy_version(directory: Path) -> str:
    """Content hash of the member registry and the MOUs: equal folders give equal versions.
    (Test cases and schemas beside them do not change what is decided, so they do not count.)"""
    digest = hashlib.sha256()
    for path in sorted([directory / "members.yaml", *(directory / "mou").glob("*.yaml")]):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return "pv-" + digest.hexdigest()[:16]


def _check_mou(
    file: Path,
    mou: Mou,
    registry: MemberRegistry,
    fields_by_type: Mapping[str, Mapping[str, TreatableField]],
    conditioned: Mapping[str, frozenset[str]],
) -> list[str]:
    problems: list[str] = []
    members = {m.id: m for m in registry.members}
    if file.stem != mou.member:
        problems.append(
            f"{file}: member: the file of {mou.member!r} must be named {mou.member}.yaml"
        )
    if mou.member not in members:
        problems.append(f"{file}: member: {mou.member!r} is not in members.yaml")
    seen: set[str] = set()
    rules: list[tuple[str, int, ShareRule | AcceptRule, Parties | None]] = [
        ("shares", i, rule, rule.to) for i, rule in enumerate(mou.shares)
    ]
    rules += [("accepts", i, rule, rule.sources) for i, rule in enumerate(mou.accepts)]
    for section, i, rule, parties in rules:
        where = f"{file}: {section}.{i} ({rule.id})"
        if rule.id in seen:
            problems.append(f"{where}: rule id {rule.id!r} is used twice in this MOU")
        seen.add(rule.id)
        for named in parties.members if parties else ():
            if named not in members:
                problems.append(f"{where}: names unknown member {named!r}")
        problems += _conditions_apply(where, rule, conditioned)
        treatable: dict[str, str] = {}
        for event_type in rule.event_types:
            if event_type not in fields_by_type:
                known = ", ".join(sorted(fields_by_type))
                problems.append(f"{where}: unknown event type {event_type!r} (known: {known})")
            treatable.update({p: f.kind for p, f in fields_by_type.get(event_type, {}).items()})
        parents = {p.partition(".")[0] for p in treatable}
        for path, treatment in rule.fields.items():
            kind = treatable.get(path)
            if kind is None and path not in parents:
                problems.append(
                    f"{where}: fields.{path}: not a treatable field of "
                    f"{', '.join(rule.event_types)} (the envelope always travels; treatable: "
                    f"{', '.join(sorted(treatable))})"
                )
                continue
            problems += _applicability(where, path, kind, treatment)
    return problems


def conditioned_fields(catalog: SchemaCatalog) -> dict[str, frozenset[str]]:
    """Per event type, the top-level fields its records carry that rule conditions read."""
    read = {
        "purpose",
        "confidence",
        "hss",
        "product_categories",
        "product_category",
        "rights_holder",
    }
    return {
        t: frozenset(f["name"] for f in catalog.latest(t).schema["fields"]) & read
        for t in catalog.type_names
    }


def _conditions_apply(
    where: str, rule: ShareRule | AcceptRule, conditioned: Mapping[str, frozenset[str]]
) -> list[str]:
    """A condition on a field some of the rule's event types lack would never match their
    records (conditions fail closed): the rule must say what it allows for each type."""
    problems = []
    types = [t for t in rule.event_types if t in conditioned]
    with_purpose = [t for t in types if "purpose" in conditioned[t]]
    without = [t for t in types if "purpose" not in conditioned[t]]
    if rule.purposes is None and with_purpose:
        problems.append(
            f"{where}: purposes: required, as {', '.join(with_purpose)} records "
            "carry a purpose (say which purposes the rule allows)"
        )
    if rule.purposes is not None and without:
        problems.append(
            f"{where}: purposes: {', '.join(without)} records carry no purpose, so "
            "this rule would never match them: put them in a rule without "
            "purposes"
        )
    if isinstance(rule, ShareRule):
        checks = [
            ("min_confidence", bool(rule.when.min_confidence), {"confidence"}),
            ("hss", rule.when.hss is not HssCondition.ANY, {"hss"}),
            ("categories", bool(rule.when.categories), {"product_categories", "product_category"}),
            ("recipient_is_rights_holder", rule.when.recipient_is_rights_holder, {"rights_holder"}),
        ]
        for name, present, fields in checks:
            lacking = [t for t in types if not conditioned[t] & fields]
            if present and lacking:
                problems.append(
                    f"{where}: when.{name}: {', '.join(lacking)} records have no "
                    f"such field, so this rule would never match them: put them in "
                    f"a rule without that condition"
                )
    return problems


def _applicability(where: str, path: str, kind: str | None, treatment: Treatment) -> list[str]:
    if treatment in _TEXT_TREATMENTS and kind not in ("text", "text_list"):
        return [
            f"{where}: fields.{path}: {treatment.value} applies to text fields; "
            f"{path} is {kind or 'a record'} (use keep, drop or generalize)"
        ]
    if treatment is Treatment.GENERALIZE and path not in GENERALIZERS:
        return [
            f"{where}: fields.{path}: no general form is defined for {path} "
            f"(generalize applies to {', '.join(sorted(GENERALIZERS))})"
        ]
    return []


def load_policies(directory: Path, catalog: SchemaCatalog | None = None) -> PolicySet:
    """Validate and compile a policy folder; raises PolicyError listing every problem."""
    catalog = catalog or SchemaCatalog.load()
    problems: list[str] = []
    if not directory.is_dir():
        raise PolicyError(f"{directory}: not a folder of policies")
    registry = read_model_file(MemberRegistry, directory / REGISTRY_FILE, problems)
    fields_by_type: dict[str, dict[str, TreatableField]] = {}
    for type_name in catalog.type_names:
        try:
            fields_by_type[type_name] = treatable_fields(
                type_name, catalog.latest(type_name).schema
            )
        except EnvelopeError as exc:
            problems.append(f"schemas: {exc}")
    conditioned = conditioned_fields(catalog)
    mous: dict[str, Mou] = {}
    for file in sorted((directory / "mou").glob("*.yaml")):
        mou = read_model_file(Mou, file, problems)
        if mou is None:
            continue
        if registry is not None:
            problems += _check_mou(file, mou, registry, fields_by_type, conditioned)
        mous[mou.member] = mou
    if registry is None:
        raise PolicyError(f"{len(problems)} problem(s) in {directory}", problems=problems)
    policy_set = None
    if not problems:
        policy_set = PolicySet(registry, mous, fields_by_type, policy_version(directory))
        problems += _missing_encryption_keys(policy_set)
        problems += traceable_anonymity(policy_set)
    if problems or policy_set is None:
        raise PolicyError(f"{len(problems)} problem(s) in {directory}", problems=problems)
    return policy_set


def traceable_anonymity(policy_set: PolicySet) -> list[str]:
    """Anonymous shares a recipient could trace to their source: for each anonymous share
    rule, each event type and recipient it reaches, the members that could send that
    recipient the same label (``anonymous-<sector>``: members of the sector, with an
    anonymous rule reaching it for that type, the recipient itself aside). Fewer than two
    is a problem unless the rule acknowledges it (``anonymous_traceable: true``)."""
    senders: dict[tuple[str, str, str], set[str]] = {}  # (sector, type, recipient)
    for (source, event_type, recipient), candidates in policy_set.plans.items():
        if any(c.share.attribution is Attribution.ANONYMOUS for c in candidates):
            sector = policy_set.members[source].sector.value
            senders.setdefault((sector, event_type, recipient), set()).add(source)
    problems = set()
    for (source, event_type, recipient), candidates in policy_set.plans.items():
        sector = policy_set.members[source].sector.value
        for candidate in candidates:
            share = candidate.share
            if share.attribution is not Attribution.ANONYMOUS or share.anonymous_traceable:
                continue
            possible = senders.get((sector, event_type, recipient), set()) - {recipient}
            if len(possible) < 2:
                problems.add(
                    f"mou/{source}.yaml: {share.id}: {recipient} can trace anonymous-{sector} "
                    f"{event_type} records to {source}, the only {sector} member that could "
                    "send them: share named, or set anonymous_traceable: true to acknowledge"
                )
    return sorted(problems)


def _missing_encryption_keys(policy_set: PolicySet) -> list[str]:
    problems = set()
    for (_, _, recipient), candidates in policy_set.plans.items():
        for candidate in candidates:
            encrypted = [f.path for f in candidate.fields if f.treatment is Treatment.ENCRYPT]
            if encrypted and recipient not in policy_set.encryption_keys:
                problems.add(
                    f"members.yaml: {recipient}: rule {candidate.share.id} encrypts "
                    f"{', '.join(encrypted)} to it, but it has no encryption key"
                )
    return sorted(problems)
