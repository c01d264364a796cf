"""A real, throw-away Alertmanager (Debian's `prometheus-alertmanager`): a free port, its
own folder, no cluster, and the project's config (monitoring/alertmanager/) with every
receiver's integrations replaced by a webhook to a local receiver.

Routing, grouping, de-duplication and inhibition are the project's own; only where a
notification goes (`<webhook>/<receiver name>`) and how long Alertmanager waits before
grouping are the test's.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.settings import PROJECT_ROOT
from launchers.prometheus_process import terminate, wait_ready
from launchers.server_process import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
ALERTMANAGER_CONFIG = PROJECT_ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"


def webhook_config(
    source: Path, webhook: str, target: Path, group_wait: str = "1s", group_interval: str = "2s"
) -> Path:
    """`source` with each receiver sending to `webhook/<receiver>`, no secrets needed (the
    global Slack and SMTP settings, which point at secret files, are dropped) and the
    top-level group timings shortened; `repeat_interval` stays as configured."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["global"] = {"resolve_timeout": config["global"].get("resolve_timeout", "5m")}
    for receiver in config["receivers"]:
        name = receiver["name"]
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": f"{webhook}/{name}", "send_resolved": False}]
    config["route"]["group_wait"] = group_wait
    config["route"]["group_interval"] = group_interval
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


class AlertmanagerServer:
    """`start()`, `alerts()`, `stop()` over `webhook_config(ALERTMANAGER_CONFIG, webhook)`."""

    def __init__(
        self, webhook: str, folder: Path | None = None, binary: str = ALERTMANAGER
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self._owns_dir = folder is None
        self.dir = folder or Path(tempfile.mkdtemp(prefix="churn-alertmanager-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = webhook_config(ALERTMANAGER_CONFIG, webhook, self.dir / "alertmanager.yml")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30.0) -> None:
        """Start (clustering off: one instance) and wait until `/-/ready` answers 200."""
        command = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]
        with (self.dir / "alertmanager.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.url, self.process, self.dir / "alertmanager.log", timeout)

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts it holds now (`/api/v2/alerts`)."""
        found: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v2/alerts").json()
        return found

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
