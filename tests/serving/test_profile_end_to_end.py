"""A differently shaped table, mapped by a hand-written profile with two extra columns,
trains and serves end to end (the service in this process, over a store holding only that
model)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
import pytest
import yaml

from launchers.server_process import request_bodies
from tests.serving.conftest import AppWith
from tests.serving.inprocess import InProcessApp
from training.generate import generate_customers
from training.profiles import apply_profile, load_profile
from training.train import TrainingOptions, TrainingOutcome, train_model

DAYS_PER_MONTH = 30.4375
NET = {"Fiber": "FIB", "DSL": "DSL", "None": "NONE"}
PLAN = {"Month-to-month": "M2M", "One year": "1Y", "Two year": "2Y"}
PAY = {
    "Electronic check": "ECHECK",
    "Mailed check": "CHECK",
    "Bank transfer (automatic)": "BANK",
    "Credit card (automatic)": "CARD",
}
PROFILE = {
    "name": "billing-export",
    "rename": {
        "ref": "customer_id",
        "days_active": "tenure_months",
        "bill": "monthly_charges",
        "billed_total": "total_charges",
        "net": "internet_service",
        "plan": "contract",
        "pay": "payment_method",
        "tickets": "support_calls",
    },
    "values": {
        "internet_service": {code: name for name, code in NET.items()},
        "contract": {code: name for name, code in PLAN.items()},
        "payment_method": {code: name for name, code in PAY.items()},
    },
    "units": {"tenure_months": 1 / DAYS_PER_MONTH},
    "target": {"column": "status", "positive": "LEFT"},
    "extras": [
        {"name": "region", "source": "sales_region", "kind": "category"},
        {"name": "nps", "kind": "number"},
    ],
}


def foreign_table(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic customers exported by another system: other names, codes and units."""
    base = generate_customers(rows, seed)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ref": base["customer_id"],
            "days_active": base["tenure_months"] * DAYS_PER_MONTH,
            "bill": base["monthly_charges"],
            "billed_total": base["total_charges"],
            "net": base["internet_service"].map(NET),
            "plan": base["contract"].map(PLAN),
            "pay": base["payment_method"].map(PAY),
            "tickets": base["support_calls"],
            "sales_region": rng.choice(["north", "south", "west"], rows),
            # A satisfaction score that carries churn signal the schema has no field for.
            "nps": np.round(9 - 8 * base["true_churn_probability"] + rng.normal(0, 1, rows), 1),
            "status": np.where(base["churned"] == 1, "LEFT", "STAYED"),
        }
    )


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrainingOutcome, Path]]:
    """Train on the foreign table; that model alone in a BentoML home of its own."""
    folder = tmp_path_factory.mktemp("profiled")
    (folder / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    frame, extras = apply_profile(foreign_table(6000, 5), load_profile(folder / "profile.yaml"))
    options = TrainingOptions(trials=3, seed=5, progress=False)
    outcome = train_model(frame, options, folder / "reports", extras)
    assert outcome.tag is not None
    model = bentoml.models.get(outcome.tag)
    home = folder / "bentoml"
    target = home / "models" / "churn_model" / model.tag.version
    shutil.copytree(model.path, target)
    (target.parent / "latest").write_text(str(model.tag.version))
    bentoml.models.delete(outcome.tag)  # keep the session store's latest model untouched
    yield outcome, home


@pytest.fixture
def served(app_with: AppWith, profiled: tuple[TrainingOutcome, Path]) -> InProcessApp:
    """The service in this process over the profiled model's home."""
    return app_with(home=profiled[1])


@pytest.fixture(scope="module")
def bodies(profiled: tuple[TrainingOutcome, Path]) -> list[dict[str, Any]]:
    outcome, _ = profiled
    return request_bodies(outcome.test_frame.iloc[:50], outcome.predictor.extras)


def test_extras_are_model_features(profiled: tuple[TrainingOutcome, Path]) -> None:
    outcome, _ = profiled
    assert [c.name for c in outcome.predictor.extras] == ["region", "nps"]
    assert outcome.predictor.extras[0].categories == ("north", "south", "west")
    assert {"extra_region", "extra_nps"} <= set(outcome.predictor.feature_names)
    assert outcome.metadata["feature_importance"]["extra_nps"] > 0
    assert outcome.metrics["roc_auc"] > 0.75


def test_served_probabilities_match_training(
    profiled: tuple[TrainingOutcome, Path], served: InProcessApp, bodies: list[dict[str, Any]]
) -> None:
    outcome, _ = profiled
    assert served.get("/health").json()["model_version"] == (outcome.tag or "").split(":")[1]
    assert bodies[0]["extra"].keys() == {"region", "nps"}
    answers = [served.post("/predict", json=b) for b in bodies[:20]]
    assert [r.status_code for r in answers] == [200] * 20, answers[0].text
    expected = outcome.predictor.predict_proba(outcome.test_raw[:20])
    np.testing.assert_allclose(
        [r.json()["churn_probability"] for r in answers], expected, atol=1e-6
    )
    batch = served.post("/predict/batch", json=bodies)
    assert batch.status_code == 200
    got = [p["churn_probability"] for p in batch.json()["predictions"]]
    np.testing.assert_allclose(
        got, outcome.predictor.predict_proba(outcome.test_raw[:50]), atol=1e-6
    )


@pytest.mark.parametrize(
    ("extra", "field", "rule"),
    [
        (None, "extra.region", "missing"),
        ({"nps": 5.0}, "extra.region", "missing"),
        ({"region": "mars", "nps": 5.0}, "extra.region", "literal_error"),
        ({"region": "north", "nps": "high"}, "extra.nps", "finite_number"),
        ({"region": "north", "nps": 5.0, "colour": "red"}, "extra.colour", "extra_forbidden"),
    ],
)
def test_extras_are_checked_against_the_model(
    served: InProcessApp,
    bodies: list[dict[str, Any]],
    extra: dict[str, Any] | None,
    field: str,
    rule: str,
) -> None:
    body = {k: v for k, v in bodies[0].items() if k != "extra"}
    if extra is not None:
        body["extra"] = extra
    answer = served.post("/predict", json=body)
    assert answer.status_code == 422, answer.text
    assert {"field": field, "rule": rule} in [
        {"field": d["field"], "rule": d["rule"]} for d in answer.json()["detail"]
    ]
    batch = served.post("/predict/batch", json=[bodies[1], body])
    assert batch.status_code == 422
    assert batch.json()["detail"][0]["field"] == f"[1].{field}"
