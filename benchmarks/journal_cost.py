"""What the prediction-log journal costs `/predict`: the same load with it on and off.

    .venv/bin/python benchmarks/journal_cost.py --clients 1 64 --requests 3000 --rounds 2

Starts `bentoml serve` (2 workers, SQLite log, in-process cache, no keys) alternately
with `CHURN_LOG_JOURNAL=true` and `false`, `--rounds` times each in the same run (the
order flips every round, so a noisy neighbour does not favour one side), and sends
distinct synthetic customers (cache misses) from N closed-loop keep-alive clients. Prints
throughput and latency percentiles per setting, and the median over rounds. First, the
journal alone in this process: the latency of `GroupCommit.commit` (write + fdatasync in a
thread) for N concurrent committers, and how many rows share one write.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_load import customer_bodies, run_load

from core.settings import bentoml_home
from launchers.server_process import start_server
from monitoring.journal import GroupCommit, Journal
from monitoring.records import PredictionRecord


def serve_and_measure(
    home: Path, scratch: Path, journal: bool, bodies: list[dict[str, Any]], clients: list[int]
) -> dict[int, dict[str, float]]:
    """One server with the journal on or off; one closed-loop run per client count."""
    name = f"journal-{'on' if journal else 'off'}"
    env = {
        "CHURN_LOG_JOURNAL": "true" if journal else "false",
        "CHURN_WORKERS": "2",
        "DATABASE_URL": f"sqlite:///{scratch / f'{name}.db'}",
        "CHURN_SPOOL_DIR": str(scratch / f"{name}-spool"),
        "CHURN_RATE_LIMIT": "100000000/minute",
        "CHURN_API_KEYS": "",
        "CHURN_ID_HASH_SECRET": "benchmark-secret",
        "REDIS_URL": "",
    }
    server = start_server(home, scratch / f"{name}.log", env)
    try:
        asyncio.run(run_load(server.url, bodies[:200], 8))  # warm-up
        per_run = (len(bodies) - 200) // len(clients)
        results = {}
        for i, count in enumerate(clients):
            chunk = bodies[200 + i * per_run : 200 + (i + 1) * per_run]  # unseen: misses
            results[count] = asyncio.run(run_load(server.url, chunk, count))
        return results
    finally:
        server.stop()


def journal_alone(folder: Path, committers: int, commits: int) -> dict[str, float]:
    """`commits` one-row commits from `committers` concurrent tasks, as requests make them."""
    writes = 0

    class Counting(Journal):
        def append(self, payload: bytes, accepted: int) -> None:
            nonlocal writes
            writes += 1
            super().append(payload, accepted)

    handed = 0

    def handoff(records: Any) -> int:
        nonlocal handed
        handed += len(records)
        return handed

    journal = Counting(folder)
    commit = GroupCommit(journal, handoff)
    record = PredictionRecord(
        request_id="bench", customer_hash="0" * 64, model_version="v", features={"tenure": 3},
        churn_probability=0.5, will_churn=False, risk_level="medium", latency_ms=1.0,
        cache="miss", endpoint="predict",
    )  # fmt: skip
    latencies: list[float] = []

    async def committer(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await commit.commit([record])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    asyncio.run(_gather(committer, committers, commits // committers))
    elapsed = time.perf_counter() - started
    journal.close(remove=True)
    ms = np.array(latencies) * 1000
    return {
        "commits_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "rows_per_write": len(latencies) / max(writes, 1),
    }


async def _gather(task: Any, copies: int, count: int) -> None:
    await asyncio.gather(*(task(count) for _ in range(copies)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--requests", type=int, default=3000, help="per client count and run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bentoml-home", type=Path, help="default: BENTOML_HOME or bentos/")
    args = parser.parse_args()

    home = args.bentoml_home or bentoml_home()
    scratch = Path(tempfile.mkdtemp(prefix="journal-cost-"))
    for committers in args.clients:
        alone = journal_alone(scratch / "alone", committers, 64 * 50)
        print(
            f"journal alone, {committers:>3} committers: {alone['commits_per_s']:>7.0f} "
            f"commits/s p50 {alone['p50_ms']:.2f} ms p99 {alone['p99_ms']:.2f} ms, "
            f"{alone['rows_per_write']:.1f} rows per write",
            flush=True,
        )
    size = 200 + args.requests * len(args.clients)
    runs: dict[bool, list[dict[int, dict[str, float]]]] = {True: [], False: []}
    for round_number in range(args.rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        for journal in order:
            bodies = customer_bodies(size, seed=1000 + 2 * round_number + journal)
            result = serve_and_measure(home, scratch, journal, bodies, args.clients)
            runs[journal].append(result)
            for count, figures in result.items():
                print(
                    f"round {round_number + 1} journal {'on ' if journal else 'off'} "
                    f"{count:>3} clients: {figures['throughput_rps']:>6.0f} req/s "
                    f"p50 {figures['p50_ms']:.1f} ms p99 {figures['p99_ms']:.1f} ms "
                    f"errors {figures['errors']:.0f}",
                    flush=True,
                )
    print("\nmedian over rounds")
    print(f"{'journal':>7} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for journal in (False, True):
        for count in args.clients:
            rounds = [run[count] for run in runs[journal]]
            print(
                f"{'on' if journal else 'off':>7} {count:>7} "
                f"{statistics.median(r['throughput_rps'] for r in rounds):>8.0f} "
                f"{statistics.median(r['p50_ms'] for r in rounds):>7.2f} "
                f"{statistics.median(r['p99_ms'] for r in rounds):>7.1f}"
            )


if __name__ == "__main__":
    main()
