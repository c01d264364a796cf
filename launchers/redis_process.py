"""A real, throw-away `redis-server`: no persistence, a free port, its own folder.

The tests start it to check what Redis does (and kill, freeze and restart it for fault
tests); the benchmarks start it as the product's cache and rate-limit store.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from launchers.server_process import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """`start()`, `kill()` (SIGKILL, for fault tests), `restart()` on the same port, `stop()`."""

    def __init__(self, binary: str = REDIS_SERVER, folder: Path | None = None) -> None:
        self.binary = binary
        self.port = free_port()
        self._owns_dir = folder is None  # a folder we were given (and its log) is kept
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.dir = folder or Path(tempfile.mkdtemp(prefix="churn-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it answers PING."""
        command = [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log")),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything, like a crashed host."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # in case it was frozen
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers (a hung host)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill if running, then start again on the same port (empty: nothing is saved)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Terminate, and remove the folder if it was a temporary one."""
        if self.process is not None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def flushall(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            reply = conn.recv(64)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")
