"""The test suite cleans up after itself (issue 13, point 18): its temporary session folder
is removed at the end, and MLflow artifacts stay beside the session's tracking store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import PROJECT_ROOT
from core.tracking import artifact_location

IN_USE = "session folder in use: "


def test_session_dir_is_in_use(session_dir: Path) -> None:
    """Run alone by the next test, in a pytest of its own."""
    assert session_dir.is_dir()
    (session_dir / "marker").write_text("written by a test")
    print(f"{IN_USE}{session_dir}")


def test_session_dir_is_removed_at_the_end(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(PROJECT_ROOT)}
    node = f"{Path(__file__).relative_to(PROJECT_ROOT)}::test_session_dir_is_in_use"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", node],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    used = Path(run.stdout.split(IN_USE, 1)[1].split()[0])
    assert used.parent == temp and used.name.startswith("churn-tests-")
    assert not used.exists(), "the session folder outlived the session"
    assert list(temp.glob("churn-tests-*")) == []


def test_a_sqlite_stores_artifacts_live_beside_it(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    assert artifact_location(f"sqlite:///{store}") == (tmp_path / "mlruns").as_uri()
    assert artifact_location("http://mlflow:5000") is None
