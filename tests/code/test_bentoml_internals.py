"""BentoML's private names the product uses, all from serving/bentoml_internals.py.

If a BentoML upgrade moves or reshapes one of them, these fail by name (instead of the
service failing at its first request), and the module's docstring says what each is for.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from serving import bentoml_internals

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "serving", "monitoring", "training")


def test_cork_dispatcher_takes_the_arguments_the_batcher_passes() -> None:
    parameters = inspect.signature(bentoml_internals.CorkDispatcher.__init__).parameters
    for name in ("max_latency_in_ms", "max_batch_size", "fallback", "get_batch_size"):
        assert name in parameters, f"CorkDispatcher lost its {name!r} argument"
    assert callable(getattr(bentoml_internals.CorkDispatcher, "shutdown", None))


def test_the_metrics_middleware_is_where_bentoml_looks_it_up() -> None:
    middleware = getattr(
        bentoml_internals.METRICS_MIDDLEWARE_HOLDER, bentoml_internals.METRICS_MIDDLEWARE_NAME
    )
    assert inspect.isclass(middleware)
    assert "app" in inspect.signature(middleware.__init__).parameters


def test_the_swagger_ui_page_exists() -> None:
    page = bentoml_internals.SWAGGER_UI_PAGE.read_text()
    assert "swagger-ui" in page and "./static_content/" in page


def test_no_other_module_imports_bentoml_privately() -> None:
    private = ("bentoml._internal", "_bentoml_sdk", "_bentoml_impl")
    offenders = []
    sources = [PROJECT_ROOT / "service.py", PROJECT_ROOT / "cli.py"]
    for package in PRODUCT:
        sources += (PROJECT_ROOT / package).rglob("*.py")
    for source in sources:
        if source.name == "bentoml_internals.py":
            continue
        text = source.read_text()
        offenders += [f"{source.relative_to(PROJECT_ROOT)}: {p}" for p in private if p in text]
    assert not offenders, offenders
