"""The drift job end to end on SQLite and real PostgreSQL: a week of traffic whose tenure is
drifted by 1.5 standard deviations and a control week, logged as the service logs them,
against the session's trained model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from cli import app
from core.pipeline.encode import encode_frame
from core.pipeline.store import REFERENCE_FILE, load_predictor, save_predictor
from core.schema import CustomerData
from core.settings import get_settings
from monitoring.database import DRIFT_RESULTS, make_engine, upgrade_schema
from monitoring.drift import DriftRun, run_drift
from monitoring.records import PredictionRecord, insert_rows, record_row
from monitoring.triggers import pending_triggers
from tests.monitoring.tenure_shift import DERIVED_FROM_TENURE, SHIFT
from training.generate import generate_customers
from training.train import TrainingOutcome

NOW = datetime(2026, 3, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
ROWS = 3000


def logged_fields(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Each customer's fields as the service logs them: validated, JSON mode, no nulls."""
    rows = frame.drop(columns=["churned", "true_churn_probability"]).astype(object)
    rows = rows.where(rows.notna(), None)
    return [
        CustomerData.model_validate({k: v for k, v in row.items() if v is not None}).model_dump(
            mode="json", exclude_none=True
        )
        for row in rows.to_dict("records")
    ]


def log_week(
    engine: Engine, version: str, frame: pd.DataFrame, end: datetime, model: TrainingOutcome
) -> None:
    """Score the customers with the model and log them over the week before `end`."""
    probabilities = model.predictor.predict_proba(encode_frame(frame))
    step = WEEK / (len(frame) + 1)
    records = [
        record_row(
            PredictionRecord(
                request_id=f"req-{i}",
                customer_hash=f"{i:064x}",
                model_version=version,
                features=fields,
                churn_probability=float(p),
                will_churn=bool(p >= 0.5),
                risk_level="low",
                latency_ms=1.0,
                cache="miss",
                endpoint="batch",
                created_at=end - WEEK + step * (i + 1),
            )
        )
        for i, (fields, p) in enumerate(zip(logged_fields(frame), probabilities, strict=True))
    ]
    with engine.begin() as connection:
        insert_rows(connection, records)


@pytest.fixture(scope="module")
def weeks() -> dict[str, pd.DataFrame]:
    return {
        "control": generate_customers(ROWS, seed=101),
        "drifted": generate_customers(ROWS, seed=102, shift=SHIFT),
    }


@pytest.fixture
def logged(engine: Engine, trained: TrainingOutcome, weeks: dict[str, pd.DataFrame]) -> str:
    """Control week before NOW − 7 d, drifted week before NOW; the model's version."""
    version = (trained.tag or "").split(":")[1]
    log_week(engine, version, weeks["control"], NOW - WEEK, trained)
    log_week(engine, version, weeks["drifted"], NOW, trained)
    return version


def by_name(run: DriftRun) -> dict[str, float]:
    assert len(run.versions) == 1
    return {c.column: c.psi for c in run.versions[0].columns}


def test_drifted_week_flags_tenure_and_what_derives_from_it_and_records_a_trigger(
    engine: Engine, logged: str, tmp_path: Path
) -> None:
    run = run_drift(engine, WEEK, now=NOW, out=tmp_path, progress=False)
    (version,) = run.versions
    assert version.model_version == logged and version.rows == ROWS
    assert version.missing_reference == []
    assert {c.kind for c in version.columns} == {"feature", "input", "prediction"}
    psi = by_name(run)
    for name in DERIVED_FROM_TENURE:
        assert psi[name] >= 0.25, (name, psi[name])
    others = {n: v for n, v in psi.items() if n not in DERIVED_FROM_TENURE | {"churn_probability"}}
    assert len(others) > 30 and max(others.values()) < 0.1, others
    # Tenure lowers churn: the served probabilities move with it.
    assert psi["churn_probability"] >= 0.1
    assert {c.column for c in version.significant} == DERIVED_FROM_TENURE

    # Evidently's report used the same stat test: its figures agree with the alert PSI.
    for column in version.columns:
        assert column.evidently_psi == pytest.approx(column.psi, abs=0.01), column.column
    assert version.report_path is not None and version.report_path.stat().st_size > 100_000
    summary = json.loads((tmp_path / "drift_summary.json").read_text())
    assert summary["run_id"] == run.run_id
    assert set(summary["versions"][0]["significant"]) == DERIVED_FROM_TENURE

    with engine.connect() as connection:
        rows = connection.execute(
            select(DRIFT_RESULTS).where(DRIFT_RESULTS.c.run_id == run.run_id)
        ).all()
    assert len(rows) == len(version.columns)
    stored = {r.column: r for r in rows}
    assert stored["tenure_months"].band == "significant" and stored["tenure_months"].kind == "input"
    assert stored["tenure_years"].kind == "feature" and stored["age"].band == "none"
    assert stored["churn_probability"].kind == "prediction"
    assert stored["tenure_months"].current_rows == ROWS
    assert stored["tenure_months"].window_end == NOW

    (trigger,) = pending_triggers(engine)
    assert trigger.id == version.trigger_id
    assert (trigger.reason, trigger.model_version) == ("drift", logged)
    assert set(trigger.features) == DERIVED_FROM_TENURE
    assert trigger.figures["psi"]["tenure_months"] == pytest.approx(psi["tenure_months"], abs=1e-5)


