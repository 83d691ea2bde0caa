"""The alert rules, their promtool unit tests and the dashboard match the router's metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry

from broker.metrics import RouterMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _exposed_names() -> set[str]:
    metrics = RouterMetrics(CollectorRegistry())
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        kind = family.type
        if kind == "counter":
            names.add(family.name + "_total")
        if kind == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
    return names


def test_alerts_and_dashboard_use_only_metrics_the_router_exposes() -> None:
    exposed = _exposed_names()
    for path in (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "grafana" / "action-router.json"):
        used = set(re.findall(r"action_router_[a-z_]+", path.read_text()))
        assert used, path
        assert used <= exposed, (path.name, used - exposed)


def test_dashboard_covers_rate_errors_duration_and_lag() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "action-router.json").read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for part in ("Rate", "Errors", "Duration", "Lag"):
        assert part in titles


def test_promtool_checks_the_config_and_passes_the_rule_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make promtool` installs Debian's prometheus package"
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "tests.yml"]):
        done = subprocess.run(
            [promtool, *args],
            cwd=DEPLOY / "prometheus",
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
