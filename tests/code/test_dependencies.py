"""Security floor of the installed dependencies (pip-audit in CI covers the rest)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IMPORT_NAMES = {"imbalanced-learn": "imblearn"}
"""Distributions of requirements-jobs.txt imported under another name."""
SHARED = {"mlflow"}
"""The full mlflow adds the tracking server and UI to the `mlflow` module the service
imports from mlflow-skinny (its registry client)."""


def test_bentoml_has_the_pickle_ssrf_and_dockerfile_fixes() -> None:
    # CVE-2025-27520 / CVE-2025-32375 (pickle bodies), CVE-2025-54381 (SSRF through URL
    # file inputs), CVE-2026-44345 (Dockerfile injection): fixed in 1.4.39.
    assert Version(version("bentoml")) >= Version("1.4.39")


def test_the_service_imports_nothing_only_the_jobs_need() -> None:
    """requirements-jobs.txt stays out of the Bento and its image: a service that imported
    one of its packages would fail there (tests/deploy catches it too, minutes later)."""
    jobs = (PROJECT_ROOT / "requirements-jobs.txt").read_text().splitlines()
    distributions = [re.split(r"[<>=!\[ ]", line)[0] for line in jobs if line and line[0] != "#"]
    modules = {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in distributions} - SHARED
    loaded = subprocess.run(
        [sys.executable, "-c", "import json, sys, service; print(json.dumps(list(sys.modules)))"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    imported = {name.split(".")[0] for name in json.loads(loaded.stdout.splitlines()[-1])}
    assert len(modules) >= 5 and not modules & imported, sorted(modules & imported)