def test_control_week_has_no_drift_and_no_trigger(engine: Engine, logged: str) -> None:
    run = run_drift(engine, WEEK, now=NOW - WEEK, progress=False)
    psi = by_name(run)
    assert max(psi.values()) < 0.1, sorted(psi.items(), key=lambda kv: -kv[1])[:5]
    assert run.versions[0].trigger_id is None
    assert pending_triggers(engine) == []
    with engine.connect() as connection:
        bands = {r.band for r in connection.execute(select(DRIFT_RESULTS.c.band))}
    assert bands == {"none"}


def test_rows_are_attributed_to_the_version_that_served_them(
    engine: Engine, logged: str, trained: TrainingOutcome, weeks: dict[str, pd.DataFrame]
) -> None:
    log_week(engine, "gone-version", weeks["control"].head(50), NOW, trained)
    run = run_drift(engine, WEEK, now=NOW, progress=False)
    versions = {v.model_version: v for v in run.versions}
    assert versions[logged].rows == ROWS and versions["gone-version"].rows == 50
    assert versions["gone-version"].problem and versions["gone-version"].columns == []
    only = run_drift(engine, WEEK, now=NOW, model=trained.tag, progress=False, record=False)
    assert [v.model_version for v in only.versions] == [logged]


@pytest.fixture
def older_model(trained: TrainingOutcome) -> Iterator[str]:
    """The trained pipeline stored as models were before raw-input and probability
    references: features only."""
    reference = pd.read_parquet(load_predictor(trained.tag or "").path / REFERENCE_FILE)
    tag = save_predictor(trained.predictor, trained.metadata, reference)
    yield tag.split(":")[1]
    bentoml.models.delete(tag)


def test_a_model_stored_without_the_newer_reference_parts_is_compared_on_what_it_has(
    engine: Engine, older_model: str, trained: TrainingOutcome, weeks: dict[str, pd.DataFrame]
) -> None:
    log_week(engine, older_model, weeks["drifted"], NOW, trained)
    run = run_drift(engine, WEEK, now=NOW, progress=False)
    (version,) = run.versions
    assert version.missing_reference == ["inputs", "predictions"]
    assert {c.kind for c in version.columns} == {"feature"}
    assert by_name(run)["tenure_years"] >= 0.25


def test_churn_drift_command(
    tmp_path: Path,
    trained: TrainingOutcome,
    weeks: dict[str, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    log_week(
        engine, (trained.tag or "").split(":")[1], weeks["drifted"], datetime.now(UTC), trained
    )
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["drift", "--window", "7d", "--out", str(out)])
        refused = CliRunner().invoke(app, ["drift", "--window", "a week"])
        unknown = CliRunner().invoke(app, ["drift", "--model", "churn_model:nosuchversion"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "tenure_months" in result.output and "significant" in result.output
    assert "retraining trigger" in result.output
    assert (out / "drift_summary.json").exists() and list(out.glob("drift_report_*.html"))
    assert len(pending_triggers(engine)) == 1
    assert refused.exit_code == 2 and unknown.exit_code == 2
    engine.dispose()


def test_the_shifted_generator_moves_only_tenure_and_its_definitions() -> None:
    base = generate_customers(2000, seed=9)
    moved = generate_customers(2000, seed=9, shift=SHIFT)
    shift = moved["tenure_months"].mean() - base["tenure_months"].mean()
    assert shift == pytest.approx(1.5 * base["tenure_months"].std(ddof=0), rel=0.02)
    for name in ("contract", "age", "monthly_charges", "support_calls", "online_security"):
        pd.testing.assert_series_equal(base[name], moved[name])
    assert (moved["signup_date"].dropna() < base["signup_date"].dropna()).all()
    assert np.all(moved["total_charges"] >= base["total_charges"])
    with pytest.raises(ValueError, match="cannot shift"):
        generate_customers(10, seed=1, shift={"contract": 1.0})
