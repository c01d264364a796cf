"""Model swap without restart, against real servers (issue 16, acceptance 1 and 2): two
replicas — two `bentoml serve` processes of two workers each, each replica with its own
BentoML store — share one MLflow registry, one PostgreSQL log and one Redis. They converge
on a promotion under a 32-client load with no failed request, every worker saying so in
its replica's log; they split customers stickily and identically for a challenger; and a
corrupt or mismatched model is refused by every worker while the champion serves on."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from bentoml._internal.models import ModelStore
from sqlalchemy import Engine, func, select

from core.registry import ModelRegistry
from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies, start_server
from monitoring.database import PREDICTIONS, make_engine, upgrade_schema
from tests.core.test_registry import artifact_folder, copy_model
from tests.lifecycle.model_variants import variant
from tests.serving.conftest import KEYS, registry_settings
from tests.serving.load import Load
from training.generate import generate_customers
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

AUTH = {"X-API-Key": KEYS[0]}
POLL_S = 1.0
CONVERGENCE_S = POLL_S + 30
"""The bound asserted: the poll interval plus fetching, loading, checking and warming a
model (about 1–3 s each here), with room for a loaded 2-core machine."""
WORKERS = 2


@dataclass
class Rollout:
    registry: ModelRegistry
    source: ModelStore
    replicas: list[ServerProcess]
    engine: Engine
    bodies: list[dict[str, object]]

    def serving_lines(self, replica: ServerProcess, version: str) -> set[str]:
        """The workers of `replica` whose log says they now serve `version` as champion."""
        pattern = re.compile(rf"worker (\S+) now serves champion {re.escape(version)}\b")
        return set(pattern.findall(replica.log_path.read_text(errors="replace")))

    def refusing_workers(self, replica: ServerProcess, registered: str) -> set[str]:
        pattern = re.compile(rf"worker (\S+) refuses registry version {registered} as")
        return set(pattern.findall(replica.log_path.read_text(errors="replace")))

    def wait_for(self, what: str, done: object, bound: float = CONVERGENCE_S) -> float:
        """Seconds until `done()` holds; fails past `bound`."""
        start = time.monotonic()
        while not done():  # type: ignore[operator]
            assert time.monotonic() - start < bound, f"{what}: not within {bound:.0f} s"
            time.sleep(0.2)
        return time.monotonic() - start


@pytest.fixture(scope="module")
def rollout(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[Rollout]:
    folder = tmp_path_factory.mktemp("rollout")
    registry = ModelRegistry(f"sqlite:///{folder / 'mlflow.db'}", "churn_rollout")
    source = ModelStore(folder / "source-store")
    first = registry.register(copy_model(trained, source), "test", "day 0", store=source)
    registry.set_champion(first, "test", "day 0: the first model")
    url = postgres.new_database()
    upgrade_schema(url)
    env = registry_settings(
        url, redis_server.url, registry, POLL_S, WORKERS, CHURN_CACHE_TTL_SECONDS="0"
    )
    replicas = []
    for name in ("a", "b"):
        home = folder / f"replica-{name}"  # an empty store: the models come from the registry
        replica_env = {**env, "CHURN_SPOOL_DIR": str(folder / f"spool-{name}")}
        replicas.append(start_server(home, folder / f"replica-{name}.log", replica_env))
    customers = generate_customers(5000, seed=31).drop(
        columns=["churned", "true_churn_probability"]
    )
    engine = make_engine(url)
    yield Rollout(registry, source, replicas, engine, request_bodies(customers))
    for replica in replicas:
        replica.stop()
    engine.dispose()


def champion_version(rollout: Rollout) -> str:
    return str(rollout.registry.assignment().champion_tag).split(":")[1]


def test_both_replicas_serve_the_registrys_champion_not_their_stores_latest(
    rollout: Rollout,
) -> None:
    version = champion_version(rollout)
    rollout.wait_for(
        "every worker serving the champion",
        lambda: all(len(rollout.serving_lines(r, version)) == WORKERS for r in rollout.replicas),
    )
    for replica in rollout.replicas:
        answer = httpx.post(f"{replica.url}/predict", json=rollout.bodies[0], headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == version
        assert answer.json()["model_arm"] == "champion"


def test_a_promotion_reaches_every_worker_of_both_replicas_under_load_without_a_failure(
    rollout: Rollout, trained: TrainingOutcome
) -> None:
    old = champion_version(rollout)
    new_tag = variant(trained, rollout.source, intercept_shift=0.2)
    new = rollout.registry.register(new_tag, "test", "retrained", store=rollout.source)
    new_version = new_tag.split(":")[1]
    loads = [
        Load(r.url, rollout.bodies[:2000], clients=16, seconds=25, headers=AUTH)
        for r in rollout.replicas
    ]
    with loads[0], loads[1]:
        time.sleep(6)
        promoted_at = time.monotonic()
        rollout.registry.set_champion(new, "test", "promoted")
        took = rollout.wait_for(
            "every worker serving the new champion",
            lambda: all(
                len(rollout.serving_lines(r, new_version)) == WORKERS for r in rollout.replicas
            ),
        )
        assert time.monotonic() - promoted_at < 25 - 6  # the switch happened under load
    for load in loads:
        assert load.result.failed == 0, (load.result.statuses, load.result.errors)
        assert load.result.ok > 500
    print(f"all {2 * WORKERS} workers serve the promotion {took:.1f} s after it")
    with rollout.engine.connect() as connection:
        served = set(connection.scalars(select(PREDICTIONS.c.model_version).distinct()))
    assert {old, new_version} <= served
    for replica in rollout.replicas:
        answer = httpx.post(f"{replica.url}/predict", json=rollout.bodies[1], headers=AUTH)
        assert answer.json()["model_version"] == new_version


def test_a_challenger_gets_the_same_sticky_tenth_on_both_replicas_with_shadow_scores(
    rollout: Rollout, trained: TrainingOutcome
) -> None:
    tag = variant(trained, rollout.source, intercept_shift=-0.2)
    challenger = rollout.registry.register(tag, "test", "challenger", store=rollout.source)
    rollout.registry.set_challenger(challenger, "test", "A/B", share=0.1)
    version = tag.split(":")[1]

    def arms(replica: ServerProcess) -> np.ndarray:
        found = []
        with httpx.Client(base_url=replica.url, headers=AUTH, timeout=60) as client:
            for start in range(0, len(rollout.bodies), 1000):
                chunk = {"customers": rollout.bodies[start : start + 1000]}
                answer = client.post("/predict/batch", json=chunk)
                assert answer.status_code == 200, answer.text
                found += [p["model_arm"] == "challenger" for p in answer.json()["predictions"]]
        return np.array(found)

    def everyone_has_it() -> bool:
        pattern = f"challenger {version}"
        return all(
            len(set(re.findall(rf"worker (\S+) now serves .*{pattern}", r.log_path.read_text())))
            == WORKERS
            for r in rollout.replicas
        )

    rollout.wait_for("every worker serving the challenger", everyone_has_it)
    first, second, again = (
        arms(rollout.replicas[0]),
        arms(rollout.replicas[1]),
        arms(rollout.replicas[0]),
    )
    assert np.array_equal(first, second) and np.array_equal(first, again)
    assert abs(first.mean() - 0.1) <= 0.02
    paired = select(func.count()).where(PREDICTIONS.c.shadow_version.is_not(None))

    def logged() -> bool:
        with rollout.engine.connect() as connection:
            return int(connection.scalar(paired) or 0) >= 3 * len(rollout.bodies)

    rollout.wait_for("the paired rows in the log", logged)
    with rollout.engine.connect() as connection:
        rows = connection.execute(
            select(
                PREDICTIONS.c.model_arm,
                PREDICTIONS.c.model_version,
                PREDICTIONS.c.shadow_version,
                PREDICTIONS.c.shadow_probability,
            ).where(PREDICTIONS.c.shadow_version.is_not(None))
        ).all()
    assert len(rows) >= 3 * 5000
    champion = champion_version(rollout)
    for arm, answered, shadow, probability in rows:
        assert (answered, shadow) == (
            (version, champion) if arm == "challenger" else (champion, version)
        )
        assert 0 <= probability <= 1
    rollout.registry.clear_challenger("test", "done")


def test_a_corrupt_champion_and_a_mismatched_challenger_are_refused_by_every_worker(
    rollout: Rollout, trained: TrainingOutcome
) -> None:
    serving = champion_version(rollout)
    good = rollout.registry.assignment().champion
    corrupt = rollout.registry.register(
        copy_model(trained, rollout.source), "test", "to corrupt", store=rollout.source
    )
    booster = artifact_folder(rollout.registry, corrupt) / "model.json"
    booster.write_bytes(booster.read_bytes().replace(b'"', b"'", 1))
    rollout.registry.set_champion(corrupt, "test", "a corrupt promotion")
    rollout.wait_for(
        "every worker refusing the corrupt model",
        lambda: all(len(rollout.refusing_workers(r, corrupt)) == WORKERS for r in rollout.replicas),
    )
    for replica in rollout.replicas:
        answer = httpx.post(f"{replica.url}/predict", json=rollout.bodies[2], headers=AUTH)
        assert answer.status_code == 200 and answer.json()["model_version"] == serving
    refused = [
        e for e in rollout.registry.audit_trail() if e.version == corrupt and e.action == "refused"
    ]
    assert len({e.actor for e in refused}) == 2 * WORKERS
    assert all(e.figures["check"] == "checksum" for e in refused)

    rollout.registry.set_champion(str(good), "test", "back to the good model")
    mismatched = rollout.registry.register(
        variant(trained, rollout.source, extra_column="tv_minutes"),
        "test",
        "trained on another table",
        store=rollout.source,
    )
    rollout.registry.set_challenger(mismatched, "test", "A/B", share=0.5)
    rollout.wait_for(
        "every worker refusing the mismatched model",
        lambda: all(
            len(rollout.refusing_workers(r, mismatched)) == WORKERS for r in rollout.replicas
        ),
    )
    refused = [
        e
        for e in rollout.registry.audit_trail()
        if e.version == mismatched and e.action == "refused"
    ]
    assert {e.figures["check"] for e in refused} == {"contract"}
    for replica in rollout.replicas:
        answer = httpx.post(f"{replica.url}/predict", json=rollout.bodies[3], headers=AUTH)
        assert (
            answer.json()["model_version"] == serving and answer.json()["model_arm"] == "champion"
        )
