"""Memory and latency of the product over a long open-loop run (issue 5: RSS stable ± 10 %).

    .venv/bin/python benchmarks/soak.py --rate 300 --minutes 10

Starts the product as `side_by_side.py` does (Redis cache, SQLite prediction log, API key),
offers `--rate` requests a second of unique customers (cache misses) for `--minutes`, in
30-second open-loop slices, and after each slice records the resident set size of the whole
service (every process) and the slice's latency. Prints one row per slice and the verdict:
the largest and smallest RSS after the first minute (start-up and first allocations) within
± 10 % of their mean.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from open_loop import run_open_loop, split_bodies
from side_by_side import ensure_model, make_bodies, start_product, table

from core.settings import Settings, bentoml_home
from launchers.redis_process import RedisServer

SLICE_SECONDS = 30.0
WARM_UP_SECONDS = 60.0
TOLERANCE = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=300, help="requests per second offered")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--bodies", type=int, default=4000, help="distinct customers")
    parser.add_argument("--workers", type=int, default=Settings().workers)
    parser.add_argument("--bentoml-home", type=Path, help="default: BENTOML_HOME or bentos/")
    args = parser.parse_args()

    home = (args.bentoml_home or bentoml_home()).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    tag = ensure_model(home, scratch)
    parts = split_bodies([line.encode() for line in make_bodies(args.bodies, seed=7)])
    redis_binary = shutil.which("redis-server")
    redis = RedisServer(redis_binary, scratch / "redis") if redis_binary else None
    if redis:
        redis.start()
    server = start_product(home, scratch, args.workers, redis.url_for(0) if redis else None)
    print(f"model {tag}; {args.rate:g} req/s for {args.minutes:g} min; product at {server.url}")
    rows, samples = [], []
    started = time.monotonic()
    try:
        for i in range(max(1, round(args.minutes * 60 / SLICE_SECONDS))):
            result = run_open_loop(
                f"{server.url}/predict", parts, args.rate, SLICE_SECONDS, server.api_key, f"s{i}"
            )
            elapsed = time.monotonic() - started
            service_mib, _ = server.rss_mib()
            if elapsed > WARM_UP_SECONDS:
                samples.append(service_mib)
            rows.append(
                [
                    f"{elapsed / 60:.1f}",
                    f"{service_mib:.0f}",
                    f"{result.served_rps:.0f}",
                    f"{result.p50_ms:.1f}",
                    f"{result.p95_ms:.1f}",
                    f"{result.p99_ms:.1f}",
                    f"{result.errors + result.unfinished}",
                ]
            )
            print("  ".join(rows[-1]), flush=True)
    finally:
        server.stop()
        if redis:
            redis.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    header = ["minute", "service RSS MiB", "served req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    print("\n" + table(header, rows))
    if samples:
        mean = sum(samples) / len(samples)
        spread = max(abs(max(samples) - mean), abs(min(samples) - mean)) / mean
        verdict = "stable" if spread <= TOLERANCE else "NOT stable"
        print(
            f"\nservice RSS after the first minute: {min(samples):.0f}–{max(samples):.0f} MiB, "
            f"mean {mean:.0f}, largest deviation {100 * spread:.1f} % "
            f"(target ± {100 * TOLERANCE:.0f} %): {verdict}"
        )


if __name__ == "__main__":
    main()
