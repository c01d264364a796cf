"""One command for a load test: start the service, run Locust headless, stop the service.

    .venv/bin/python loadtests/run.py --rate 300 --duration 60s
    .venv/bin/python loadtests/run.py --url http://127.0.0.1:3000 --rate 50 --duration 10s

Without `--url` the service is started over the project's store (`bentos/`, or BENTOML_HOME),
training the demo model first when the store is empty, as `churn serve` does. It logs its
predictions to a throw-away SQLite file and spool so a load test leaves no rows behind, and
its rate limit is lifted: one load generator is one API key, which the default limit would
throttle. Locust's CSV and HTML reports and the service log go to `--results`. The exit code
is Locust's: 1 when an SLA failed (see `locustfile.py`).
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from core.settings import PROJECT_ROOT, use_project_bentoml_home

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_RESULTS = Path(__file__).with_name("results")
UNTHROTTLED = "100000000/minute"

app = typer.Typer(add_completion=False)


def ensure_model() -> Path:
    """The store in force; trains the demo model into it if it is empty (as `churn serve`)."""
    home = use_project_bentoml_home()
    from cli import ensure_demo_model

    ensure_demo_model()
    return home


def service_env(scratch: Path) -> dict[str, str]:
    """Settings for the service under test: no rate limit, a throw-away log and spool."""
    env = {
        "CHURN_RATE_LIMIT": UNTHROTTLED,
        "DATABASE_URL": f"sqlite:///{scratch / 'predictions.db'}",
        "CHURN_SPOOL_DIR": str(scratch / "spool"),
        "CHURN_DATA_DIR": str(scratch),  # its id-hash key file, if no secret is set
    }
    if "CHURN_ID_HASH_SECRET" not in os.environ:
        env["CHURN_ID_HASH_SECRET"] = secrets.token_hex(32)
    if os.environ.get("LOAD_API_KEY"):  # exercise authentication with the key we send
        env["CHURN_API_KEYS"] = os.environ["LOAD_API_KEY"]
    return env


@contextmanager
def local_service(results: Path) -> Iterator[str]:
    """The service over the project's store, on a free port, for the `with` block."""
    from launchers.server_process import start_server

    home = ensure_model()
    with tempfile.TemporaryDirectory(prefix="churn-load-") as scratch:
        typer.echo(f"starting the service over {home} (log: {results / 'service.log'})")
        server = start_server(home, results / "service.log", service_env(Path(scratch)))
        try:
            yield server.url
        finally:
            server.stop()


def locust_command(
    url: str, rate: float, duration: str, users: int, results: Path, processes: int
) -> list[str]:
    """Locust headless at `rate` req/s from `users` users, reports into `results`."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    command += ["--host", url, "--users", str(users), "--spawn-rate", str(users)]
    command += ["--run-time", duration, "--target-rate", str(rate), "--only-summary"]
    command += ["--csv", str(results / "locust"), "--html", str(results / "report.html")]
    if processes != 1:
        command += ["--processes", str(processes)]
    return command


def default_users(rate: float) -> int:
    """Enough users that each sends at most one request a second."""
    return max(64, math.ceil(rate))


@app.command()
def main(
    rate: Annotated[float, typer.Option(help="Offered requests per second (all users).")] = 300,
    duration: Annotated[str, typer.Option(help="Run time, Locust syntax: 60s, 5m.")] = "60s",
    users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Concurrent users, each offering rate/users req/s. Default: max(64, rate), "
            "one request a second each, so answers may take up to a second before the "
            "offered rate drops.",
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Target this running service instead of starting one.")
    ] = None,
    results: Annotated[Path, typer.Option(help="Folder for the reports.")] = DEFAULT_RESULTS,
    sla_p95_ms: Annotated[float, typer.Option(help="Largest p95 of /predict (ms).")] = 20,
    sla_p99_ms: Annotated[float, typer.Option(help="Largest p99 of /predict (ms).")] = 50,
    sla_fail_percent: Annotated[float, typer.Option(help="Largest failure share (%).")] = 0,
    repeat_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of exact repeats (cache hits).")
    ] = 0.2,
    processes: Annotated[
        int, typer.Option(help="Locust processes (-1: one per core); 1 is enough for FastHttp.")
    ] = 1,
) -> None:
    """Load-test the service and exit with Locust's code (1: an SLA failed)."""
    results.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LOAD_SLA_P95_MS": str(sla_p95_ms),
        "LOAD_SLA_P99_MS": str(sla_p99_ms),
        "LOAD_SLA_FAIL_PERCENT": str(sla_fail_percent),
        "LOAD_REPEAT_SHARE": str(repeat_share),
    }
    with local_service(results) if url is None else _given(url) as target:
        command = locust_command(
            target, rate, duration, users or default_users(rate), results, processes
        )
        typer.echo(f"running: {' '.join(command)}")
        code = subprocess.call(command, cwd=PROJECT_ROOT, env=env)
    typer.echo(f"reports in {results}; locust exit code {code}")
    raise typer.Exit(code)


@contextmanager
def _given(url: str) -> Iterator[str]:
    """An already running service: nothing to start or stop."""
    yield url.rstrip("/")


if __name__ == "__main__":
    app()
