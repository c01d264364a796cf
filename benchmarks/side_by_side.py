"""The product, the original design's FastAPI path and a bare BentoML floor, side by side.

    .venv/bin/python benchmarks/side_by_side.py --seconds 15
    .venv/bin/python benchmarks/side_by_side.py --quick          # smoke run, ~5 min

One run, one machine, one after another, same request bodies, same load generators:

1. **product**: ``service:ChurnService`` as deployed: prediction log in a temp SQLite
   database (``DATABASE_URL``), cache on (a throw-away ``redis-server`` if the binary exists,
   else the in-process cache), API keys (requests carry ``X-API-Key``) and a rate limit too
   high to interfere;
2. **peer**: ``benchmarks/peer_fastapi.py`` under uvicorn: the design's per-request path
   (pandas, ``predict_proba``, synchronous SQLite insert; Redis by customer id if present);
3. **floor**: ``benchmarks/floor_service.py``: BentoML validating the body and answering a
   constant.

Every server gets the same ``--workers`` and the whole machine (nothing is pinned; the load
generators share the cores). Scenarios, each ``--seconds`` long:

- closed loop, wrk at 1, 16 and 64 connections (``benchmarks/predict.lua`` cycling through
  the bodies); every request's customer id is made unique, so the product's cache misses
  (its measured hit share is printed); plus one run at 64 connections over 200 repeated
  bodies, where the caches hit;
- open loop at 100, 300 and 600 requests/s (``benchmarks/open_loop.py``: fixed arrival
  schedule, latency from the scheduled send time);
- ``/predict/batch`` with 100 and 1,000 customers, one client.

The model: ``churn_model:latest`` in ``--bentoml-home`` (default: the project's ``bentos/``);
if the store is empty a demo model is trained into it first, as ``churn serve`` does.
Needs ``wrk`` (installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import psutil
from open_loop import OpenLoopResult, run_open_loop, split_bodies

from core.settings import PROJECT_ROOT, Settings, bentoml_home
from launchers.redis_process import RedisServer
from launchers.server_process import free_port, request_bodies, start_server
from training.generate import generate_customers

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "predict.lua"
VENV_BIN = Path(sys.executable).parent
API_KEY = "side-by-side-" + secrets.token_hex(8)
HIT_BODIES = 200
VERSIONED = ("bentoml", "fastapi", "uvicorn", "xgboost", "pandas", "pydantic", "sqlalchemy")
STARTUP_SECONDS = 180


# --- Prerequisites ---------------------------------------------------------------------


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is not installed: run `sudo apt-get install -y wrk`, then retry")
    print("wrk is missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=True)
    return shutil.which("wrk") or sys.exit("apt-get did not install wrk")


def stored_models(home: Path) -> list[str]:
    """Tags in the store, newest first (through `churn models`, to keep bentoml out of
    this process)."""
    env = {**os.environ, "BENTOML_HOME": str(home)}
    out = subprocess.run(
        [str(VENV_BIN / "churn"), "models"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def ensure_model(home: Path, scratch: Path) -> str:
    """The tag of the model to serve; trains the demo model (`churn serve`'s) if none."""
    tags = stored_models(home)
    if tags:
        return tags[0]
    from cli import DEMO_ROWS, DEMO_TRIALS

    print(f"no model in {home}: training the demo model first (a few minutes)", flush=True)
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
        "CHURN_REPORTS_DIR": str(scratch / "reports"),
    }
    data = scratch / "demo_customers.csv"
    churn = str(VENV_BIN / "churn")
    subprocess.run(
        [churn, "generate", "--rows", str(DEMO_ROWS), "--seed", "42", "--out", str(data)],
        env=env,
        check=True,
    )
    subprocess.run(
        [churn, "train", "--data", str(data), "--trials", str(DEMO_TRIALS)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return stored_models(home)[0]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def product_revision(project: Path = PROJECT_ROOT) -> str:
    """The commit measured, and which product files differ from it (others may be editing)."""
    git = ["git", "-C", str(project)]
    try:
        head = subprocess.run(
            [*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [
                *git,
                "status",
                "--porcelain",
                "--",
                "service.py",
                "core",
                "serving",
                "monitoring",
                "training",
                "requirements.txt",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    files = [line[3:] for line in changed if line.strip()]
    return f"{head[:70]}" + (f" + uncommitted changes in {', '.join(files)}" if files else "")


def make_bodies(count: int, seed: int) -> list[str]:
    """Distinct synthetic customers as compact JSON lines, ``customer_id`` first."""
    frame = generate_customers(count, seed).drop(
        columns=["churned", "true_churn_probability"], errors="ignore"
    )
    return [json.dumps(body, separators=(",", ":")) for body in request_bodies(frame)]


# --- Servers ---------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop: Callable[[], None]
    api_key: str | None
    notes: str = ""

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_mib(self) -> tuple[float, float]:
        """(whole process tree, largest process) resident memory in MiB."""
        sizes = []
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                sizes.append(proc.memory_info().rss / 2**20)
        return (sum(sizes), max(sizes)) if sizes else (0.0, 0.0)

    def cpu_seconds(self) -> float:
        """User + system CPU of the live process tree so far."""
        total = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total


def bentoml_overrides(service_name: str, workers: int) -> str:
    return json.dumps({"services": {service_name: {"workers": workers}}})


def start_product(
    home: Path,
    scratch: Path,
    workers: int,
    redis_url: str | None,
    name: str = "product",
    project: Path = PROJECT_ROOT,
) -> Server:
    """The product as deployed; `project`: another checkout (`--previous`) with its own venv."""
    env = {
        "DATABASE_URL": f"sqlite:///{scratch / f'{name}_predictions.db'}",
        "CHURN_API_KEYS": API_KEY,
        "CHURN_RATE_LIMIT": "100000000/minute",
        "CHURN_SPOOL_DIR": str(scratch / f"{name}_spool"),
        "CHURN_ID_HASH_SECRET": secrets.token_hex(16),
        "BENTOML_CONFIG_OVERRIDES": bentoml_overrides("churn_service", workers),
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    log = scratch / f"{name}.log"
    server = start_server(home, log, env, service="service:ChurnService", project=project)
    cache = "Redis" if redis_url else "in-process cache"
    python = Path(sys.executable) if project == PROJECT_ROOT else project / ".venv/bin/python"
    where = f", HTTP stack: {http_stack(python)}"
    if project != PROJECT_ROOT:
        where += f", code: {product_revision(project)}"
    return Server(
        name,
        server.url,
        server.process,
        log,
        server.stop,
        API_KEY,
        f"log: SQLite, cache: {cache}, API key, rate limit 1e8/min{where}",
    )


def http_stack(python: Path) -> str:
    """Which of uvicorn's compiled parts an environment has (uvicorn picks them if present)."""
    probe = (
        "import importlib.util as u; "
        "print(*(bool(u.find_spec(m)) for m in ('httptools', 'uvloop')))"
    )
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout
    httptools, uvloop = (word == "True" for word in found.split())
    return f"httptools {'yes' if httptools else 'no'}, uvloop {'yes' if uvloop else 'no'}"


def start_floor(home: Path, scratch: Path, workers: int) -> Server:
    env = {"BENTOML_CONFIG_OVERRIDES": bentoml_overrides("floor_service", workers)}
    log = scratch / "floor.log"
    server = start_server(home, log, env, service="benchmarks.floor_service:FloorService")
    return Server("floor", server.url, server.process, log, server.stop, None, "constant answer")


def start_peer(home: Path, scratch: Path, workers: int, redis_url: str | None) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "PEER_DATABASE_URL": f"sqlite:///{scratch / 'peer_predictions.db'}",
        "PEER_API_KEYS": API_KEY,
    }
    env.pop("PEER_REDIS_URL", None)
    if redis_url:
        env["PEER_REDIS_URL"] = redis_url
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.peer_fastapi:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    log = scratch / "peer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"peer exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"peer not ready: {log.read_text()[-3000:]}")
        time.sleep(0.3)
    cache = "Redis by customer_id" if redis_url else "no cache"
    return Server(
        "peer",
        url,
        process,
        log,
        stop,
        API_KEY,
        f"uvicorn, sync SQLite insert per request, {cache}, API key",
    )


# --- Measurements ----------------------------------------------------------------------


@dataclass
class Closed:
    clients: int
    label: str
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_ms_per_request: float
    hit_share: float | None = None  # product only: cache hits / look-ups
    mean_batch: float | None = None  # product only: adaptive batch size


@dataclass
class Batch:
    rows: int
    requests: int
    p50_ms: float
    p95_ms: float
    server_p50_ms: float | None
    errors: int


@dataclass
class Results:
    server: Server
    closed: list[Closed] = field(default_factory=list)
    open: list[OpenLoopResult] = field(default_factory=list)
    batch: list[Batch] = field(default_factory=list)
    rss_after_64: tuple[float, float] = (0.0, 0.0)
    load: list[float] = field(default_factory=list)
    sample: list[float] = field(default_factory=list)


def metric_sum(text: str, name: str, label: str = "") -> float:
    """Sum of a Prometheus series' samples (optionally only lines containing `label`)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def product_counters(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        "batch_sum": metric_sum(text, "churn_adaptive_batch_size_sum"),
        "batch_count": metric_sum(text, "churn_adaptive_batch_size_count"),
        "hit": metric_sum(text, "churn_cache_requests_total", 'result="hit"'),
        "miss": metric_sum(text, "churn_cache_requests_total", 'result="miss"'),
    }


def run_wrk(
    wrk: str,
    server: Server,
    clients: int,
    seconds: float,
    bodies_file: Path,
    tag: str | None,
    label: str,
) -> Closed:
    threads = 1 if clients == 1 else 2
    wait_idle(server)
    command = [
        wrk,
        f"-t{threads}",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        f"{server.url}/predict",
        "--",
        str(bodies_file),
        server.api_key or "-",
        tag or "-",
    ]
    product = server.name == "product"
    before = product_counters(server.url) if product else None
    cpu_before = server.cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = server.cpu_seconds() - cpu_before
    after = product_counters(server.url) if product else None
    line = next(x for x in out.splitlines() if x.startswith("wrk-result "))
    r = json.loads(line.removeprefix("wrk-result "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    result = Closed(
        clients=clients,
        label=label,
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p95_ms=r["p95_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        errors=errors,
        requests=r["requests"],
        cpu_ms_per_request=cpu * 1000 / max(r["requests"], 1),
    )
    if before and after:
        lookups = (after["hit"] - before["hit"]) + (after["miss"] - before["miss"])
        result.hit_share = (after["hit"] - before["hit"]) / lookups if lookups else None
        calls = after["batch_count"] - before["batch_count"]
        result.mean_batch = (after["batch_sum"] - before["batch_sum"]) / calls if calls else None
    return result


def run_batches(
    server: Server, lines: Sequence[str], rows: int, seconds: float, min_requests: int, tag: str
) -> Batch:
    """Sequential `/predict/batch` calls of `rows` unique customers for `seconds`."""
    parts = split_bodies([line.encode() for line in lines])
    headers = {"Content-Type": "application/json"}
    if server.api_key:
        headers["X-API-Key"] = server.api_key
    client_ms: list[float] = []
    server_ms: list[float] = []
    errors = 0
    started = time.perf_counter()
    offset = 0
    # TCP_NODELAY: httpx writes headers and a large body separately, and Nagle's algorithm
    # against the server's delayed ACK would add ~40 ms to every call, whatever the server.
    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(timeout=600, transport=nodelay) as client:
        while True:
            elapsed = time.perf_counter() - started
            enough = len(client_ms) >= min_requests or (client_ms and elapsed > 4 * seconds)
            if enough and elapsed >= seconds:
                break
            k = len(client_ms)
            chunk = [parts[(offset + j) % len(parts)] for j in range(rows)]
            offset += rows
            body = b"[" + b",".join(h + f"-{tag}-{k}".encode() + t for h, t in chunk) + b"]"
            sent = time.perf_counter()
            response = client.post(f"{server.url}/predict/batch", content=body, headers=headers)
            client_ms.append((time.perf_counter() - sent) * 1000)
            if response.status_code != 200:
                errors += 1
                continue
            processing = response.json().get("processing_time_ms")
            if processing is not None:
                server_ms.append(float(processing))
    return Batch(
        rows=rows,
        requests=len(client_ms),
        p50_ms=float(np.percentile(client_ms, 50)),
        p95_ms=float(np.percentile(client_ms, 95)),
        server_p50_ms=float(np.percentile(server_ms, 50)) if server_ms else None,
        errors=errors,
    )


def wait_idle(server: Server, limit_seconds: float = 180, busy_share: float = 0.15) -> float:
    """Wait until the server has drained what an earlier scenario left queued (its process
    tree uses less than `busy_share` of a core over one second); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_seconds:
        before = server.cpu_seconds()
        time.sleep(1.0)
        if server.cpu_seconds() - before < busy_share:
            break
    return time.monotonic() - started


def sample_probabilities(server: Server, lines: Sequence[str]) -> list[float]:
    """churn_probability of the first customers, to check the peer scores like the product."""
    headers = {"Content-Type": "application/json"}
    if server.api_key:
        headers["X-API-Key"] = server.api_key
    values = []
    for line in lines:
        response = httpx.post(f"{server.url}/predict", content=line, headers=headers, timeout=30)
        response.raise_for_status()
        values.append(float(response.json()["churn_probability"]))
    return values


def measure(
    server: Server, args: argparse.Namespace, wrk: str, lines: Sequence[str], files: dict[str, Path]
) -> Results:
    """Every scenario against one running server."""
    results = Results(server)
    results.load.append(os.getloadavg()[0])
    tag = f"{server.name[:2]}{int(time.time()) % 100000}"
    print(f"\n== {server.name} at {server.url} ({server.notes})", flush=True)
    results.sample = sample_probabilities(server, lines[:20])
    run_wrk(wrk, server, 16, args.warmup, files["all"], f"{tag}w", "warm-up")
    for clients in args.clients:
        result = run_wrk(wrk, server, clients, args.seconds, files["all"], f"{tag}c{clients}", "")
        results.closed.append(result)
        print(f"   closed {clients:>3} clients: {result.rps:7.0f} req/s", flush=True)
        if clients == 64:
            results.rss_after_64 = server.rss_mib()
    # The same bodies over and over: the product's (and the peer's Redis) cache answers.
    hits_file = files["hits"]
    for line in hits_file.read_text().splitlines():  # first pass fills the caches
        httpx.post(
            f"{server.url}/predict",
            content=line,
            headers={"Content-Type": "application/json", "X-API-Key": server.api_key or ""},
            timeout=30,
        )
    hit = run_wrk(wrk, server, 64, args.seconds, hits_file, None, "repeated bodies")
    results.closed.append(hit)
    print(f"   closed  64 clients, repeated bodies: {hit.rps:7.0f} req/s", flush=True)
    alone = run_wrk(wrk, server, 1, args.seconds, hits_file, None, "repeated bodies")
    results.closed.append(alone)
    print(f"   closed   1 client, repeated bodies: p50 {alone.p50_ms:.2f} ms", flush=True)
    parts = split_bodies([line.encode() for line in lines])
    for rate in args.rates:
        wait_idle(server)
        opened = run_open_loop(
            f"{server.url}/predict",
            parts,
            rate,
            args.seconds,
            server.api_key,
            f"{tag}o{rate}",
            drain_seconds=max(10.0, 2 * args.seconds),
        )
        results.open.append(opened)
        print(f"   open {rate:>4} req/s: p99 {opened.p99_ms:9.1f} ms", flush=True)
    for rows in args.batch_rows:
        wait_idle(server)
        batch = run_batches(server, lines, rows, args.seconds, args.min_batch_requests, tag)
        results.batch.append(batch)
        print(f"   batch {rows:>4}: p50 {batch.p50_ms:8.1f} ms", flush=True)
    results.load.append(os.getloadavg()[0])
    return results


# --- Report ----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:
        return "–"
    if value == float("inf"):
        return "∞ (unfinished)"
    return f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def closed_at(results: Results, clients: int) -> Closed | None:
    return next((c for c in results.closed if c.clients == clients and not c.label), None)


def report(all_results: list[Results], args: argparse.Namespace, context: dict[str, str]) -> None:
    print("\n" + "=" * 100)
    for key, value in context.items():
        print(f"{key}: {value}")
    for r in all_results:
        s = r.server
        print(
            f"- {s.name}: {s.notes}; load average at start/end "
            + "/".join(f"{x:.1f}" for x in r.load)
        )

    print(
        f"\n### Closed loop: wrk, POST /predict, {args.seconds:g} s each\n"
        "Every request carries a unique customer id (cache misses), except 'repeated bodies': "
        f"{HIT_BODIES} customers sent again and again (cache hits where there is a cache). "
        "Errors = non-2xx + socket errors. CPU ms/req = the server's process tree CPU time "
        "(user+sys) per request, less sensitive to the shared machine than req/s. "
        "Mean batch = the product's adaptive-batch histogram (churn_adaptive_batch_size, "
        "sum/count) over the run: only requests that went through the batcher (a request "
        "alone in its worker is scored at once).\n"
    )
    rows = []
    for r in all_results:
        for c in r.closed:
            rows.append(
                [
                    r.server.name,
                    f"{c.clients}" + (f" ({c.label})" if c.label else ""),
                    fmt(c.rps, 0),
                    fmt(c.p50_ms),
                    fmt(c.p95_ms),
                    fmt(c.p99_ms),
                    f"{c.errors} / {c.requests:,}",
                    fmt(c.cpu_ms_per_request, 2),
                    fmt(None if c.hit_share is None else 100 * c.hit_share, 0),
                    fmt(c.mean_batch),
                ]
            )
    print(
        table(
            [
                "server",
                "clients",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors / requests",
                "CPU ms/req",
                "cache hit %",
                "mean batch",
            ],
            rows,
        )
    )

    print(
        f"\n### Open loop: fixed arrival rate, {args.seconds:g} s each, latency from the "
        "scheduled send time (coordinated omission counted)\n"
        "Unique customer ids (cache misses). 'unfinished' = not answered within the drain "
        "time after the last arrival; counted as infinitely slow in the percentiles. "
        "gen lag = how late the Python generator itself sent (p99).\n"
    )
    rows = []
    for r in all_results:
        for o in r.open:
            rows.append(
                [
                    r.server.name,
                    fmt(o.offered_rps, 0),
                    fmt(o.served_rps, 0),
                    fmt(o.p50_ms),
                    fmt(o.p95_ms),
                    fmt(o.p99_ms),
                    f"{o.errors}",
                    f"{o.unfinished} / {o.scheduled:,}",
                    fmt(o.lag_p99_ms),
                ]
            )
    print(
        table(
            [
                "server",
                "offered req/s",
                "served req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "unfinished / sent",
                "gen lag p99 ms",
            ],
            rows,
        )
    )

    print(
        f"\n### /predict/batch, one client, {args.seconds:g} s (at least "
        f"{args.min_batch_requests} requests) per size\n"
    )
    rows = []
    for r in all_results:
        for b in r.batch:
            rows.append(
                [
                    r.server.name,
                    f"{b.rows:,}",
                    f"{b.requests}",
                    fmt(b.p50_ms),
                    fmt(b.p95_ms),
                    fmt(b.server_p50_ms),
                    fmt(b.rows / b.p50_ms * 1000, 0),
                    f"{b.errors}",
                ]
            )
    print(
        table(
            [
                "server",
                "customers",
                "requests",
                "p50 ms",
                "p95 ms",
                "server p50 ms",
                "customers/s",
                "errors",
            ],
            rows,
        )
    )

    by_name = {r.server.name: r for r in all_results}
    print("\n### Summary\n")
    product, peer, floor = (by_name.get(n) for n in ("product", "peer", "floor"))
    lines = []
    if product and peer:
        p64, q64 = closed_at(product, 64), closed_at(peer, 64)
        if p64 and q64:
            lines.append(
                f"- product / peer throughput at 64 clients: **{p64.rps / q64.rps:.2f}×** "
                f"({p64.rps:.0f} vs {q64.rps:.0f} req/s)"
            )
        for clients in args.clients:
            pc, qc = closed_at(product, clients), closed_at(peer, clients)
            if pc and qc:
                lines.append(
                    f"- p99 at {clients} clients: product {pc.p99_ms:.1f} ms vs peer "
                    f"{qc.p99_ms:.1f} ms (peer / product = {qc.p99_ms / pc.p99_ms:.2f}×)"
                )
        diffs = np.abs(np.array(product.sample) - np.array(peer.sample))
        lines.append(
            f"- same model, same answers: max |Δ churn_probability| product vs peer "
            f"over {len(diffs)} customers = {diffs.max():.2e}"
        )
    if product and floor:
        p64, f64 = closed_at(product, 64), closed_at(floor, 64)
        if p64 and f64:
            lines.append(
                f"- product / floor throughput at 64 clients: **{p64.rps / f64.rps:.2f}×** "
                f"({p64.rps:.0f} vs {f64.rps:.0f} req/s)"
            )
    if product:
        p64 = closed_at(product, 64)
        if p64 and p64.mean_batch is not None:
            lines.append(
                f"- product mean adaptive batch size at 64 clients (its /metrics, "
                f"churn_adaptive_batch_size sum/count): {p64.mean_batch:.1f}"
            )
    if product:
        lines += target_lines(product, peer, floor)
    previous = by_name.get("previous")
    if product and previous:
        lines += previous_lines(product, previous)
    for r in all_results:
        total, largest = r.rss_after_64
        lines.append(
            f"- {r.server.name} RSS after the 64-client run: {total:.0f} MiB for the "
            f"process tree (largest process {largest:.0f} MiB)"
        )
    print("\n".join(lines))


def previous_lines(product: Results, previous: Results) -> list[str]:
    """Issue 14's targets: the product against the previous version, both fresh installs."""
    rows = []
    for clients in (1, 16, 64):
        now, before = closed_at(product, clients), closed_at(previous, clients)
        if now and before:
            rows.append(
                [
                    str(clients),
                    f"{before.rps:.0f} → {now.rps:.0f}",
                    f"**{now.rps / before.rps:.2f}×**",
                    f"{before.p50_ms:.2f} → {now.p50_ms:.2f}",
                    f"{before.p99_ms:.1f} → {now.p99_ms:.1f}",
                    f"{before.errors} / {now.errors}",
                ]
            )
    one, one_before = closed_at(product, 1), closed_at(previous, 1)
    p64, p64_before = closed_at(product, 64), closed_at(previous, 64)
    verdicts = []
    if p64 and p64_before:
        ratio = p64.rps / p64_before.rps
        verdicts.append(f"64 clients req/s ≥ 1.3× previous: {ratio:.2f}× ({_met(ratio >= 1.3)})")
        verdicts.append(f"errors at 64 clients: {p64.errors} ({_met(p64.errors == 0)})")
    if one and one_before:
        verdicts.append(
            f"1-client p50 no worse: {one_before.p50_ms:.2f} → {one.p50_ms:.2f} ms "
            f"({_met(one.p50_ms <= one_before.p50_ms * 1.05)}; 5 % allowed for noise)"
        )
    return [
        "",
        "Product vs previous (closed loop, cache misses):",
        "",
        table(["clients", "req/s", "ratio", "p50 ms", "p99 ms", "errors before / now"], rows),
        "",
        *[f"- {v}" for v in verdicts],
    ]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def target_lines(product: Results, peer: Results | None, floor: Results | None) -> list[str]:
    """Issue 5's targets for the product, each with its measured value and verdict."""
    checks: list[tuple[str, float | None, str, bool | None]] = []

    def check(name: str, value: float | None, target: str, ok: bool | None) -> None:
        checks.append((name, value, target, None if value is None else ok))

    one = closed_at(product, 1)
    p64 = closed_at(product, 64)
    hit1 = next((c for c in product.closed if c.clients == 1 and c.label), None)
    miss_p50 = one.p50_ms if one else None
    hit_p50 = hit1.p50_ms if hit1 else None
    check("1 client, miss: p50 ms", miss_p50, "≤ 3", miss_p50 is not None and miss_p50 <= 3)
    check("1 client, hit: p50 ms", hit_p50, "≤ 2", hit_p50 is not None and hit_p50 <= 2)
    if p64:
        check("64 clients: errors", p64.errors, "0", p64.errors == 0)
        check("64 clients: mean batch", p64.mean_batch, "> 4", (p64.mean_batch or 0) > 4)
        q64 = closed_at(peer, 64) if peer else None
        if q64:
            check("64 clients: × peer req/s", p64.rps / q64.rps, "≥ 5", p64.rps >= 5 * q64.rps)
            check(
                "64 clients: p99 ms (peer's)",
                p64.p99_ms,
                f"< {q64.p99_ms:.0f}",
                p64.p99_ms < q64.p99_ms,
            )
        f64 = closed_at(floor, 64) if floor else None
        if f64:
            check(
                "64 clients: × floor req/s", p64.rps / f64.rps, "≥ 0.60", p64.rps >= 0.6 * f64.rps
            )
    for o in product.open:
        if round(o.offered_rps) == 300:
            clean = o.errors == 0 and o.unfinished == 0
            check("open 300 req/s: p95 ms", o.p95_ms, "≤ 20", o.p95_ms <= 20 and clean)
            check("open 300 req/s: p99 ms", o.p99_ms, "≤ 50", o.p99_ms <= 50 and clean)
    for b in product.batch:
        if b.rows == 1000:
            check(
                "batch 1,000: server p50 ms",
                b.server_p50_ms,
                "≤ 25",
                (b.server_p50_ms or 1e9) <= 25,
            )
    out = ["", "Targets (issue 5), product:", ""]
    out.append(
        table(
            ["target", "measured", "goal", "met"],
            [
                [name, fmt(value, 2), goal, {True: "yes", False: "**no**", None: "–"}[ok]]
                for name, value, goal, ok in checks
            ],
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15, help="per measurement")
    parser.add_argument(
        "--workers",
        type=int,
        default=Settings().workers,
        help="for all three servers (default: the product's, one per CPU core)",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--bentoml-home", type=Path, help="default: BENTOML_HOME or bentos/")
    parser.add_argument("--bodies", type=int, default=4000, help="distinct customers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["product", "peer", "floor"],
        choices=["product", "peer", "floor", "previous"],
    )
    parser.add_argument(
        "--previous",
        type=Path,
        help="a checkout of an earlier version with its own fresh .venv: served as "
        "'previous' with the product's settings, and compared with it",
    )
    parser.add_argument("--no-redis", action="store_true", help="in-process cache only")
    parser.add_argument(
        "--keep-scratch", action="store_true", help="keep server logs and databases"
    )
    args = parser.parse_args()
    args.clients = [1, 16, 64]
    args.rates = [100, 300, 600]
    args.batch_rows = [100, 1000]
    args.min_batch_requests = 3
    if args.quick:
        args.seconds = min(args.seconds, 3)
        args.rates = [100]
        args.min_batch_requests = 1
        args.bodies = min(args.bodies, 1000)
    args.warmup = max(2.0, min(5.0, args.seconds / 3))

    wrk = ensure_wrk()
    home = (args.bentoml_home or bentoml_home()).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    tag = ensure_model(home, scratch)

    lines = make_bodies(args.bodies, args.seed)
    files = {"all": scratch / "bodies.jsonl", "hits": scratch / "hits.jsonl"}
    files["all"].write_text("\n".join(lines) + "\n")
    files["hits"].write_text("\n".join(lines[:HIT_BODIES]) + "\n")

    redis_binary = None if args.no_redis else shutil.which("redis-server")
    redis = RedisServer(redis_binary, scratch / "redis") if redis_binary else None
    if redis:
        redis.start()
    context = {
        "machine": f"{psutil.cpu_count()} CPUs ({cpu_model()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "versions": ", ".join(f"{p} {metadata.version(p)}" for p in VERSIONED),
        "product code": product_revision(),
        "model": f"{tag} from {home}",
        "workers": f"{args.workers} per server (no CPU pinning; wrk and the open-loop "
        "generator run on the same cores)",
        "bodies": f"{len(lines):,} distinct synthetic customers (seed {args.seed}); ids made "
        "unique per request, so product /predict requests are cache MISSES unless stated",
        "cache": f"redis-server {redis.url_for(0)}" if redis else "in-process (no redis-server)",
        "scratch": f"{scratch} (server logs, databases; removed at the end unless --keep-scratch)",
    }
    starters: dict[str, Callable[[], Server]] = {
        "product": lambda: start_product(
            home, scratch, args.workers, redis.url_for(0) if redis else None
        ),
        "peer": lambda: start_peer(
            home, scratch, args.workers, redis.url_for(1) if redis else None
        ),
        "floor": lambda: start_floor(home, scratch, args.workers),
        "previous": lambda: start_product(
            home,
            scratch,
            args.workers,
            redis.url_for(2) if redis else None,
            name="previous",
            project=args.previous.resolve(),
        ),
    }
    if args.previous and "previous" not in args.servers:
        args.servers.append("previous")
    if "previous" in args.servers and not args.previous:
        parser.error("--servers previous needs --previous DIR")
    all_results = []
    try:
        for name in args.servers:
            server = starters[name]()
            try:
                all_results.append(measure(server, args, wrk, lines, files))
            finally:
                server.stop()
    finally:
        if redis:
            redis.stop()
    report(all_results, args, context)
    if not args.keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
