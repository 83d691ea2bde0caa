"""Typed YAML files: strict, frozen pydantic models read from YAML, every problem named.

A problem names the file, the path inside it, what was expected and what was found, and
problems are collected (not raised one at a time) so a checker can list them all at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Frozen, and an unknown key is an error, so a typo never falls back to a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_problems(file: Path, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<top level>"
        found = "" if err["type"] == "missing" else f" (found {_describe(err.get('input'))})"
        problems.append(f"{file}: {where}: {err['msg']}{found}")
    return problems


def read_yaml(file: Path, problems: list[str]) -> Any:
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"{file}: cannot read: {exc.strerror}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problems.append(f"{file}{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
    return None


def read_model_file(model: type[M], file: Path, problems: list[str]) -> M | None:
    """Read a YAML file as ``model``; on failure append its problems and return None."""
    data = read_yaml(file, problems)
    if data is None:
        if not any(p.startswith(str(file)) for p in problems):
            problems.append(f"{file}: empty file, expected a {model.__name__}")
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_model_problems(file, exc))
        return None
