"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from policies import POLICY_DIR


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the example consortium's policy folder (with its test cases)."""
    copy = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copy
