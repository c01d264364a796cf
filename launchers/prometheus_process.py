"""A real, throw-away Prometheus (Debian's binary): a free port, its own folder, a config
generated from the project's own (monitoring/prometheus/) with the targets and timings of
the test or demo that starts it.

`fast_rules` rewrites the real alert rules with short `for` durations, so a test sees an
alert fire in seconds while evaluating exactly the project's expressions.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.settings import PROJECT_ROOT
from launchers.server_process import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMETHEUS_DIR = PROJECT_ROOT / "monitoring" / "prometheus"


def fast_rules(source: Path, target: Path, hold: str = "2s") -> Path:
    """`source`'s rules with every alert's `for` set to `hold`; nothing else changed."""
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = hold
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


class PrometheusServer:
    """`start()`, `alerts()`, `query()`, `stop()`; the config is the project's with
    `targets` scraped and alerts sent to `alertmanager` (host:port)."""

    def __init__(
        self,
        targets: list[str],
        alertmanager: str | None = None,
        *,
        interval: str = "1s",
        hold: str = "2s",
        folder: Path | None = None,
        binary: str = PROMETHEUS,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self._owns_dir = folder is None
        self.dir = folder or Path(tempfile.mkdtemp(prefix="churn-prometheus-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self._write_config(targets, alertmanager, interval, hold)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(
        self, targets: list[str], alertmanager: str | None, interval: str, hold: str
    ) -> Path:
        config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = interval
        config["global"]["evaluation_interval"] = interval
        config["rule_files"] = [
            str(fast_rules(PROMETHEUS_DIR / name, self.dir / name, hold))
            for name in config["rule_files"]
        ]
        config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
        if alertmanager is None:
            config.pop("alerting", None)
        else:
            config["alerting"]["alertmanagers"] = [
                {"static_configs": [{"targets": [alertmanager]}]}
            ]
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until `/-/ready` answers 200."""
        command = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Active alerts go to Alertmanager every second (default 1m): a stronger
            # test of its de-duplication, and no wait for the first send.
            "--rules.alert.resend-delay=1s",
        ]
        with (self.dir / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.url, self.process, self.dir / "prometheus.log", timeout)

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now (`/api/v1/alerts`)."""
        found: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v1/alerts").json()["data"][
            "alerts"
        ]
        return found

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(
            f"{self.url}/api/v1/query", params={"query": expr}
        ).json()["data"]["result"]
        return result

    def stop(self) -> None:
        """Terminate, and remove the folder if it was a temporary one."""
        terminate(self.process)
        self.process = None
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until `url/-/ready` answers 200 (Prometheus and Alertmanager both have it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{url} not ready in {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
