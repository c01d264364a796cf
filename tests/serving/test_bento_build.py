"""`bentoml build` packs the service and the trained model into a Bento."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from training.train import TrainingOutcome

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_bentoml_build_contains_the_model(trained: TrainingOutcome, tmp_path: Path) -> None:
    bentoml = Path(sys.executable).with_name("bentoml")
    built = subprocess.run(
        [str(bentoml), "build", "--output", "tag"],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento_dir = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert trained.tag in [m["tag"] for m in manifest["services"][0]["models"]]
    assert (bento_dir / "src" / "service.py").exists()
    assert (bento_dir / "src" / "training" / "features.py").exists()

    # The exported Bento (what is shipped and containerised) carries the model files.
    archive = tmp_path / "churn.bento"
    exported = subprocess.run(
        [str(bentoml), "export", tag, str(archive)],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    model_folder = f"./models/{trained.tag.replace(':', '/')}"
    with tarfile.open(archive) as bento:
        names = set(bento.getnames())
    for file in ("model.json", "pipeline.json", "metadata.yaml", "reference.parquet"):
        assert f"{model_folder}/{file}" in names, file
