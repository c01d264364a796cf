"""What a refused request costs (issue 13, point 5): the worker's peak RSS, the answer's
size, the time to answer, and the latency other callers of that worker see meanwhile.

    .venv/bin/python benchmarks/refused_cost.py --before /tmp/before

`--before DIR` serves a source tree of the code before the fix (e.g.
`mkdir /tmp/before && git archive fa666d8 | tar -x -C /tmp/before`) the same way, in the
same run. Each case gets a fresh service with one worker (so "that worker" is the only
one), API keys, the old 4 MB body limit (so the issue's 3.8 MB body reaches validation),
SQLite, no Redis. While the refused request is in flight a client sends `/predict` every
100 ms; its largest latency is the stall other callers see. Cases: the issue's body (a JSON
array of 1.9 M integers) to `/predict/batch` and to `/feedback`, and 1,000 customers with
every field wrong and 100 wrong extras each (1.0 MB: a costly 422 within the limits).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from side_by_side import ensure_model

from core.settings import PROJECT_ROOT, bentoml_home
from launchers.server_process import STARTUP_SECONDS, free_port

API_KEY = "bench-key-0001"
HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
CUSTOMER = {
    "customer_id": "BENCH-1",
    "tenure_months": 24,
    "monthly_charges": 89.99,
    "total_charges": 2159.76,
    "internet_service": "Fiber",
    "contract": "Month-to-month",
    "payment_method": "Electronic check",
}


def huge_array() -> bytes:
    return b"[" + b",".join([b"1"] * 1_900_000) + b"]"


def all_wrong_customers() -> bytes:
    wrong: dict[str, object] = {name: [] for name in CUSTOMER}
    wrong["extra"] = {f"e{j}": [] for j in range(100)}
    return httpx.Request("POST", "/", json=[wrong] * 1000).content


CASES = [
    ("/predict/batch", "1.9 M integers", huge_array),
    ("/feedback", "1.9 M integers", huge_array),
    ("/predict/batch", "1,000 customers, all wrong", all_wrong_customers),
]


@dataclass
class Result:
    tree: str
    route: str
    case: str
    status: int
    answer_bytes: int
    seconds: float
    peak_rss_mib: float
    base_rss_mib: float
    others_median_ms: float
    others_max_ms: float


def start(tree: Path, home: Path, scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`bentoml serve` of `tree`, one worker; returns the process and its URL when ready."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "BENTOML_HOME": str(home),
        "CHURN_WORKERS": "1",
        "CHURN_API_KEYS": API_KEY,
        "CHURN_RATE_LIMIT": "100000000/minute",
        "CHURN_MAX_BODY_BYTES": "4000000",
        "DATABASE_URL": f"sqlite:///{scratch / 'predictions.db'}",
        "CHURN_DATA_DIR": str(scratch),
        "CHURN_SPOOL_DIR": str(scratch / "spool"),
        "CHURN_ID_HASH_SECRET": "bench",
    }
    env.pop("REDIS_URL", None)
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", "service:ChurnService", "--port", str(port)]
    log = (scratch / "server.log").open("wb")
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1"], cwd=tree, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited: {(scratch / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    sys.exit("server not ready")


def worker_of(process: subprocess.Popen[bytes]) -> psutil.Process:
    """The worker: the descendant holding the model (the largest resident set)."""
    children = psutil.Process(process.pid).children(recursive=True)
    return max(children, key=lambda p: p.memory_info().rss)


def peak_rss_mib(worker: psutil.Process) -> float:
    for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def others(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """A caller of the same worker: `/predict` every 100 ms until `stop`."""
    with httpx.Client(timeout=300) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.post(f"{url}/predict", json=CUSTOMER, headers=HEADERS)
            latencies.append((time.perf_counter() - started) * 1000)
            stop.wait(0.1)


def measure(tree: Path, home: Path, route: str, case: str, body: bytes) -> Result:
    scratch = Path(tempfile.mkdtemp(prefix="refused-"))
    process, url = start(tree, home, scratch)
    try:
        for _ in range(20):  # warm: the worker's steady state before the refused request
            httpx.post(f"{url}/predict", json=CUSTOMER, headers=HEADERS, timeout=30)
        worker = worker_of(process)
        base = peak_rss_mib(worker)
        latencies: list[float] = []
        stop = threading.Event()
        caller = threading.Thread(target=others, args=(url, stop, latencies))
        caller.start()
        time.sleep(0.5)
        started = time.perf_counter()
        answer = httpx.post(f"{url}{route}", content=body, headers=HEADERS, timeout=300)
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        stop.set()
        caller.join()
        return Result(
            tree.name or str(tree),
            route,
            case,
            answer.status_code,
            len(answer.content),
            seconds,
            peak_rss_mib(worker),
            base,
            statistics.median(latencies),
            max(latencies),
        )
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="source tree of the code before the fix")
    parser.add_argument("--bentoml-home", type=Path, help="default: BENTOML_HOME or bentos/")
    args = parser.parse_args()
    home = (args.bentoml_home or bentoml_home()).resolve()
    tag = ensure_model(home, Path(tempfile.mkdtemp(prefix="refused-model-")))
    trees = [("before", args.before.resolve())] if args.before else []
    trees.append(("after", PROJECT_ROOT))
    print(f"model {tag}; one worker; CPU cores: {os.cpu_count()}")
    rows: list[tuple[str, Result]] = []
    for route, case, make in CASES:
        body = make()
        for label, tree in trees:
            result = measure(tree, home, route, case, body)
            rows.append((label, result))
            print(row(label, result, len(body)), flush=True)
    print()
    print(
        "| code | route | body | status | answer | time to answer | worker peak RSS "
        "(before it) | other callers' /predict: median / max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, result in rows:
        print(markdown(label, result))


def row(label: str, r: Result, size: int) -> str:
    return (
        f"{label:6} {r.route:15} {r.case:28} ({size / 1e6:.1f} MB) -> {r.status} "
        f"{r.answer_bytes:,} B in {r.seconds:.2f} s; worker peak {r.peak_rss_mib:,.0f} MiB "
        f"(was {r.base_rss_mib:,.0f}); others {r.others_median_ms:.1f} / {r.others_max_ms:.0f} ms"
    )


def markdown(label: str, r: Result) -> str:
    answer = f"{r.answer_bytes / 1e6:.1f} MB" if r.answer_bytes > 1e5 else f"{r.answer_bytes} B"
    return (
        f"| {label} | `{r.route}` | {r.case} | {r.status} | {answer} | {r.seconds:.2f} s | "
        f"{r.peak_rss_mib:,.0f} MiB ({r.base_rss_mib:,.0f}) | "
        f"{r.others_median_ms:.1f} / {r.others_max_ms:,.0f} ms |"
    )


if __name__ == "__main__":
    main()
