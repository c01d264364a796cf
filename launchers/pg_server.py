"""A throw-away PostgreSQL server for tests: real binaries, a temp folder, a free port.

PostgreSQL refuses to run as root. Under root (containers, CI) the data folder is given
to the `postgres` user and initdb/pg_ctl run through `runuser -u postgres --`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from launchers.server_process import free_port

SERVICE_USER = "postgres"


def find_bindir() -> Path | None:
    """pg_config --bindir, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidate = Path(result.stdout.strip())
        if result.returncode == 0 and (candidate / "pg_ctl").exists():
            return candidate
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()]
    if versions:
        return max(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


class PostgresServer:
    """initdb on first `start()`; `stop()` and `start()` again keep data and port."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found (pg_config, /usr/lib/postgresql)")
        self.bindir = found
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="pgtest-", dir="/tmp"))
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self.port = free_port()
        self.running = False
        if self.as_root:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(self.base, user.pw_uid, user.pw_gid)
            os.chmod(self.base, 0o700)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        result = subprocess.run(command, cwd=self.base, capture_output=True, text=True)
        if check and result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}\n{log[-2000:]}")
        return result

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _options(self) -> str:
        # The socket goes to our folder (no /var/run/postgresql needed); durability
        # settings off: a test server only has to survive a clean stop.
        return (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )

    def _pg_ctl_start(self, check: bool) -> bool:
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data),
            "-l", str(self.logfile), "-o", self._options(), check=check,
        )  # fmt: skip
        return result.returncode == 0

    def start(self) -> None:
        if self.running:
            return
        if self.data.exists():
            self._pg_ctl_start(check=True)  # a restart keeps its port: clients reconnect
        else:
            self._initdb()
            for attempt in range(3):
                if self._pg_ctl_start(check=attempt == 2):
                    break
                self.port = free_port()  # lost the port to another process: try another
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, as in an outage."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
            self.running = False

    def cleanup(self) -> None:
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data), check=False)
            self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    def new_database(self) -> str:
        """Create an empty database on this server; its URL."""
        import uuid

        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"
