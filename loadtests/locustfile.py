"""Realistic traffic for the churn service, with SLA checks that decide the exit code.

    .venv/bin/locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:3000 \\
        -u 64 -r 64 -t 60s --target-rate 300

Mostly single `POST /predict` calls for customers the service has not seen (cache misses), a
share of exact repeats of recent requests (cache hits), and now and then a
`POST /predict/batch` of 100 customers. Every option is also an environment variable
(`LOAD_*`, see `--help`), so `loadtests/run.py` and CI can set them without a command line.

The users follow a schedule rather than a think time: each user's next request is due
`users / target-rate` seconds after its previous one was *due*, so slow answers do not lower
the offered rate (up to one second of catch-up), and the users start at random phases so they
do not fire in lockstep.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # locust runs us as a script

from launchers.server_process import request_bodies
from training.generate import generate_customers

PREDICT = "/predict"
BATCH = "/predict/batch"
MAX_CATCH_UP_SECONDS = 1.0
"""A user that fell further behind its schedule skips the missed slots instead of bursting."""
RECENT_REQUESTS = 1000
"""Repeats are drawn from this many recent requests: well inside the cache's size and TTL."""


@events.init_command_line_parser.add_listener
def add_options(parser: LocustArgumentParser) -> None:
    """Load shape and SLA thresholds, as options so they appear in `locust --help`."""
    parser.add_argument(
        "--target-rate",
        type=float,
        default=0.0,
        env_var="LOAD_TARGET_RATE",
        help="Total requests per second offered by all users together; 0: as fast as "
        "they can (closed loop).",
    )
    parser.add_argument(
        "--arrivals",
        choices=["constant", "poisson"],
        default="constant",
        env_var="LOAD_ARRIVALS",
        help="Gaps between one user's requests: constant, or exponential (Poisson arrivals, "
        "same mean rate, with bursts).",
    )
    parser.add_argument(
        "--repeat-share",
        type=float,
        default=0.2,
        env_var="LOAD_REPEAT_SHARE",
        help="Share of single predictions that repeat a recent request exactly (cache hits).",
    )
    parser.add_argument(
        "--batch-share",
        type=float,
        default=0.02,
        env_var="LOAD_BATCH_SHARE",
        help="Share of calls that are a /predict/batch of --batch-size customers.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        env_var="LOAD_BATCH_SIZE",
        help="Customers per batch.",
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=5000,
        env_var="LOAD_CUSTOMERS",
        help="Distinct synthetic customer profiles (ids are renewed on every pass).",
    )
    parser.add_argument(
        "--seed", type=int, default=2024, env_var="LOAD_SEED", help="Seed of the customer table."
    )
    parser.add_argument(
        "--api-key",
        default="",
        env_var="LOAD_API_KEY",
        is_secret=True,
        help="Sent as X-API-Key when set.",
    )
    parser.add_argument(
        "--sla-p95-ms",
        type=float,
        default=20.0,
        env_var="LOAD_SLA_P95_MS",
        help="Largest acceptable 95th percentile of /predict latency (ms).",
    )
    parser.add_argument(
        "--sla-p99-ms",
        type=float,
        default=50.0,
        env_var="LOAD_SLA_P99_MS",
        help="Largest acceptable 99th percentile of /predict latency (ms).",
    )
    parser.add_argument(
        "--sla-fail-percent",
        type=float,
        default=0.0,
        env_var="LOAD_SLA_FAIL_PERCENT",
        help="Largest acceptable share of failed requests, all endpoints (percent).",
    )


