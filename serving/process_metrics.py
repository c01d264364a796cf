"""The workers' own resources for the infrastructure dashboard: CPU, memory, database
connections, readiness.

prometheus_client's process collector does not run in multiprocess mode (BentoML's
`/metrics`), so each worker reports itself into multiprocess-aware metrics: CPU as a
counter (summed over workers, dead ones included, so `rate()` never sees a reset), memory,
connections and readiness as `livesum` gauges (the live workers' total). Reported once a
second while requests flow and on every scrape (serving/adapters.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Engine

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class _Metrics:
    cpu: Any
    memory: Any
    connections: Any
    ready: Any


@cache
def _metrics() -> _Metrics:
    from prometheus_client import Counter, Gauge

    return _Metrics(
        cpu=Counter("churn_worker_cpu_seconds", "CPU time (user + system) of the workers."),
        memory=Gauge(
            "churn_worker_resident_memory_bytes",
            "Resident memory of the live workers.",
            multiprocess_mode="livesum",
        ),
        connections=Gauge(
            "churn_database_connections",
            "Prediction-log database connections of the live workers: in_use or idle (pooled).",
            ["state"],
            multiprocess_mode="livesum",
        ),
        ready=Gauge(
            "churn_workers_ready",
            "Live workers that can score now (what `/readyz` answers 200 for).",
            multiprocess_mode="livesum",
        ),
    )


def resident_bytes() -> int:
    """This process's resident set size (Linux `/proc`; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class ProcessReporter:
    """Moves this worker's CPU time (as a delta), memory, pool and readiness into metrics."""

    def __init__(self) -> None:
        self._cpu_reported = 0.0

    def report(self, engine: Engine, ready: bool) -> None:
        metrics = _metrics()
        times = os.times()
        cpu = times.user + times.system
        if cpu > self._cpu_reported:
            metrics.cpu.inc(cpu - self._cpu_reported)
            self._cpu_reported = cpu
        metrics.memory.set(resident_bytes())
        pool: Any = engine.pool
        in_use = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
        idle = int(pool.checkedin()) if hasattr(pool, "checkedin") else 0
        metrics.connections.labels(state="in_use").set(in_use)
        metrics.connections.labels(state="idle").set(idle)
        metrics.ready.set(1 if ready else 0)
