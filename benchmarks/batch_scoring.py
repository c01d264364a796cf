"""Batch scoring and Dask training against their baselines, measured in the same run.

1. `churn score` of `--rows` synthetic customers (Parquet part files, generated once with
   `generate_customers` in chunks of 1,000,000 and reused) on a 2-process LocalCluster
   (`--engine dask`) and in one process (`--engine local`), against XGBoost's raw
   `inplace_predict` on the same rows already encoded and transformed (the limit: no
   reading, validation, encoding or writing). Rows/s and peak memory (summed RSS of the
   command's process tree, sampled every 0.2 s) for each, with the ratios.
2. `churn train --engine dask` on `--train-rows` customers against `churn train` on the
   same file with the same options: held-out ROC-AUC on the same split (the difference
   must stay within 0.005), time and peak memory.

Everything is saved to a BentoML store and MLflow file of the run's own (a temporary
folder), never the project's.

    .venv/bin/python benchmarks/batch_scoring.py --rows 10000000 --train-rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHUNK_ROWS = 1_000_000
CHURN = [sys.executable, "-c", "from cli import app; app()"]


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    output: str


def peak_rss(process: psutil.Process) -> int:
    """RSS of a process and all its descendants (Dask's nanny and worker processes)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_measured(command: list[str], env: dict[str, str]) -> Measured:
    """Run a command, sampling its process tree's memory; fails loudly if it fails."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    watched = psutil.Process(child.pid)
    peak = 0
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout or []))
    reader.start()
    while child.poll() is None:
        peak = max(peak, peak_rss(watched))
        time.sleep(0.2)
    reader.join()
    output = b"".join(lines).decode(errors="replace")
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return Measured(time.perf_counter() - started, peak, output)


def ensure_customers(folder: Path, rows: int) -> list[Path]:
    """`rows` customers as Parquet part files of `CHUNK_ROWS`, generated once."""
    from training.generate import generate_customers

    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for index in range(-(-rows // CHUNK_ROWS)):
        path = folder / f"part.{index:06d}.parquet"
        size = min(CHUNK_ROWS, rows - index * CHUNK_ROWS)
        if not path.exists() or pd.read_parquet(path, columns=["churned"]).shape[0] != size:
            chunk = generate_customers(size, seed=1000 + index)
            chunk["customer_id"] = f"P{index:04d}-" + chunk["customer_id"].astype(str)
            chunk.to_parquet(path, index=False)
            print(f"generated {path} ({size:,} customers)", flush=True)
        parts.append(path)
    return parts


def raw_predict_limit(parts: list[Path], tag: str) -> tuple[int, float, int]:
    """XGBoost's `inplace_predict` on the encoded, transformed rows: rows, seconds of the
    predictions alone (2 threads), peak RSS of this process."""
    from core.pipeline.encode import encode_frame
    from core.pipeline.store import load_predictor
    from training.data import validate_table

    predictor = load_predictor(tag).predictor
    predictor.booster.set_param({"nthread": 2})
    rows, seconds, peak = 0, 0.0, 0
    for path in parts:
        typed = validate_table(pd.read_parquet(path), require_target=False)
        features = predictor.transform(encode_frame(typed)).astype(np.float32)
        started = time.perf_counter()
        predictor.booster.inplace_predict(features)
        seconds += time.perf_counter() - started
        rows += len(features)
        peak = max(peak, psutil.Process().memory_info().rss)
        del typed, features
    return rows, seconds, peak


def scored_rows(output: str) -> tuple[int, float]:
    """Rows and the command's own rows/s from `churn score`'s summary line."""
    found = next(text for text in output.splitlines() if "scored " in text)
    line = found[found.index("scored ") :]
    rows = int(line.split()[1].replace(",", ""))
    rate = float(line.rsplit("(", 1)[1].split()[0].replace(",", ""))
    return rows, rate


def quick_model(folder: Path, env: dict[str, str], rows: int) -> str:
    """A model to score with when training is not compared (`--score-only`)."""
    from training.generate import generate_customers

    table = folder / f"train-{rows}.parquet"
    if not table.exists():
        generate_customers(rows, seed=2026).to_parquet(table, index=False)
    command = [*CHURN, "train", "--data", str(table), "--trials", "2", "--no-register"]
    measured = run_measured(command, env)
    saved = [line for line in measured.output.splitlines() if line.startswith("saved ")]
    return saved[-1].split()[1]


def compare_training(
    rows: int, folder: Path, env: dict[str, str], trials: int, search_rows: int
) -> tuple[str, dict[str, dict[str, float]]]:
    """Both engines on the same `rows`-customer file; returns the Dask model's tag."""
    from training.generate import generate_customers

    table = folder / f"train-{rows}.parquet"
    if not table.exists():
        generate_customers(rows, seed=2026).to_parquet(table, index=False)
    figures: dict[str, dict[str, float]] = {}
    tag = ""
    for engine in ("local", "dask"):
        metrics = folder / f"metrics-{engine}.json"
        command = [*CHURN, "train", "--data", str(table), "--engine", engine]
        command += ["--trials", str(trials), "--search-rows", str(search_rows)]
        command += ["--no-register", "--metrics-out", str(metrics)]
        print(f"training on {rows:,} rows, engine {engine}", flush=True)
        measured = run_measured(command, env)
        saved = [line for line in measured.output.splitlines() if line.startswith("saved ")]
        tag = saved[-1].split()[1]
        auc = json.loads(metrics.read_text())["roc_auc"]
        figures[engine] = {"auc": auc, "seconds": measured.seconds, "rss": measured.peak_rss_bytes}
    return tag, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--search-rows", type=int, default=20_000)
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT / "data" / "batch-benchmark")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="Skip the training comparison: score with a model trained on --search-rows rows.",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="churn-batch-bench-"))
    env = {
        **os.environ,
        "BENTOML_HOME": str(scratch / "bentoml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
        "CHURN_REPORTS_DIR": str(scratch / "reports"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    os.environ.update(env)
    parts = ensure_customers(args.data / f"customers-{args.rows}", args.rows)
    training: dict[str, dict[str, float]] = {}
    if args.score_only:
        tag = quick_model(args.data, env, args.search_rows)
    else:
        tag, training = compare_training(
            args.train_rows, args.data, env, args.trials, args.search_rows
        )

    results = {}
    for engine in ("dask", "local"):
        output = scratch / f"scored-{engine}.parquet"
        command = [*CHURN, "score", "--input", str(parts[0].parent), "--output", str(output)]
        measured = run_measured([*command, "--engine", engine, "--model", tag], env)
        rows, inner_rate = scored_rows(measured.output)
        results[engine] = (rows / measured.seconds, inner_rate, measured.peak_rss_bytes)
    rows, seconds, peak = raw_predict_limit(parts, tag)
    results["inplace_predict"] = (rows / seconds, rows / seconds, peak)

    gib = 2**30
    print(f"\nscoring {rows:,} customers ({len(parts)} Parquet parts), model {tag}")
    print(f"{'':28}{'rows/s (wall)':>15}{'rows/s (run)':>15}{'peak RSS':>12}")
    names = {
        "dask": "churn score, dask 2 procs",
        "local": "churn score, local 1 proc",
        "inplace_predict": "inplace_predict (limit)",
    }
    for key, (wall, inner, rss) in results.items():
        print(f"{names[key]:28}{wall:>15,.0f}{inner:>15,.0f}{rss / gib:>10.2f} GiB")
    dask_rate, local_rate, limit = (results[k][1] for k in ("dask", "local", "inplace_predict"))
    print(f"dask / local: {dask_rate / local_rate:.2f}x   dask / limit: {dask_rate / limit:.3f}")
    if not training:
        return
    local_auc, dask_auc = training["local"]["auc"], training["dask"]["auc"]
    print(f"\ntraining on {args.train_rows:,} customers (same split, {args.trials} trials)")
    for engine, figures in training.items():
        print(
            f"churn train --engine {engine:5}  held-out ROC-AUC {figures['auc']:.4f}  "
            f"{figures['seconds']:7.1f} s  peak RSS {figures['rss'] / gib:.2f} GiB"
        )
    difference = dask_auc - local_auc
    verdict = "within" if abs(difference) <= 0.005 else "OUTSIDE"
    print(f"AUC difference dask - local: {difference:+.4f} ({verdict} 0.005)")


if __name__ == "__main__":
    main()
