"""Security floor of the installed dependencies (pip-audit in CI covers the rest)."""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version


def test_bentoml_has_the_pickle_ssrf_and_dockerfile_fixes() -> None:
    # CVE-2025-27520 / CVE-2025-32375 (pickle bodies), CVE-2025-54381 (SSRF through URL
    # file inputs), CVE-2026-44345 (Dockerfile injection): fixed in 1.4.39.
    assert Version(version("bentoml")) >= Version("1.4.39")
