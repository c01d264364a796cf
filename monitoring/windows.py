"""What the monitoring commands are asked about: a time window and a model version."""

from __future__ import annotations

import re
from datetime import timedelta

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """``7d``, ``12h``, ``2w``, ``30m``, ``90s`` → a positive timedelta. Raises ValueError."""
    match = _WINDOW.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"window must be a positive count and a unit s|m|h|d|w (7d, 12h), got {text!r}"
        )
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def resolve_version(tag: str) -> str:
    """A model tag (``churn_model:latest``, ``churn_model:v1``) or bare version → the
    version the prediction log records. Raises ValueError for a tag not in the store."""
    if ":" not in tag:
        return tag
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return str(bentoml.models.get(tag).tag.version)
    except NotFound:
        raise ValueError(f"no model {tag} in the store") from None
