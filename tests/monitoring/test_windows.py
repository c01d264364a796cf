"""The window and model arguments every monitoring command takes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitoring.windows import parse_window, resolve_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("30m", timedelta(minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1.5d", timedelta(hours=36)),
    ],
)
def test_windows_are_a_count_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["0d", "30", "d", "-3d", "7y", ""])
def test_malformed_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_a_bare_version_passes_and_an_unknown_tag_is_refused() -> None:
    assert resolve_version("20261201abc") == "20261201abc"
    with pytest.raises(ValueError, match="no model churn_model:nosuchversion"):
        resolve_version("churn_model:nosuchversion")
