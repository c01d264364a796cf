"""BentoML's HTTP request metrics, labelled by route template instead of raw path.

BentoML's `RunnerTrafficMetricsMiddleware` (the outermost middleware of every worker, ahead
of the gateway) labels `bentoml_service_request_*` with `scope["path"]`: every deletion
added a series holding a raw customer id, and every unknown path a series of its own (5,000
unique paths: 100,000 series, a 20 MB `/metrics`). Here the label is the template of the
route the path matches (`/customers/{customer_id}`), and every path no route matches shares
`UNMATCHED`, so the number of series is bounded by the routes.

BentoML's middleware class comes from serving/bentoml_internals.py (the one module with
private BentoML imports); `tests/serving/test_route_metrics.py` fails loudly if an upgrade
nests the service's routes differently.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.bentoml_internals import METRICS_MIDDLEWARE_HOLDER, METRICS_MIDDLEWARE_NAME

UNMATCHED = "unmatched"
"""The `endpoint` label of every path no route matches (404s, scanners)."""

ORIGINAL_SCOPE = "churn.original_scope"
"""Where the labelled copy of the scope keeps the original, for :func:`restoring`."""
_BentoMLMetrics: type[Any] = getattr(METRICS_MIDDLEWARE_HOLDER, METRICS_MIDDLEWARE_NAME)


def route_template(routes: list[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    """The template of the route Starlette would pick for `scope` (a method mismatch
    still names its route), or None when no route matches the path."""
    partial: str | None = None
    for route in routes:
        # Starlette's own Mount test: BentoML's PassiveMount would walk its routes twice.
        match, child = (
            Mount.matches(route, scope) if isinstance(route, Mount) else route.matches(scope)
        )
        if match == Match.NONE:
            continue
        inner = _inner_routes(route)
        if inner is not None:
            routes_below, below = inner
            child_scope = {**scope, **child}
            if below and not isinstance(route, Mount):  # an included router's prefix
                child_scope["root_path"] = child_scope.get("root_path", "") + below
            if not routes_below:  # a plain ASGI app, e.g. static files
                found: str | None = f"{prefix}{below}/{{path}}"
            else:
                found = route_template(routes_below, child_scope, prefix + below)
            if found is None:
                continue
            match = Match.FULL
        else:
            found = prefix + str(getattr(route, "path", UNMATCHED))
        if match == Match.FULL:
            return found
        partial = partial or found
    return partial


def _inner_routes(route: BaseRoute) -> tuple[list[BaseRoute], str] | None:
    """The routes a container route dispatches to and its path prefix; None for a leaf.

    A `Mount`, or FastAPI's included router (since 0.13x, `app.include_router` adds one
    route holding the router, which BentoML uses for `@bentoml.asgi_app` FastAPI apps).
    """
    if isinstance(route, Mount):
        return list(route.routes), route.path
    included = getattr(route, "original_router", None)
    if included is not None:
        context = getattr(route, "include_context", None)
        return list(included.routes), str(getattr(context, "prefix", ""))
    return None


class RouteLabels:
    """The label of a request: its route's template, or `UNMATCHED`."""

    def __init__(self) -> None:
        self._static: dict[str, str] = {}  # paths that are their own template (bounded)

    def __call__(self, scope: Scope) -> str:
        path = scope["path"]
        known = self._static.get(path)
        if known is not None:
            return known
        app = scope.get("app")  # the Starlette app, set before its middleware runs
        found = route_template(list(getattr(app, "routes", [])), scope)
        if found is None:
            return UNMATCHED
        if found == path:
            self._static[path] = found
        return found


class RouteTemplateMetrics(_BentoMLMetrics):  # type: ignore[misc]
    """BentoML's metrics middleware, shown the route template as the request's path.

    BentoML reads the label from `scope["path"]`, so it is handed a copy of the scope with
    the template there; the app below it gets the original scope back, unchanged.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(restoring(app), **options)
        self.label = RouteLabels()

    def _setup(self, *args: Any, **kwargs: Any) -> None:
        """BentoML's metrics, except `…_last_request_timestamp_seconds`: BentoML leaves that
        gauge in prometheus_client's default multiprocess mode, one series per worker pid
        (a new series at every worker restart); here it is one series, the latest time
        (`max`). Registered nowhere: the exposition is built from the multiprocess files,
        and BentoML's own gauge of the name, never set, writes none."""
        super()._setup(*args, **kwargs)
        from prometheus_client import Gauge

        bentoml_gauge: Any = getattr(self, "metrics_last_request_timestamp")  # noqa: B009
        self.metrics_last_request_timestamp = Gauge(
            bentoml_gauge._name,
            bentoml_gauge._documentation,
            bentoml_gauge._labelnames,
            multiprocess_mode="max",
            registry=None,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        labelled = {**scope, "path": self.label(scope), ORIGINAL_SCOPE: scope}
        await super().__call__(labelled, receive, send)


def restoring(app: ASGIApp) -> ASGIApp:
    """An app that calls `app` with the scope as it was before the label replaced the path."""

    async def restore(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope.get(ORIGINAL_SCOPE, scope), receive, send)

    return restore


def label_routes_by_template() -> None:
    """Make BentoML build its metrics middleware from `RouteTemplateMetrics` (call at
    import of the service module: BentoML looks the class up when it builds the app)."""
    setattr(METRICS_MIDDLEWARE_HOLDER, METRICS_MIDDLEWARE_NAME, RouteTemplateMetrics)
