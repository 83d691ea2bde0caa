"""The member registry and MOU files (data) shipped with the package."""

from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parent
