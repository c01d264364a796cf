"""The one module that imports BentoML's private names.

Two things the product needs have no public BentoML API:

- `CorkDispatcher`, BentoML's adaptive batching algorithm (serving/batcher.py runs its own
  instance so `/predict` skips BentoML's per-request HTTP stack: BENCHMARKS.md);
- `RunnerTrafficMetricsMiddleware`, the request-metrics middleware whose path label
  serving/route_metrics.py replaces with the route template;
- the Swagger UI page BentoML ships, which serving/openapi.py serves at `/docs`.

bentoml is pinned below 1.5 (requirements.txt). `tests/code/test_bentoml_internals.py`
imports each name and checks the members the product uses, so an upgrade that moves or
reshapes one fails there by name, not as an obscure error at the first request.
"""

from __future__ import annotations

from pathlib import Path

import _bentoml_impl.server
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml._internal.server.http import instruments

METRICS_MIDDLEWARE_HOLDER = instruments
"""The module whose `RunnerTrafficMetricsMiddleware` attribute BentoML's app factory reads."""
METRICS_MIDDLEWARE_NAME = "RunnerTrafficMetricsMiddleware"

SWAGGER_UI_PAGE = Path(_bentoml_impl.server.__file__).parent / "main-openapi.html"
"""BentoML's Swagger UI page (it loads `./docs.json` and `./static_content/…`)."""

__all__ = [
    "METRICS_MIDDLEWARE_HOLDER",
    "METRICS_MIDDLEWARE_NAME",
    "SWAGGER_UI_PAGE",
    "CorkDispatcher",
]
