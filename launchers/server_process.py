"""Run `bentoml serve service:ChurnService` as a child process on a free port, and turn
customer tables into request bodies for it.

Used by the serving tests and the benchmarks, which need the real server, not an
in-process stand-in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from core.pipeline.extras import ExtraColumn
from core.schema import COLUMN_KINDS, ID_COLUMN, ColumnKind, CustomerData
from core.settings import PROJECT_ROOT

STARTUP_SECONDS = 120


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def private_home(bentoml_home: Path, log_path: Path) -> Path:
    """A BentoML home of this server's own whose `models` and `bentos` are `bentoml_home`'s.

    BentoML keeps its Prometheus multiprocess files in `$BENTOML_HOME/prometheus_multiproc_dir`
    and empties that folder when a server starts: two servers over one home wipe each
    other's `/metrics`. Sharing only the model store keeps every server's metrics its own.
    """
    store = bentoml_home / "models"
    store.mkdir(parents=True, exist_ok=True)
    home = log_path.with_name(f"{log_path.stem}-bentoml-home")
    home.mkdir(parents=True, exist_ok=True)
    link = home / "models"
    if link.is_symlink() and link.resolve() != store.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(store.resolve(), target_is_directory=True)
    return home


def start_server(
    bentoml_home: Path,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    service: str = "service:ChurnService",
    wait_for: str = "/readyz",
    project: Path = PROJECT_ROOT,
    own_home: bool = True,
) -> ServerProcess:
    """Start `service` over `bentoml_home` and wait until `wait_for` answers 200
    (`/livez` for a service that is up but, by design, not ready). `project`: another
    checkout to serve, with its own `.venv` (a benchmark's previous version). `own_home`:
    serve from `private_home` (False for a Bento served by tag: BentoML does not find a
    Bento through a linked store; serve it alone over its home instead)."""
    port = free_port()
    home = private_home(bentoml_home, log_path) if own_home else bentoml_home
    env = {**os.environ, "BENTOML_HOME": str(home), **(extra_env or {})}
    bentoml = (
        Path(sys.executable).with_name("bentoml")
        if project == PROJECT_ROOT
        else project / ".venv" / "bin" / "bentoml"
    )
    command = [str(bentoml), "serve", service, "--port", str(port)]
    command += ["--host", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}{wait_for}", timeout=1).status_code == 200:
                return ServerProcess(process, url, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server not ready in {STARTUP_SECONDS}s: {log_path.read_text()[-3000:]}")


def request_bodies(frame: pd.DataFrame, extras: Sequence[ExtraColumn] = ()) -> list[dict[str, Any]]:
    """Rows of a typed customer table as `/predict` JSON bodies (missing fields left out)."""
    bodies = []
    for row in frame.to_dict(orient="records"):
        body: dict[str, Any] = {ID_COLUMN: str(row[ID_COLUMN])}
        for name, kind in COLUMN_KINDS.items():
            value = row.get(name)
            if value is None or pd.isna(value):
                continue
            if kind is ColumnKind.BOOLEAN:
                value = bool(value)
            elif kind is ColumnKind.DATE:
                value = pd.Timestamp(value).date().isoformat()
            elif kind is ColumnKind.NUMBER:
                value = float(value)
                whole = CustomerData.model_fields[name].annotation in (int, int | None)
                value = int(value) if whole else value
            body[name] = value
        extra = {
            c.name: (float(row[c.name]) if c.kind == "number" else str(row[c.name]))
            for c in extras
            if not pd.isna(row[c.name])
        }
        if extra:
            body["extra"] = extra
        bodies.append(body)
    return bodies
