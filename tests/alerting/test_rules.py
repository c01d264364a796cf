"""The Prometheus rules, Alertmanager config and Grafana dashboards, checked by the real
tools (`promtool`, `amtool`) and against each other and the README."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT
from launchers.alertmanager_process import webhook_config
from tests.alerting.monitoring_files import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_DIR,
    RULE_FILES,
    dashboards,
    metric_names,
    panel_queries,
    rules,
    write_panel_rules,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
REQUIRED_ALERTS = {
    "HighLatency",
    "ErrorRate",
    "ModelDrift",
    "LowAccuracy",
    "PredictionLogBacklog",
    "CacheDown",
}


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_rule_files_and_prometheus_config_are_valid() -> None:
    run(PROMTOOL, "check", "rules", *map(str, RULE_FILES))
    run(PROMTOOL, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))


def test_every_alert_fires_when_it_should_and_stays_silent_otherwise() -> None:
    """`promtool test rules`: the unit tests in monitoring/prometheus/tests/."""
    out = run(PROMTOOL, "test", "rules", str(PROMETHEUS_DIR / "tests" / "alerts_test.yml"))
    assert "SUCCESS" in out


def test_the_rule_tests_cover_every_alert_both_ways() -> None:
    """Each alert has a case where it fires and one where it is expected silent."""
    import yaml

    cases = yaml.safe_load((PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text())["tests"]
    fired, silent = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    alerts = {rule.name for rule in rules() if rule.is_alert}
    assert fired == alerts and silent == alerts


def test_a_broken_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    """The unit tests are sensitive: ModelDrift on a moderate band fails them."""
    (tmp_path / "tests").mkdir()
    shutil.copy(PROMETHEUS_DIR / "tests" / "alerts_test.yml", tmp_path / "tests")
    text = (PROMETHEUS_DIR / "alerts.yml").read_text()
    broken = text.replace("(churn_drift_status) == 2)", "(churn_drift_status) >= 1)")
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "tests" / "alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "ModelDrift" in done.stdout + done.stderr


def test_the_design_alerts_exist_with_summary_runbook_and_dashboard() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    anchors = {_anchor(line) for line in readme.splitlines() if line.startswith("#")}
    boards = dashboards()
    alerts = [rule for rule in rules() if rule.is_alert]
    assert {rule.name for rule in alerts} >= REQUIRED_ALERTS
    for rule in alerts:
        annotations = rule.raw["annotations"]
        assert annotations["summary"], rule.name
        assert rule.raw["labels"]["severity"] in ("critical", "warning", "ticket")
        runbook = annotations["runbook_url"]
        assert runbook == f"README.md#{rule.name.lower()}", rule.name
        assert rule.name.lower() in anchors, f"no README section {rule.name}"
        found = re.fullmatch(r"/d/([\w-]+)/[\w-]+\?viewPanel=(\d+)", annotations["dashboard_url"])
        assert found, rule.name
        board = boards[found.group(1)]
        assert int(found.group(2)) in {panel["id"] for panel in board["panels"]}, rule.name


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_alertmanager_config_is_valid_and_routes_by_severity() -> None:
    run(AMTOOL, "check-config", str(ALERTMANAGER_CONFIG))
    expected = {
        "severity=critical": "on-call-pagerduty,ml-team-slack",
        "severity=warning": "ml-team-slack",
        "severity=ticket": "ml-team-email",
    }
    for labels, receivers in expected.items():
        route = ["config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}"]
        run(AMTOOL, *route, f"--verify.receivers={receivers}", labels, "alertname=X")


def test_the_test_alertmanager_config_keeps_the_routing(tmp_path: Path) -> None:
    """What the delivery test runs: the project's routes, grouping and inhibition, only
    webhooks instead of Slack/PagerDuty/e-mail and shorter group waits."""
    import yaml

    generated = webhook_config(ALERTMANAGER_CONFIG, "http://127.0.0.1:9", tmp_path / "am.yml")
    run(AMTOOL, "check-config", str(generated))
    real, test = (yaml.safe_load(p.read_text()) for p in (ALERTMANAGER_CONFIG, generated))
    assert test["route"]["routes"] == real["route"]["routes"]
    assert test["route"]["group_by"] == real["route"]["group_by"]
    assert test["route"]["repeat_interval"] == real["route"]["repeat_interval"]
    assert test["inhibit_rules"] == real["inhibit_rules"]
    assert [r["name"] for r in test["receivers"]] == [r["name"] for r in real["receivers"]]
    for receiver in test["receivers"]:
        assert receiver["webhook_configs"][0]["url"].endswith("/" + receiver["name"])


def test_alertmanager_reads_every_secret_from_a_file() -> None:
    text = ALERTMANAGER_CONFIG.read_text()
    for secret in ("slack_api_url_file", "routing_key_file", "smtp_auth_password_file"):
        assert secret in text
    for inline in ("api_url:", "routing_key:", "service_key:", "smtp_auth_password:"):
        assert inline not in text


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each panel's PromQL, as a recording rule of a generated file."""
    assert {"churn-api", "churn-model", "churn-infra"} == set(dashboards())
    path = write_panel_rules(tmp_path / "panels.yml")
    out = run(PROMTOOL, "check", "rules", str(path))
    assert f"{len(panel_queries())} rules found" in out


def test_a_query_that_does_not_parse_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups: [{name: x, rules: [{record: 'x:y', expr: 'sum(rate(a[5m])'}]}]")
    done = subprocess.run([PROMTOOL, "check", "rules", str(bad)], capture_output=True)
    assert done.returncode != 0


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{endpoint="x",le=~"1|2"}[5m]))', {"a_bucket"}),
        ("a / ignoring(kind) group_left sum(b) or c > bool 0.5", {"a", "b", "c"}),
        ("histogram_quantile(0.95, churn:x:p95_5m) and on (job) up", {"churn:x:p95_5m", "up"}),
        ('time() - m{check="drift"} offset 5m', {"m"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
