"""`churn …` in a process of its own, as an operator or a cron job runs it: its own
BentoML store and settings (`env`), which this test process cannot switch (BentoML reads
BENTOML_HOME once per process)."""

from __future__ import annotations

import subprocess
import sys

from core.settings import PROJECT_ROOT


def run_churn(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The command's outcome; the caller asserts on its exit code and output."""
    return subprocess.run(
        [sys.executable, "-c", "from cli import app; app()", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
