"""The README's build command packs the service and the trained model into a Bento."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from core.pipeline.integrity import MANIFEST_FILE, verify_manifest
from launchers.server_process import ServerProcess, start_server
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


SOURCES = (
    "service.py",
    "cli.py",
    "bentofile.yaml",
    "requirements.txt",
    "requirements-jobs.txt",
    "deploy",
    "core",
    "training",
    "serving",
    "monitoring",
    "launchers",
    "tests",
    "benchmarks",
    "loadtests",
)
"""What a checkout holds that the build reads."""
WORKER_MODULE = "_bentoml_impl.worker.service"


BUILD_LINE = re.compile(r"^(?:\S+=\S+\s+)*\S*\b(?:bentoml|churn)\s+build\b[^#\n]*", re.M)
"""A command line of README.md that builds the Bento (up to its comment)."""


def readme_build_command() -> str:
    """The build command exactly as README.md documents it."""
    (command,) = BUILD_LINE.findall((PROJECT_ROOT / "README.md").read_text())
    return str(command).strip()


def checkout_copy(root: Path, models: Path) -> Path:
    """The project's sources, its .venv and a store holding `models`, in `root`."""
    root.mkdir()
    for name in SOURCES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    shutil.copytree(models, root / "bentos" / "models")
    return root


@pytest.mark.server
def test_the_readmes_build_command_builds_a_bento_with_the_model(
    trained: TrainingOutcome, tmp_path: Path
) -> None:
    command = readme_build_command()
    project = checkout_copy(tmp_path / "checkout", Path(os.environ["BENTOML_HOME"]) / "models")
    env = {k: v for k, v in os.environ.items() if k != "BENTOML_HOME"}
    # A relative BENTOML_HOME (BentoML's package locking failed under one), this checkout's
    # code, and a worker count the build machine must not freeze into the Bento.
    env |= {"BENTOML_HOME": "bentos", "PYTHONPATH": str(project), "CHURN_WORKERS": "3"}
    built = subprocess.run(
        ["bash", "-c", command],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, f"{command}\n{built.stdout}{built.stderr}"
    (bento_dir,) = [p.parent for p in (project / "bentos" / "bentos").glob("*/*/bento.yaml")]
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    (service,) = manifest["services"]
    assert trained.tag in [m["tag"] for m in service["models"]]
    assert "workers" not in service["config"], service["config"]
    packed = bento_dir / "src"
    missing = [f for f in project_files_the_service_needs() if not (packed / f).exists()]
    assert not missing, f"the Bento lacks files the service imports or reads: {missing}"
    # ...and nothing that only tests, benchmarks, fitting or the CLI use.
    packed_files = [str(f.relative_to(packed)) for f in packed.rglob("*") if f.is_file()]
    helpers = [
        f
        for f in packed_files
        if f.split("/")[0] in ("tests", "launchers", "benchmarks", "loadtests", "training")
        or f == "cli.py"
    ]
    assert not helpers, f"the Bento ships test, benchmark or fitting files: {helpers}"
    assert "service.py" in packed_files and "core/pipeline/predictor.py" in packed_files
    tag = f"{manifest['name']}:{manifest['version']}"
    env["BENTOML_HOME"] = str(project / "bentos")

    # The exported Bento (what is shipped and containerised) carries the model files.
    archive = tmp_path / "churn.bento"
    exported = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), "export", tag, str(archive)],
        env=env,
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

    # Served, the Bento takes its worker count from the machine that serves it.
    running = start_server(
        project / "bentos",
        tmp_path / "bento.log",
        {"CHURN_WORKERS": "2"},
        service=tag,
        own_home=False,
    )
    try:
        assert served_workers(running) == 2
    finally:
        running.stop()


def served_workers(running: ServerProcess, timeout: float = 60.0) -> int:
    """How many BentoML worker processes the server runs (once they have all started)."""
    deadline = time.monotonic() + timeout
    while True:
        children = psutil.Process(running.process.pid).children(recursive=True)
        workers = [p for p in children if WORKER_MODULE in " ".join(p.cmdline())]
        if len(workers) >= 2 or time.monotonic() > deadline:
            return len(workers)
        time.sleep(0.5)
