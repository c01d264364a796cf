"""`churn drift` on 1,000,000 logged rows read from PostgreSQL: seconds per stage, ≤ 60 s target.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/drift_speed.py --rows 1000000

Starts a throw-away PostgreSQL (launchers/pg_server.py), trains a small demo model into a
temporary BentoML home (or takes `--model` from the project's store), generates `--rows`
synthetic customers with `tenure_months` shifted by 1.5 standard deviations, scores them
with the model and COPYs them into `predictions` as the service logs them (the request's
fields as JSON, the served probability, the model version). Then runs the drift job over
the window (`run_drift`: read, rebuild features, PSI over every row, Evidently's report
on its sample, `drift_results` rows and the trigger) and prints each stage's seconds.
Filling the table is not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_SECONDS = 60.0
COPY_COLUMNS = (
    "id, request_id, customer_hash, model_version, features, churn_probability, will_churn, "
    "risk_level, latency_ms, cache, endpoint, created_at"
)


def logged_documents(frame: pd.DataFrame) -> list[str]:
    """Each customer's fields as the service logs them: JSON, dates as ISO days."""
    fields = frame.drop(columns=["customer_id", "churned", "true_churn_probability"])
    fields["signup_date"] = fields["signup_date"].dt.strftime("%Y-%m-%d")
    text = fields.to_json(orient="records", lines=True)
    return text.splitlines()


def fill(
    url: str, version: str, documents: list[str], probabilities: np.ndarray, end: datetime
) -> None:
    """COPY the rows into `predictions`, spread over the week before `end`."""
    import psycopg

    week = timedelta(days=7).total_seconds()
    offsets = np.linspace(1.0, week - 1.0, len(documents))
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY predictions ({COPY_COLUMNS}) FROM STDIN") as copy:
            for i, (document, p) in enumerate(zip(documents, probabilities, strict=True)):
                copy.write_row(
                    (
                        os.urandom(16).hex(), "bench", f"{i:064x}", version, document,
                        float(p), bool(p >= 0.5), "low", 1.0, "miss", "batch",
                        end - timedelta(seconds=float(offsets[i])),
                    )
                )  # fmt: skip
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE predictions")


def model_tag(given: str | None, scratch: Path) -> str:
    """`--model` from the project's store, else a small demo model trained in `scratch`."""
    if given:
        from core.settings import use_project_bentoml_home

        use_project_bentoml_home()
        return given
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    from training.generate import generate_customers
    from training.train import TrainingOptions, train_model

    options = TrainingOptions(trials=5, seed=7, progress=False, search_rows=8000)
    outcome = train_model(generate_customers(20_000, seed=7), options, scratch / "reports")
    assert outcome.tag is not None
    return outcome.tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", help="A model tag in the project's store (default: train one).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (report).")
    args = parser.parse_args()

    from launchers.pg_server import PostgresServer

    scratch = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    server = PostgresServer()
    server.start()
    try:
        url = server.new_database()
        from core.pipeline.encode import encode_frame
        from core.pipeline.store import load_predictor
        from monitoring.database import make_engine, upgrade_schema
        from monitoring.drift import run_drift
        from training.generate import generate_customers

        stored = load_predictor(model_tag(args.model, scratch))
        engine = make_engine(url)
        upgrade_schema(engine)
        end = datetime.now(UTC).replace(microsecond=0)
        started = time.perf_counter()
        customers = generate_customers(args.rows, seed=5, shift={"tenure_months": 1.5})
        probabilities = stored.predictor.predict_proba(encode_frame(customers))
        fill(url, stored.version, logged_documents(customers), probabilities, end)
        print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.1f} s (not timed)")

        run = run_drift(engine, timedelta(days=7), now=end, out=scratch / "out")
        version = run.versions[0]
        significant = ", ".join(c.column for c in version.significant)
        print(f"\nmodel {version.model_version}: {version.rows:,} rows, report on "
              f"{version.report_rows:,}; significant: {significant}")  # fmt: skip
        for stage in ("read", "features", "psi", "report", "record"):
            print(f"  {stage:<7} {run.seconds.get(stage, 0.0):6.1f} s")
        total = run.seconds["total"]
        verdict = "meets" if total <= TARGET_SECONDS else "MISSES"
        print(f"  total   {total:6.1f} s  ({verdict} the {TARGET_SECONDS:.0f} s target)")
        engine.dispose()
    finally:
        server.cleanup()
        if args.keep:
            print(f"scratch folder (model, HTML report, summary): {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
