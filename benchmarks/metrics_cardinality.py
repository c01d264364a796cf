"""`/metrics` size and series under unique paths and deletions (issue 13, point 2).

    .venv/bin/python benchmarks/metrics_cardinality.py --paths 5000 --deletions 500

Starts the product as `side_by_side.py` does (Redis, SQLite log, API key), then sends
`--paths` requests to unique unknown paths and `--deletions` `DELETE /customers/<id>` with
unique ids, and prints `/metrics` before and after: bytes, `bentoml_service_request_total`
series, the scrape time, and the service's resident memory. Labels are route templates, so
the series must not grow with the number of unique paths. Also prints what labelling costs
per request, in-process.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
import timeit
import uuid
from pathlib import Path

import httpx
from side_by_side import ensure_model, start_product

from core.settings import Settings, bentoml_home
from launchers.redis_process import RedisServer

SERIES = "bentoml_service_request_total{"


def scrape(url: str) -> tuple[int, int, float]:
    """(bytes, request_total series, seconds) of one `/metrics` scrape."""
    started = time.perf_counter()
    text = httpx.get(f"{url}/metrics", timeout=120).text
    seconds = time.perf_counter() - started
    return len(text.encode()), sum(line.startswith(SERIES) for line in text.splitlines()), seconds


def label_cost_us() -> dict[str, tuple[float, float]]:
    """Microseconds to label one request over the service's real routes (in-process), and
    to route it as Starlette's router does (the same walk, once), for scale."""
    from starlette.routing import Match

    import service
    from serving.route_metrics import RouteLabels

    starlette = service.ChurnService.to_asgi()  # type: ignore[attr-defined]  # routes only
    labels = RouteLabels()

    def route(scope: dict[str, object]) -> None:
        for candidate in starlette.routes:
            if candidate.matches(scope)[0] == Match.FULL:
                return

    costs = {}
    for method, path in (("POST", "/predict"), ("DELETE", "/customers/CUST-1"), ("GET", "/x")):
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "app": starlette}
        labels(scope)
        label = timeit.timeit(functools.partial(labels, scope), number=5_000) / 5_000 * 1e6
        routing = timeit.timeit(functools.partial(route, scope), number=5_000) / 5_000 * 1e6
        costs[f"{method} {path}"] = (label, routing)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", type=int, default=5000, help="unique unknown paths")
    parser.add_argument("--deletions", type=int, default=500, help="unique customer ids deleted")
    parser.add_argument("--workers", type=int, default=Settings().workers)
    parser.add_argument("--bentoml-home", type=Path, help="default: BENTOML_HOME or bentos/")
    args = parser.parse_args()

    home = (args.bentoml_home or bentoml_home()).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="metrics-"))
    tag = ensure_model(home, scratch)
    redis_binary = shutil.which("redis-server")
    redis = RedisServer(redis_binary, scratch / "redis") if redis_binary else None
    if redis:
        redis.start()
    server = start_product(home, scratch, args.workers, redis.url_for(0) if redis else None)
    print(f"model {tag}; {args.workers} workers; product at {server.url}")
    try:
        before, rss_before = scrape(server.url), server.rss_mib()[0]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(args.paths):
                client.get(f"/scan-{uuid.uuid4().hex}")
            headers = {"X-API-Key": server.api_key or ""}
            for _ in range(args.deletions):
                client.delete(f"/customers/CUST{uuid.uuid4().hex[:10]}", headers=headers)
        after, rss_after = scrape(server.url), server.rss_mib()[0]
    finally:
        server.stop()
        if redis:
            redis.stop()
    print("           /metrics bytes   series   scrape s   service RSS MiB")
    for name, (size, series, seconds), rss in (
        ("before", before, rss_before),
        ("after", after, rss_after),
    ):
        print(f"{name:>8} {size:>16,} {series:>8} {seconds:>10.3f} {rss:>17.0f}")
    try:
        costs = label_cost_us()
    except ImportError:  # a checkout before serving/route_metrics.py (the baseline)
        return
    for request, (label, routing) in costs.items():
        print(f"label {request}: {label:.2f} µs (Starlette's routing of it: {routing:.2f} µs)")


if __name__ == "__main__":
    main()
