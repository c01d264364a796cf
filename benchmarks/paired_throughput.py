"""`/predict` req/s of the product against an earlier checkout, paired round by round.

    .venv/bin/python benchmarks/paired_throughput.py --previous ../prev --rounds 6

`side_by_side.py --previous` measures each server once, one after the other, so a change in
the machine's load between the two (other work on a shared host, a CPU frequency change)
lands in the ratio: on these 2 cores the same server's 64-client figure moved by ±10 %
between runs. Here both servers run at once (each idle while the other is measured) and wrk
alternates between them, ABAB… then BABA… in the next round, `--seconds` per point; each
round gives one ratio, measured minutes apart at most, and the median ratio over the rounds
is the figure. Same settings as side_by_side (SQLite log, Redis cache, API key, cache
misses), one Redis per server.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from side_by_side import (
    Server,
    ensure_model,
    ensure_wrk,
    make_bodies,
    run_wrk,
    start_product,
)

from core.settings import Settings, bentoml_home
from launchers.redis_process import REDIS_SERVER, RedisServer


def measure_pairs(
    servers: dict[str, Server],
    wrk: str,
    bodies: Path,
    clients: int,
    seconds: float,
    rounds: int,
) -> list[dict[str, float]]:
    """req/s of each server per round, the order swapped every round."""
    names = list(servers)
    results = []
    for number in range(rounds):
        order = names if number % 2 == 0 else names[::-1]
        row = {}
        for name in order:
            tag = f"r{number}{name[0]}"
            result = run_wrk(wrk, servers[name], clients, seconds, bodies, tag, "")
            row[name], row[f"{name} errors"] = result.rps, result.errors
        shown = ", ".join(f"{n} {row[n]:,.0f} req/s ({row[n + ' errors']:g} errors)" for n in order)
        print(f"round {number + 1}: {shown}", flush=True)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--previous", type=Path, required=True, help="checkout with a .venv")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[64])
    parser.add_argument("--workers", type=int, default=Settings().workers)
    parser.add_argument("--bentoml-home", type=Path, help="default: BENTOML_HOME or bentos/")
    args = parser.parse_args()

    wrk = ensure_wrk()
    home = (args.bentoml_home or bentoml_home()).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="paired-"))
    ensure_model(home, scratch)
    bodies = scratch / "bodies.jsonl"
    bodies.write_text("\n".join(make_bodies(20_000, 7)) + "\n")
    caches = [RedisServer(REDIS_SERVER, scratch / f"redis{i}") for i in range(2)]
    servers: dict[str, Server] = {}
    try:
        for cache in caches:
            cache.start()
        servers["product"] = start_product(home, scratch, args.workers, caches[0].url)
        servers["previous"] = start_product(
            home, scratch, args.workers, caches[1].url, "previous", args.previous.resolve()
        )
        for server in servers.values():  # warm both up before the first pair
            run_wrk(wrk, server, 16, 5, bodies, f"w{server.name[0]}", "warm-up")
        for clients in args.clients:
            print(f"\n{clients} clients, {args.seconds:g} s per point:", flush=True)
            rows = measure_pairs(servers, wrk, bodies, clients, args.seconds, args.rounds)
            ratios = [row["product"] / row["previous"] for row in rows]
            print(
                f"{clients} clients: product/previous per round "
                + " ".join(f"{r:.2f}×" for r in ratios)
                + f"; median {statistics.median(ratios):.2f}×, "
                f"product median {statistics.median(r['product'] for r in rows):,.0f} req/s, "
                f"previous median {statistics.median(r['previous'] for r in rows):,.0f} req/s"
            )
    finally:
        for server in servers.values():
            server.stop()
        for cache in caches:
            cache.kill()


if __name__ == "__main__":
    main()
