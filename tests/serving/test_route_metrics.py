"""Route-template labels for BentoML's request metrics: the matching, and the private
BentoML internals the adapter relies on (a BentoML upgrade that moves them fails here)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from _bentoml_impl.server.app import ServiceAppFactory
from _bentoml_impl.server.mount import PassiveMount
from bentoml._internal.server.http import instruments
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from serving import route_metrics
from serving.route_metrics import (
    ORIGINAL_SCOPE,
    UNMATCHED,
    RouteLabels,
    RouteTemplateMetrics,
    restoring,
    route_template,
)


def test_bentoml_internals_are_where_the_adapter_expects() -> None:
    """BentoML 1.4.40 builds its metrics middleware from this class, looked up in this
    module when the app is built, and labels requests with `scope["path"]`."""
    original = route_metrics._BentoMLMetrics
    assert original.__module__ == "bentoml._internal.server.http.instruments"
    assert original.__name__ == "RunnerTrafficMetricsMiddleware"
    assert issubclass(RouteTemplateMetrics, original)
    assert 'endpoint = scope["path"]' in inspect.getsource(original.__call__)
    builder = inspect.getsource(ServiceAppFactory.middlewares.fget)  # type: ignore[attr-defined]
    assert "from bentoml._internal.server.http.instruments import" in builder
    assert "RunnerTrafficMetricsMiddleware" in builder
    assert instruments.RunnerTrafficMetricsMiddleware in (original, RouteTemplateMetrics)


def test_installing_replaces_the_class_bentoml_builds() -> None:
    original = instruments.RunnerTrafficMetricsMiddleware
    try:
        route_metrics.label_routes_by_template()
        assert instruments.RunnerTrafficMetricsMiddleware is RouteTemplateMetrics
    finally:
        instruments.RunnerTrafficMetricsMiddleware = original  # type: ignore[misc]


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


def _app() -> Starlette:
    """BentoML's layout: its own routes, then a FastAPI-like app passively mounted at /."""
    inner = Starlette(
        routes=[
            Route("/customers/{customer_id}", _ok, methods=["DELETE"]),
            Route("/health", _ok),
        ]
    )
    return Starlette(
        routes=[
            Route("/predict", _ok, methods=["POST"]),
            Mount("/static_content", app=_ok),
            PassiveMount("/", inner),
        ]
    )


def _scope(method: str, path: str) -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_route_templates() -> None:
    routes = _app().routes
    cases = {
        ("POST", "/predict"): "/predict",
        ("GET", "/predict"): "/predict",  # a 405 still names its route
        ("DELETE", "/customers/CUST-42"): "/customers/{customer_id}",
        ("DELETE", "/customers/anyone%20else"): "/customers/{customer_id}",
        ("GET", "/health"): "/health",
        ("GET", "/static_content/app.js"): "/static_content/{path}",
        ("GET", "/no/such/path"): None,
        ("GET", "/customers/a/b"): None,
    }
    for (method, path), template in cases.items():
        assert route_template(routes, _scope(method, path)) == template, path


def test_unknown_paths_share_one_label_and_only_static_paths_are_remembered() -> None:
    app = _app()
    label = RouteLabels()
    paths = [f"/unknown-{i}" for i in range(100)] + ["/customers/x", "/predict", "/health"]
    labels = {label({**_scope("GET", path), "app": app}) for path in paths}
    assert labels == {UNMATCHED, "/customers/{customer_id}", "/predict", "/health"}
    assert set(label._static) == {"/predict", "/health"}


@pytest.mark.anyio
async def test_the_app_below_gets_the_original_scope_back() -> None:
    seen: list[Scope] = []

    async def downstream(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    original = _scope("DELETE", "/customers/x")
    labelled = {**original, "path": "/customers/{customer_id}", ORIGINAL_SCOPE: original}
    await restoring(downstream)(labelled, _never, _never)
    assert seen == [original] and seen[0] is original


async def _never(*_: object) -> Any:
    raise AssertionError("not called")


def test_every_route_of_the_real_service_has_its_template() -> None:
    """The service's own app (BentoML's routes, the FastAPI app mounted at /): a BentoML
    or FastAPI upgrade that nests routes differently fails here, not silently in /metrics."""
    import service

    app = service.ChurnService.to_asgi()  # type: ignore[attr-defined]
    label = RouteLabels()
    cases = {
        ("POST", "/predict"): "/predict",
        ("POST", "/predict/batch"): "/predict/batch",
        ("POST", "/feedback"): "/feedback",
        ("DELETE", "/customers/CUST-9f3a"): "/customers/{customer_id}",
        ("GET", "/health"): "/health",
        ("GET", "/readyz"): "/readyz",
        ("GET", "/docs.json"): "/docs.json",
        ("GET", "/static_content/app.js"): "/static_content/{path}",
        ("GET", "/wp-admin/setup.php"): UNMATCHED,
        ("GET", "/customers/a/b"): UNMATCHED,
    }
    for (method, path), template in cases.items():
        assert label({**_scope(method, path), "app": app}) == template, path
