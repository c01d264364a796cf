"""The package layers hold: import-linter's contracts (pyproject.toml), and the two
top-level modules it cannot take as roots (service.py, cli.py)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def imported_roots(source: Path) -> set[str]:
    """The top-level names a module imports, anywhere in it (functions included)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_import_linter_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a dev dependency"
    result = subprocess.run(
        [lint_imports], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_service_imports_no_fitting_code_launcher_or_test() -> None:
    roots = imported_roots(PROJECT_ROOT / "service.py")
    assert not roots & {"training", "launchers", "tests", "benchmarks", "cli"}, roots
    assert {"core", "serving"} <= roots


def test_the_cli_imports_no_launcher_or_test() -> None:
    roots = imported_roots(PROJECT_ROOT / "cli.py")
    assert not roots & {"launchers", "tests", "benchmarks"}, roots


def test_core_imports_nothing_of_the_product() -> None:
    found = {
        f"{source.relative_to(PROJECT_ROOT)} imports {root}"
        for source in (PROJECT_ROOT / "core").rglob("*.py")
        for root in imported_roots(source)
        if root in {"training", "serving", "monitoring", "service", "cli", "launchers", "tests"}
    }
    assert not found, found


def test_the_bento_includes_only_the_serving_packages() -> None:
    spec = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    packed = {pattern.split("/")[0] for pattern in spec["include"]}
    assert packed == {"service.py", "core", "serving", "monitoring"}, packed
