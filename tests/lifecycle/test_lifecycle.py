"""The design's lifecycle as one test against real servers (issue 16, acceptance 1): Day 0
`churn train` registers the first model as champion → the service (2 workers, registry
mode, PostgreSQL log, Redis) serves a month of drifted customers under load → their labels
arrive through `/feedback` → `churn drift` records the drift and a retraining trigger →
`churn retrain --if-triggered` makes a challenger → it answers a sticky ~10 % of customers →
their labels arrive → the clock moves past the label horizon → `churn promote` promotes it
with the paired test's figures in the audit trail, while 32 clients load the service, with
no failed request, every worker's log saying it switched.

Then the two variants: a worse challenger is not promoted (cleared, recorded); a promoted
model whose live accuracy breaks its bar is rolled back by `churn guard` (the cron job's
tick) under the same load, again with no failed request.

**Time fast-forward.** The service stamps what it logs with the wall clock, and outcomes
count only once their horizon (`CHURN_PERFORMANCE_HORIZON_DAYS`, 90) has closed. Instead of
waiting 90 days, the test moves the log's past back: every prediction's `created_at` and
every label's `observed_date` / `received_at` shift by the same number of days, so the
joins between them are unchanged and "now" is that much later for everything already
logged. The commands run unchanged, as cron would run them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from bentoml._internal.models import ModelStore
from sqlalchemy import Engine, func, select, text

from core.registry import ModelRegistry
from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies, start_server
from monitoring.database import PREDICTIONS, make_engine, upgrade_schema
from monitoring.triggers import pending_triggers
from tests.lifecycle.model_variants import variant
from tests.monitoring.tenure_shift import SHIFT
from tests.serving.conftest import KEYS, registry_settings
from tests.serving.load import Load
from training.generate import generate_customers
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

AUTH = {"X-API-Key": KEYS[0]}
CHURN = Path(sys.executable).with_name("churn")
WORKERS = 2
POLL_S = 1.0
SWAP_BOUND_S = POLL_S + 30
"""As in test_rollout.py: the poll interval plus fetching, checking and warming a model."""
HORIZON_DAYS = 90  # the setting's default, which the service and the commands use
LOAD_CLIENTS = 32
MONTH_CUSTOMERS = 2500
EXPERIMENT_CUSTOMERS = 8000
"""A quieter month (no drift, ~10 % churn): some 800 churners, for a decision."""
TARGET_COLUMNS = ["churned", "true_churn_probability"]


@dataclass
class Lifecycle:
    """The deployed stack, the operator's `churn` command, and the log's clock."""

    service: ServerProcess
    engine: Engine
    registry: ModelRegistry
    env: dict[str, str]
    folder: Path
    day0_table: Path
    source: ModelStore
    sent: set[str] = field(default_factory=set)

    def churn(self, *args: str, expect: int = 0) -> str:
        """Run `churn` as an operator's cron job would; its output."""
        started = time.monotonic()
        done = subprocess.run(
            [str(CHURN), *args], env=self.env, capture_output=True, text=True, timeout=900
        )
        output = done.stdout + done.stderr
        print(f"churn {' '.join(args)}: {time.monotonic() - started:.1f} s")
        assert done.returncode == expect, (
            f"churn {' '.join(args)}: exit {done.returncode}\n{output}"
        )
        return output

    def customers(self, prefix: str, rows: int, seed: int, shift: Any = None) -> pd.DataFrame:
        frame = generate_customers(rows, seed=seed, shift=shift)
        frame["customer_id"] = f"{prefix}-" + frame["customer_id"].astype(str)
        assert not self.sent & set(frame["customer_id"]), "customer ids must be new"
        self.sent |= set(frame["customer_id"])
        return frame

    def logged(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(PREDICTIONS)) or 0)

    def wait_logged(self, count: int) -> None:
        deadline = time.monotonic() + 90
        while self.logged() < count:
            assert time.monotonic() < deadline, f"{count} rows did not reach the log"
            time.sleep(0.2)

    def score_under_load(self, frame: pd.DataFrame, clients: int = 16) -> list[dict[str, Any]]:
        """Each customer posted once to `/predict` by `clients` concurrent clients; the
        answers in order, after their rows are in the log."""
        before = self.logged()
        answers = asyncio.run(post_each(self.service.url, bodies(frame), clients))
        self.wait_logged(before + len(frame))
        return answers

    def score_batches(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        before = self.logged()
        found: list[dict[str, Any]] = []
        all_bodies = bodies(frame)
        with httpx.Client(base_url=self.service.url, headers=AUTH, timeout=120) as client:
            for start in range(0, len(all_bodies), 1000):
                chunk = {"customers": all_bodies[start : start + 1000]}
                answer = client.post("/predict/batch", json=chunk)
                assert answer.status_code == 200, answer.text
                found += answer.json()["predictions"]
        self.wait_logged(before + len(frame))
        return found

    def send_labels(self, frame: pd.DataFrame, churned: np.ndarray) -> None:
        today = datetime.now(UTC).date().isoformat()
        labels = [
            {"customer_id": customer, "churned": bool(value), "observed_date": today}
            for customer, value in zip(frame["customer_id"], churned, strict=True)
        ]
        with httpx.Client(base_url=self.service.url, headers=AUTH, timeout=120) as client:
            for start in range(0, len(labels), 2000):
                answer = client.post("/feedback", json=labels[start : start + 2000])
                assert answer.status_code == 200, answer.text

    def fast_forward(self, days: int) -> None:
        """Everything logged so far happened `days` earlier (module docstring)."""
        with self.engine.begin() as connection:
            connection.execute(
                text("UPDATE predictions SET created_at = created_at - make_interval(days => :d)"),
                {"d": days},
            )
            connection.execute(
                text(
                    "UPDATE ground_truth SET observed_date = observed_date - :d, "
                    "received_at = received_at - make_interval(days => :d)"
                ),
                {"d": days},
            )

    def log_offset(self) -> int:
        return len(self.service.log_path.read_bytes())

    def workers_saying(self, pattern: str, since: int) -> set[str]:
        """The workers whose log lines after byte `since` match `pattern` (after 'worker X')."""
        log = self.service.log_path.read_bytes()[since:].decode(errors="replace")
        return set(re.findall(rf"worker (\S+) {pattern}", log))

    def wait_for(self, what: str, done: Callable[[], bool], bound: float = SWAP_BOUND_S) -> float:
        start = time.monotonic()
        while not done():
            assert time.monotonic() - start < bound, f"{what}: not within {bound:.0f} s"
            time.sleep(0.2)
        return time.monotonic() - start

    def wait_every_worker(self, pattern: str, since: int) -> float:
        return self.wait_for(
            f"every worker: {pattern}",
            lambda: len(self.workers_saying(pattern, since)) == WORKERS,
        )

    def served_version(self, registered: str) -> str:
        """The BentoML version (what answers and the log name) of a registered version."""
        return self.registry.bentoml_tag(registered).split(":", 1)[1]


def bodies(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return request_bodies(frame.drop(columns=TARGET_COLUMNS))


async def post_each(url: str, all_bodies: Sequence[dict[str, Any]], clients: int) -> list[Any]:
    """POST every body once to `/predict`, `clients` at a time; every answer must be 200."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(all_bodies)):
        queue.put_nowait(index)
    answers: list[Any] = [None] * len(all_bodies)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one_client() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                answer = await client.post("/predict", json=all_bodies[index])
                assert answer.status_code == 200, answer.text
                answers[index] = answer.json()

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return answers


def under_load(lifecycle: Lifecycle, frame: pd.DataFrame, seconds: float = 45) -> Load:
    """The 32-client load the swaps happen under."""
    return Load(
        lifecycle.service.url, bodies(frame), clients=LOAD_CLIENTS, seconds=seconds, headers=AUTH
    )


@pytest.fixture(scope="module")
def lifecycle(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    synthetic_table: pd.DataFrame,
) -> Iterator[Lifecycle]:
    folder = tmp_path_factory.mktemp("lifecycle")
    url = postgres.new_database()
    upgrade_schema(url)
    registry = ModelRegistry(f"sqlite:///{folder / 'mlflow.db'}", "churn_lifecycle")
    settings = registry_settings(
        url, redis_server.url, registry, POLL_S, WORKERS, CHURN_REPORTS_DIR=str(folder / "reports")
    )
    # The operator's commands keep their own BentoML store (what `churn train` and `churn
    # retrain` save to); the service's is empty: its models come from the registry.
    env = {**os.environ, **settings, "BENTOML_HOME": str(folder / "operator-store")}
    day0_table = folder / "day0.csv"
    synthetic_table.to_csv(day0_table, index=False)
    subprocess.run(  # Day 0: the registry's first model becomes champion
        [
            str(CHURN),
            "train",
            "--data",
            str(day0_table),
            "--trials",
            "2",
            "--seed",
            "7",
            "--search-rows",
            "5000",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    service_env = {**settings, "CHURN_SPOOL_DIR": str(folder / "spool")}
    service = start_server(folder / "service-home", folder / "service.log", service_env)
    engine = make_engine(url)
    yield Lifecycle(
        service, engine, registry, env, folder, day0_table, ModelStore(folder / "variants")
    )
    service.stop()
    engine.dispose()


def test_the_design_lifecycle_from_day_0_to_a_promotion_under_load(
    lifecycle: Lifecycle,
) -> None:
    day0 = lifecycle.registry.assignment()
    assert day0.champion is not None and day0.challenger is None
    day0_version = lifecycle.served_version(day0.champion)
    lifecycle.wait_every_worker(f"now serves champion {day0_version}", since=0)

    # Month 1: drifted customers (tenure +1.5 σ), 16 clients at a time; their labels.
    month = lifecycle.customers("month1", MONTH_CUSTOMERS, seed=311, shift=SHIFT)
    answers = lifecycle.score_under_load(month)
    assert {a["model_version"] for a in answers} == {day0_version}
    assert {a["model_arm"] for a in answers} == {"champion"}
    lifecycle.send_labels(month, month["churned"].to_numpy())

    # Drift recorded, with a retraining trigger; the nightly retrain acts on it.
    drift = lifecycle.churn("drift", "--window", "2h")
    assert "retraining trigger" in drift and "significant drift in" in drift, drift
    (trigger,) = pending_triggers(lifecycle.engine)
    assert (trigger.reason, trigger.model_version) == ("drift", day0_version)
    since = lifecycle.log_offset()
    retrain = lifecycle.churn(
        "retrain", "--if-triggered", "--with-table", str(lifecycle.day0_table), "--trials", "2"
    )
    assert f"labelled customers ({int(month['churned'].sum())} churners)" in retrain, retrain
    assert pending_triggers(lifecycle.engine) == []
    assigned = lifecycle.registry.assignment()
    assert assigned.champion == day0.champion and assigned.challenger is not None
    assert assigned.challenger_share == pytest.approx(0.1)
    challenger = assigned.challenger
    challenger_version = lifecycle.served_version(challenger)
    registered = lifecycle.registry.audit_trail()
    (registration,) = [e for e in registered if e.version == challenger and e.action == "register"]
    assert registration.figures["triggers"] == [trigger.id]
    assert registration.figures["labelled_customers"] == MONTH_CUSTOMERS
    lifecycle.wait_every_worker(
        rf"now serves champion {day0_version}.*challenger {challenger_version}", since
    )

    # The experiment: a sticky tenth of customers, the same arm every time they come back.
    experiment = lifecycle.customers("month2", EXPERIMENT_CUSTOMERS, seed=312)
    first = lifecycle.score_batches(experiment)
    again = lifecycle.score_batches(experiment)
    arms = np.array([p["model_arm"] == "challenger" for p in first])
    assert np.array_equal(arms, [p["model_arm"] == "challenger" for p in again])
    assert abs(arms.mean() - 0.1) <= 0.02, arms.mean()
    versions = np.array([p["model_version"] for p in first])
    assert set(versions[arms]) == {challenger_version}
    assert set(versions[~arms]) == {day0_version}
    lifecycle.send_labels(experiment, experiment["churned"].to_numpy())

    # Too early: the stayers' horizon is open, only churners are known — no decision.
    early = lifecycle.churn("promote", expect=4)
    assert "no decision yet" in early, early
    lifecycle.fast_forward(HORIZON_DAYS + 1)

    # The promotion, while 32 clients load the service.
    since = lifecycle.log_offset()
    with under_load(lifecycle, experiment) as load:
        time.sleep(5)
        promoted = lifecycle.churn("promote", "--reason", "month 2 experiment")
        took = lifecycle.wait_every_worker(f"now serves champion {challenger_version}", since)
        assert load.elapsed() < load.seconds, "the swap must happen under the load"
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    assert load.result.ok > 1000
    print(f"promotion served by every worker {took:.1f} s after `churn promote` returned")
    assert f"version {challenger} promoted over {day0.champion}" in promoted, promoted
    after = lifecycle.registry.assignment()
    assert (after.champion, after.previous_champion, after.challenger) == (
        challenger,
        day0.champion,
        None,
    )
    entry = next(e for e in lifecycle.registry.audit_trail() if e.action == "set_champion")
    assert entry.version == challenger and "month 2 experiment" in entry.reason
    figures = entry.figures
    assert figures["rule"] == "non_inferior" and figures["promote"] is True, figures
    assert figures["experiment"]["counted"] == EXPERIMENT_CUSTOMERS
    assert figures["experiment"]["churners"] == int(experiment["churned"].sum())
    assert figures["roc_auc"]["p_value"] < figures["alpha"]
    answer = httpx.post(
        f"{lifecycle.service.url}/predict", json=bodies(experiment)[0], headers=AUTH
    )
    assert answer.json()["model_version"] == challenger_version


def test_a_worse_challenger_is_not_promoted(lifecycle: Lifecycle, trained: TrainingOutcome) -> None:
    before = lifecycle.registry.assignment()
    assert before.champion is not None
    worse_tag = variant(trained, lifecycle.source, intercept_shift=1.5)  # badly calibrated
    worse = lifecycle.registry.register(worse_tag, "test", "a worse model", store=lifecycle.source)
    since = lifecycle.log_offset()
    lifecycle.churn("registry", "challenger", worse, "--reason", "a worse model", "--share", "0.1")
    worse_version = worse_tag.split(":", 1)[1]
    lifecycle.wait_every_worker(rf"now serves .*challenger {worse_version}", since)

    customers = lifecycle.customers("month3", 4000, seed=313)
    lifecycle.score_batches(customers)
    lifecycle.send_labels(customers, customers["churned"].to_numpy())
    lifecycle.fast_forward(HORIZON_DAYS + 1)
    since = lifecycle.log_offset()
    kept = lifecycle.churn("promote", expect=3)
    assert f"champion {before.champion} kept, challenger {worse} cleared" in kept, kept
    after = lifecycle.registry.assignment()
    assert (after.champion, after.challenger) == (before.champion, None)
    cleared = next(e for e in lifecycle.registry.audit_trail() if e.action == "clear_challenger")
    assert cleared.figures["promote"] is False
    assert cleared.figures["rule"] in {"not_non_inferior", "auc_worse"}, cleared.figures
    champion_version = lifecycle.served_version(before.champion)
    alone = rf"now serves champion {champion_version} \(registry version {before.champion}\) \(was:"
    lifecycle.wait_every_worker(alone, since)  # no challenger any more


def test_a_promoted_model_breaking_its_accuracy_bar_rolls_back_under_load(
    lifecycle: Lifecycle,
) -> None:
    before = lifecycle.registry.assignment()
    assert before.champion is not None and before.previous_champion is not None
    previous = lifecycle.served_version(before.previous_champion)
    bars = json.dumps({"accuracy": 0.85})
    lifecycle.env["CHURN_PERFORMANCE_BARS"] = bars
    within = lifecycle.churn("guard")
    assert "nothing to judge" in within or "within its bars" in within, within

    # The promoted model's month: 40 % of its customers' outcomes go against it.
    customers = lifecycle.customers("month4", 1500, seed=314, shift=SHIFT)
    lifecycle.score_under_load(customers)
    truth = customers["churned"].to_numpy()
    flipped = np.random.default_rng(4).random(truth.size) < 0.4
    lifecycle.send_labels(customers, np.where(flipped, 1 - truth, truth))
    lifecycle.churn("performance", "--window", "1h")

    since = lifecycle.log_offset()
    with under_load(lifecycle, customers) as load:
        time.sleep(5)
        guarded = lifecycle.churn("guard")  # what the cron job runs
        took = lifecycle.wait_every_worker(f"now serves champion {previous}", since)
        assert load.elapsed() < load.seconds, "the rollback must happen under the load"
    assert load.result.failed == 0, (load.result.statuses, load.result.errors)
    print(f"rollback served by every worker {took:.1f} s after `churn guard` returned")
    assert "rolled back" in guarded, guarded
    after = lifecycle.registry.assignment()
    assert after.champion == before.previous_champion
    rollback = next(e for e in lifecycle.registry.audit_trail() if e.action == "rollback")
    assert rollback.version == before.previous_champion
    assert rollback.figures["measured"]["accuracy"] < 0.85
    assert rollback.figures["bars"] == {"accuracy": 0.85}
    assert f"champion {before.champion} live accuracy" in rollback.reason, rollback.reason