@dataclass
class Traffic:
    """The request stream of one Locust process: fresh customers, repeats and batches.

    A fresh request takes the next profile of the table; each pass over the table gives the
    profiles new ids (with a per-process token), so the service has never seen them, even
    from an earlier run still in its cache or from another Locust process.
    """

    profiles: list[dict[str, Any]]
    repeat_share: float
    rng: random.Random
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    cursor: int = 0
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    cache: Counter[str] = field(default_factory=Counter)

    def fresh(self, remember: bool = True) -> dict[str, Any]:
        """A customer request the service has not answered before."""
        lap, index = divmod(self.cursor, len(self.profiles))
        self.cursor += 1
        profile = self.profiles[index]
        body = {**profile, "customer_id": f"{profile['customer_id']}-{self.token}-{lap}"}
        if remember:
            self.recent.append(body)
        return body

    def single(self) -> dict[str, Any]:
        """A repeat of a recent request with probability `repeat_share`, else a fresh one."""
        if self.recent and self.rng.random() < self.repeat_share:
            return self.rng.choice(self.recent)
        return self.fresh()

    def batch(self, size: int) -> list[dict[str, Any]]:
        """`size` fresh customers for one /predict/batch call; not repeated later, since
        only single predictions are cached (a repeat of them would not be a hit)."""
        return [self.fresh(remember=False) for _ in range(size)]


_traffic: Traffic | None = None


def traffic() -> Traffic:
    """The process's request stream (built at init, before any user starts)."""
    if _traffic is None:
        raise RuntimeError("the customer table is built by the init event")
    return _traffic


@events.init.add_listener
def build_traffic(environment: Environment, **_: Any) -> None:
    """Generate the customers once per process (a master sends nothing, so it skips this).

    Then refresh gevent's cached clock: the seconds spent importing this file and building
    the table would otherwise be taken off `--run-time` (its timer counts from the stale
    clock; measured: `-t 10s` stopped after 4.3 s).
    """
    global _traffic
    options = environment.parsed_options
    if options is not None and not isinstance(environment.runner, MasterRunner):
        frame = generate_customers(options.customers, options.seed)
        repeats = options.repeat_share
        _traffic = Traffic(request_bodies(frame), repeats, random.Random(options.seed))
    gevent.get_hub().loop.update_now()


class Pacer:
    """Next-request schedule of one user: mean gap `gap` seconds, constant or exponential."""

    def __init__(self, gap: float, poisson: bool, rng: random.Random) -> None:
        self.gap, self.poisson, self.rng = gap, poisson, rng
        self.due = time.monotonic() + rng.uniform(0, gap)  # random phase: no lockstep

    def wait(self) -> float:
        """Seconds until the next request is due; advances the schedule by one gap."""
        now = time.monotonic()
        self.due = max(self.due, now - MAX_CATCH_UP_SECONDS)
        wait = max(0.0, self.due - now)
        self.due += self.rng.expovariate(1 / self.gap) if self.poisson else self.gap
        return wait


def make_pacer(options: Any, rng: random.Random) -> Callable[[], float]:
    """Per-user pacing that makes all users together offer `--target-rate`."""
    if options.target_rate <= 0:
        return lambda: 0.0
    gap = max(options.num_users, 1) / options.target_rate
    return Pacer(gap, options.arrivals == "poisson", rng).wait


