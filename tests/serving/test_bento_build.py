"""`bentoml build` packs the service and the trained model into a Bento."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from training.integrity import MANIFEST_FILE, verify_manifest
from training.train import TrainingOutcome

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_files_the_service_needs() -> list[str]:
    """Every project module a fresh interpreter loads to import the service, plus the
    migrations Alembic reads at start-up (paths relative to the project)."""
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, service; root = sys.argv[1]; print(json.dumps(sorted("
            "{m.__file__ for m in list(sys.modules.values()) "
            "if (getattr(m, '__file__', None) or '').startswith(root) "
            "and 'site-packages' not in m.__file__})))",
            str(PROJECT_ROOT) + os.sep,
        ],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    modules = [str(Path(f).relative_to(PROJECT_ROOT)) for f in json.loads(listing.stdout)]
    migrations = PROJECT_ROOT / "monitoring" / "migrations"
    extra = [
        migrations / "env.py",
        migrations / "script.py.mako",
        *migrations.glob("versions/*.py"),
    ]
    assert "serving/gateway.py" in modules and len(extra) > 2
    return modules + [str(f.relative_to(PROJECT_ROOT)) for f in extra]


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
    packed = bento_dir / "src"
    missing = [f for f in project_files_the_service_needs() if not (packed / f).exists()]
    assert not missing, f"the Bento lacks files the service imports or reads: {missing}"

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
    # ...with their checksums, which the packed files still match (a Bento serves them).
    assert f"{model_folder}/{MANIFEST_FILE}" in names
    with tarfile.open(archive) as bento:
        packed_model = [m for m in bento.getmembers() if m.name.startswith(f"{model_folder}/")]
        bento.extractall(tmp_path / "exported", members=packed_model, filter="data")
    model_version = trained.tag.split(":")[1]
    verify_manifest(tmp_path / "exported" / model_folder, model_version)
