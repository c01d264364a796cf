"""The monitoring stack's files as data for the tests: the rules, the dashboards' panel
queries, and the metric names a PromQL expression reads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.settings import PROJECT_ROOT

PROMETHEUS_DIR = PROJECT_ROOT / "monitoring" / "prometheus"
ALERTMANAGER_CONFIG = PROJECT_ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
DASHBOARDS_DIR = PROJECT_ROOT / "monitoring" / "grafana" / "dashboards"
RULE_FILES = (PROMETHEUS_DIR / "alerts.yml", PROMETHEUS_DIR / "recording.yml")

PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself for every target."""

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, label names and
    grouping clauses left out)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


@dataclass(frozen=True)
class Rule:
    group: str
    name: str  # the alert's or the recorded series' name
    expr: str
    raw: dict[str, Any]

    @property
    def is_alert(self) -> bool:
        return "alert" in self.raw


def rules() -> list[Rule]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for raw in group["rules"]:
                name = raw.get("alert") or raw["record"]
                found.append(Rule(group["name"], name, raw["expr"], raw))
    return found


def dashboards() -> dict[str, dict[str, Any]]:
    """Dashboards by uid."""
    loaded = (json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json")))
    return {board["uid"]: board for board in loaded}


def panel_queries() -> list[tuple[str, int, str]]:
    """(dashboard uid, panel id, PromQL) of every panel target."""
    return [
        (uid, panel["id"], target["expr"])
        for uid, board in dashboards().items()
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def named_metrics() -> set[str]:
    """Every metric a rule or a dashboard reads."""
    exprs = [rule.expr for rule in rules()] + [expr for _, _, expr in panel_queries()]
    return set().union(*(metric_names(expr) for expr in exprs))


def recorded() -> set[str]:
    return {rule.name for rule in rules() if not rule.is_alert}


def write_panel_rules(path: Path) -> Path:
    """A rules file with one recording rule per panel query, for `promtool check rules`."""
    records = [
        {"record": f"panel:{uid.replace('-', '_')}:{pid}_{i}", "expr": expr}
        for i, (uid, pid, expr) in enumerate(panel_queries())
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    return path