class ChurnClient(FastHttpUser):
    """A client application scoring customers; FastHttpUser because Locust shares the
    machine's CPUs with the service and the default HttpUser costs several times more."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.rng = random.Random()
        self.pace = make_pacer(options, self.rng)
        self.batch_share: float = options.batch_share
        self.batch_size: int = options.batch_size
        self.headers = {"X-API-Key": options.api_key} if options.api_key else {}
        gevent.sleep(self.pace())  # the user's random phase, before its first request

    def wait_time(self) -> float:
        return self.pace()

    @task
    def score(self) -> None:
        """One call: a batch with probability `batch_share`, else a single prediction."""
        stream = traffic()
        if self.rng.random() < self.batch_share:
            body: Any = stream.batch(self.batch_size)
            name = f"{BATCH} ({self.batch_size})"  # its own row in the stats
            self.client.post(BATCH, json=body, headers=self.headers, name=name)
            return
        response = self.client.post(PREDICT, json=stream.single(), headers=self.headers)
        if response.headers is not None:
            stream.cache[str(response.headers.get("X-Cache", "none"))] += 1


@events.test_stop.add_listener
def report_cache(environment: Environment, **_: Any) -> None:
    """How many single predictions the service answered from its cache (X-Cache)."""
    if _traffic is not None and _traffic.cache:
        seen = sum(_traffic.cache.values())
        shares = ", ".join(f"{k} {n} ({n / seen:.0%})" for k, n in sorted(_traffic.cache.items()))
        print(f"X-Cache of /predict answers: {shares}")


@dataclass(frozen=True)
class Outcome:
    """What the SLA is judged on."""

    requests: int
    p95_ms: float
    p99_ms: float
    fail_percent: float


def sla_violations(
    outcome: Outcome, p95_ms: float, p99_ms: float, fail_percent: float
) -> list[str]:
    """One line per broken SLA, saying by how much; empty if all hold."""
    if outcome.requests == 0:
        return [f"no {PREDICT} request was made"]
    problems = []
    for label, measured, limit in (
        (f"p95 of {PREDICT}", outcome.p95_ms, p95_ms),
        (f"p99 of {PREDICT}", outcome.p99_ms, p99_ms),
    ):
        if measured > limit:
            problems.append(
                f"{label} {measured:g} ms > {limit:g} ms (over by {measured - limit:g} ms)"
            )
    if outcome.fail_percent > fail_percent:
        problems.append(
            f"failures {outcome.fail_percent:.3g} % > {fail_percent:g} % "
            f"(over by {outcome.fail_percent - fail_percent:.3g} points)"
        )
    return problems


def report_rate(environment: Environment, target_rate: float) -> None:
    """Achieved against offered rate: each user waits for its answer, so a service slower
    than users/rate seconds per request is offered less than the target. (The first
    users/rate seconds ramp up, which costs short runs a few percent.)"""
    achieved = environment.stats.total.total_rps
    print(f"rate: {achieved:.1f} req/s achieved, {target_rate:g} req/s targeted")
    if target_rate > 0 and achieved < 0.9 * target_rate:
        print(
            f"NOTE: under 90 % of the target rate: answers took longer than users/rate; "
            f"more --users (or a faster service) would offer the full {target_rate:g} req/s"
        )


@events.quitting.add_listener
def check_sla(environment: Environment, **_: Any) -> None:
    """Fail the run (exit code 1) when an SLA is broken; print the verdict either way.

    Locust keeps latencies under 100 ms rounded to whole milliseconds, so the percentiles
    are exact to 1 ms.
    """
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return  # the master (or the single local process) judges the aggregated stats
    options = environment.parsed_options
    single = environment.stats.get(PREDICT, "POST")
    outcome = Outcome(
        requests=single.num_requests,
        p95_ms=single.get_response_time_percentile(0.95),
        p99_ms=single.get_response_time_percentile(0.99),
        fail_percent=100 * environment.stats.total.fail_ratio,
    )
    problems = sla_violations(
        outcome, options.sla_p95_ms, options.sla_p99_ms, options.sla_fail_percent
    )
    report_rate(environment, options.target_rate)
    for problem in problems:
        print(f"SLA FAIL: {problem}")
    if problems:
        environment.process_exit_code = 1
        return
    if environment.runner is not None and not environment.runner.exceptions:
        environment.process_exit_code = 0  # failures within the SLA do not fail the run
    print(
        f"SLA PASS: p95 {outcome.p95_ms:g} ms ≤ {options.sla_p95_ms:g}, "
        f"p99 {outcome.p99_ms:g} ms ≤ {options.sla_p99_ms:g}, "
        f"failures {outcome.fail_percent:.3g} % ≤ {options.sla_fail_percent:g} % "
        f"over {outcome.requests} {PREDICT} requests"
    )


if __name__ == "__main__":
    # `locust --help` parses before it imports the locustfile, so it cannot list these
    # options (locust issue #2917); `python loadtests/locustfile.py --help` does.
    help_parser = LocustArgumentParser(prog="locust -f loadtests/locustfile.py")
    add_options(help_parser)
    help_parser.parse_args()
