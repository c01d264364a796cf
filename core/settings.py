"""Configuration: the one place for paths, names, thresholds and tunable defaults.

Values that an operator may change come from environment variables (prefix ``CHURN_``)
through :class:`Settings`; nothing here touches the disk or the network on import.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.setting_files import ValueFileSource, read_value_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODEL_NAME = "churn_model"
"""Name of the model in the BentoML store; the service serves ``churn_model:latest``."""

TARGET_COLUMN = "churned"
"""Label column of a training table (boolean or 0/1)."""

TRUE_PROBABILITY_COLUMN = "true_churn_probability"
"""Written by the synthetic generator; never read as a feature."""

MAX_BATCH_CUSTOMERS = 1000
"""Largest ``/predict/batch`` request; more is refused with 413."""


MAX_DEFAULT_WORKERS = 4
"""The default worker count is capped: each worker loads the model (≈ 350 MB), and a laptop
with many cores running the demo should not start one per core. Set CHURN_WORKERS to go
beyond."""


PROMOTION_METRICS: tuple[str, ...] = ("roc_auc", "f1", "brier", "top_decile_lift")
"""Metrics the promotion test compares; only brier is lower-is-better."""

DEFAULT_PROMOTION_MARGINS: dict[str, float] = {
    "roc_auc": 0.01,
    "f1": 0.02,
    "brier": 0.005,
    "top_decile_lift": 0.25,
}
"""Default non-inferiority margins: about 2.5 standard errors of the paired difference of two
equally good models at 5,000 labelled customers (500 churners; measured: F1 0.008, top-decile
lift 0.09, ROC-AUC 0.002, Brier 0.0003), so a retrained model as good as the champion is
shown non-inferior some 80 % of the time there. A margin of one SE (lift 0.1) would almost
never let an equal model through."""


class Settings(BaseSettings):
    """Runtime settings, read from ``CHURN_*`` environment variables, or from the file a
    ``CHURN_*_FILE`` variable names (secrets: core/setting_files.py)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first, then ``NAME_FILE`` files (both set is an error)."""
        return (init_settings, env_settings, ValueFileSource(settings_cls), dotenv_settings)

    bentoml_home: Path = Field(
        default=PROJECT_ROOT / "bentos",
        description="BentoML home (model store and built Bentos). BENTOML_HOME wins if set.",
    )
    data_dir: Path = PROJECT_ROOT / "data"
    reports_dir: Path = Field(
        default=PROJECT_ROOT / "reports", description="Plots and metrics written by training."
    )
    mlflow_tracking_uri: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}",
        description="Used when MLFLOW_TRACKING_URI is not set.",
    )
    mlflow_experiment: str = "churn"
    registered_model: str = Field(
        default=MODEL_NAME,
        description="MLflow registered model whose aliases (champion, challenger, "
        "previous_champion) decide what serves (core/registry.py).",
    )
    challenger_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of customers answered by the challenger when one is set without "
        "a share of its own (the design: 10 %).",
    )

    model_source: Literal["registry", "store"] = Field(
        default="registry",
        description="What the service serves: 'registry' — the registry's champion and "
        "challenger, followed while running (serving/model_watcher.py); while the registry "
        "has no champion, the store's newest model. 'store' — the store's newest model only "
        "(a Bento run without a registry).",
    )
    registry_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="Each worker reads the registry's assignment this often; a promotion "
        "serves everywhere within this plus the new model's load and checks (README).",
    )
    swap_max_latency_ms: float = Field(
        default=50.0,
        gt=0,
        description="A new model whose median one-customer scoring time exceeds this is "
        "refused before it takes traffic.",
    )
    rollback_error_rate: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="A champion whose scoring fails for more than this share of its last "
        "`rollback_min_answers` answers in a worker is rolled back (the design: 10 %); "
        "those requests are answered by the previous champion meanwhile.",
    )
    rollback_min_answers: int = Field(
        default=100, ge=1, description="Answers a champion's error rate is judged over."
    )
    retrain_months: int = Field(
        default=6, ge=1, description="`churn retrain`: months of labelled log it learns from."
    )
    retrain_min_labels: int = Field(
        default=1000,
        ge=100,
        description="`churn retrain` refuses to train on fewer labelled customers.",
    )
    retrain_holdout_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="`churn retrain`: the most recently labelled customers, this share of "
        "them, are held out; champion and challenger are scored on them before either serves.",
    )

    # Serving.
    risk_medium_from: float = Field(default=0.3, ge=0, le=1)
    risk_high_from: float = Field(default=0.6, ge=0, le=1)
    top_reasons: int = Field(default=3, ge=0, le=10)
    model_signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key for a stored model's checksums.json: training signs it, "
        "loading refuses a model whose signature is absent or wrong; unset: checksums only "
        "(they catch edited files, not an editor who also rewrites the manifest).",
    )
    max_batch_size: int = Field(default=128, gt=1, description="Adaptive batching: rows per call.")
    max_latency_ms: int = Field(
        default=10_000,
        gt=0,
        description="Adaptive batching: a queued request older than this is shed with 503; "
        "kept high so load is queued, not refused.",
    )

    # Production serving: storage, cache, security (issue 4). DATABASE_URL and REDIS_URL
    # keep their conventional names; the rest use the CHURN_ prefix.
    database_url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'data' / 'predictions.db'}",
        validation_alias=AliasChoices("DATABASE_URL", "CHURN_DATABASE_URL"),
        description="Prediction log and ground truth (SQLAlchemy URL; SQLite or PostgreSQL).",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "CHURN_REDIS_URL"),
        description="Shared cache and rate limits; unset: in-process cache and limits.",
    )
    api_keys: str | None = Field(
        default=None,
        description="Comma-separated API keys, or the path of a file with one per line; "
        "unset: authentication disabled (a warning is logged at start-up).",
    )
    rate_limit: str = Field(
        default="1000/minute", description="Requests per key per window: N/second|minute|hour."
    )
    auth_failure_limit: str = Field(
        default="20/minute",
        description="Failed authentications (missing or wrong API key) per client address "
        "per window, N/second|minute|hour; beyond it every protected request from the "
        "address gets 429 until the window frees, so keys cannot be guessed at full speed.",
    )
    cache_ttl_seconds: int = Field(default=300, ge=0, description="0 disables the cache.")
    local_cache_entries: int = Field(
        default=10_000, ge=0, description="In-process cache size when REDIS_URL is unset."
    )
    redis_timeout_ms: int = Field(
        default=100, gt=0, description="Per-call Redis timeout; slower means 'Redis is down'."
    )
    id_hash_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for customer ids in the log; unset: a random key kept in "
        "data/id-hash.key (created on first use).",
    )
    spool_dir: Path = Field(
        default=PROJECT_ROOT / "data" / "spool",
        description="Prediction-log rows wait here on disk while the database is down.",
    )
    log_queue_rows: int = Field(
        default=20_000, gt=0, description="Rows held in memory before spilling to the spool."
    )
    log_batch_rows: int = Field(default=500, gt=0, description="Rows per database insert.")
    log_flush_ms: int = Field(default=200, gt=0, description="Longest a row waits in memory.")
    log_journal: bool = Field(
        default=True,
        description="Append each answered prediction's row to a per-worker file (fdatasync, "
        "group commit) before the answer leaves, so a killed worker loses none.",
    )
    retention_days: int = Field(default=90, gt=0, description="`churn retention` default.")

    # Live model performance (`churn performance`, monitoring/performance.py).
    performance_window_days: int = Field(
        default=30, gt=0, description="`churn performance` window default (predictions served)."
    )
    performance_horizon_days: int = Field(
        default=90,
        gt=0,
        description="A label judges the customer's latest prediction served at most this "
        "many days before its observed_date.",
    )
    performance_min_labels: int = Field(
        default=1000,
        ge=1,
        description="Below this many joined labels a model version's measured figures are "
        "not claimed (None): at 1,000 labels accuracy's standard error is about 0.011, so a "
        "drop of `performance_max_drop` (0.03) is some 2.5 σ of sampling noise.",
    )
    performance_max_drop: float = Field(
        default=0.03,
        ge=0,
        le=1,
        description="A watched metric measured this much worse than the model's training "
        "figure is a degradation (the design: accuracy 0.89 → 0.85 triggers retraining).",
    )
    performance_drop_metrics: tuple[str, ...] = Field(
        default=("accuracy", "roc_auc"),
        description="Metrics the drop rule watches (JSON list); precision, recall and F1 "
        "rest on the predicted or actual churners only, several times noisier at equal "
        "label counts.",
    )
    performance_bars: dict[str, float] = Field(
        default_factory=dict,
        description='Absolute bars (JSON object, e.g. {"accuracy": 0.85}): a measured '
        "figure below its bar (above it for brier and ece) is a degradation. None by default: "
        "what is good depends on the data (synthetic 0.86 accuracy, Telco 0.80).",
    )
    monitoring_refresh_s: float = Field(
        default=15.0,
        ge=0,
        description="`/metrics` re-reads the monitoring jobs' latest results (drift, "
        "performance) when its copy is older than this.",
    )
    max_body_bytes: int = Field(
        default=2_000_000,
        gt=0,
        description="Larger request bodies are refused with 413. 1,000 customers with every "
        "field are 0.71 MB (0.83 MB indented), 10,000 labels 1.1 MB: twice that leaves room "
        "for extras, and halves what a refused body can cost.",
    )
    body_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="A request body not received within this many seconds is answered 408: "
        "a client that never finishes holds nothing for long.",
    )

    workers: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS),
        ge=1,
        description="Service worker processes; default one per CPU core, at most "
        f"{MAX_DEFAULT_WORKERS} (each holds the model, ≈ 350 MB). One worker on 2 cores "
        "leaves the second idle: at 300 req/s the p95 was 39 ms with one and 13–20 ms "
        "with two (BENCHMARKS.md).",
    )
    access_log: bool = Field(
        default=False,
        description="BentoML's per-request access log; off by default, it costs ~25 % of "
        "throughput (BENCHMARKS.md).",
    )
    bento_build: bool = Field(
        default=False,
        description="Set by `churn build`: the Bento records no worker count, so the machine "
        "that serves it resolves CHURN_WORKERS (or its own core count) instead of inheriting "
        "the build machine's.",
    )

    # Monitoring: drift (`churn drift`). The design's PSI bands: below moderate none,
    # below significant moderate, from significant on a retraining trigger.
    drift_moderate_psi: float = Field(
        default=0.1, gt=0, description="PSI from which drift is moderate."
    )
    drift_significant_psi: float = Field(
        default=0.25, gt=0, description="PSI from which drift is significant (retraining trigger)."
    )
    drift_report_rows: int = Field(
        default=50_000,
        ge=1000,
        description="Evidently's HTML report runs on a random sample of at most this many "
        "window rows (the alert PSI uses every row); its PSI error is bounded in the tests.",
    )

    # Promotion (`lifecycle/paired_tests.py`, `lifecycle/promotion.py`): champion and
    # challenger scored on the same labelled customers.
    promotion_margins: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PROMOTION_MARGINS),
        description="Non-inferiority margins (JSON object) of the watched metrics, in the "
        "metric's units: the challenger may be at most this much worse (higher for brier) "
        "than the champion. Keys among " + ", ".join(PROMOTION_METRICS) + "; roc_auc is "
        "always tested.",
    )
    promotion_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="One-sided level of each non-inferiority test; the intervals reported "
        "are two-sided 1 − 2·alpha, so their lower (upper for brier) bound is the test.",
    )
    promotion_min_churners: int = Field(
        default=200,
        ge=1,
        description="Fewer churners among the labelled customers: no decision (refused). "
        "At 200 churners DeLong's SE of an AUC difference is about 0.01–0.02.",
    )
    promotion_bootstrap_rounds: int = Field(
        default=2000, ge=100, description="Paired bootstrap resamples of the customers."
    )
    promotion_seed: int = Field(
        default=42, description="Seed of the paired bootstrap: a decision is reproducible."
    )

    # Training.
    seed: int = 42
    balance: Literal["none", "weight", "smote"] = Field(
        default="none",
        description="Class-imbalance handling; 'none' won on CV AUC on Telco and synthetic "
        "data once probabilities are calibrated (BENCHMARKS.md).",
    )
    linear_weight: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Weight of the logistic regression in the blend; unset: chosen on "
        "out-of-fold ROC-AUC.",
    )
    cv_folds: int = Field(default=5, ge=2)
    test_size: float = Field(default=0.2, gt=0, lt=1)
    min_training_rows: int = Field(
        default=1000,
        ge=1,
        description="`churn train --on-bad-rows skip` trains only if at least this many rows "
        "are left once bad rows are set aside (and 2 × cv_folds of each label).",
    )
    trials: int = Field(default=100, ge=1, description="Hyperparameter candidates tried.")
    search_rows: int = Field(
        default=20_000,
        ge=1000,
        description="Tuning runs on a stratified sample of at most this many training rows; "
        "the final fit uses them all.",
    )
    search_finalists: int = Field(
        default=3,
        ge=1,
        description="When tuning ran on a sample: its best candidates, cross-validated "
        "again on all training rows to pick the winner.",
    )

    @model_validator(mode="after")
    def _drift_bands_ascend(self) -> Settings:
        """A moderate band above the significant one would make "moderate" unreachable."""
        if self.drift_moderate_psi >= self.drift_significant_psi:
            raise ValueError("CHURN_DRIFT_MODERATE_PSI must be below CHURN_DRIFT_SIGNIFICANT_PSI")
        return self

    @model_validator(mode="after")
    def _promotion_margins_known(self) -> Settings:
        """A misspelt metric would silently go unwatched; a negative margin demands a gain."""
        unknown = set(self.promotion_margins) - set(PROMOTION_METRICS)
        if unknown:
            raise ValueError(f"CHURN_PROMOTION_MARGINS: unknown metrics {sorted(unknown)}")
        if any(m < 0 for m in self.promotion_margins.values()):
            raise ValueError("CHURN_PROMOTION_MARGINS: margins must be >= 0")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def mlflow_tracking_uri() -> str:
    """The MLflow tracking (and registry) store in force: ``MLFLOW_TRACKING_URI`` if set,
    MLflow's own variable (or the file ``MLFLOW_TRACKING_URI_FILE`` names: a database URL
    holds a password), else ``CHURN_MLFLOW_TRACKING_URI`` or the project's SQLite file."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or read_value_file("MLFLOW_TRACKING_URI")
        or get_settings().mlflow_tracking_uri
    )


def bentoml_home() -> Path:
    """The BentoML home in force: ``BENTOML_HOME`` if set, else the project's ``bentos/``."""
    return Path(os.environ.get("BENTOML_HOME") or get_settings().bentoml_home)


def use_project_bentoml_home() -> Path:
    """Point BentoML at the project's store unless the caller chose one (call before import).

    Made absolute: BentoML's package locking during `bentoml build` fails under a relative
    BENTOML_HOME (it looks for `<home>/tmp/…/requirements.in` from another directory).
    """
    home = bentoml_home().resolve()
    os.environ["BENTOML_HOME"] = str(home)
    return home
