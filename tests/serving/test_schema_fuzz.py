"""Property-based requests from the service's own OpenAPI schema (schemathesis): valid and
invalid bodies, odd types, missing fields, sent to the service in this process as deployed
(PostgreSQL log, Redis, API keys). No answer may be a 5xx or contradict the document
(status, content type, headers, body schema; valid data accepted), and every rejection
must name the field (or header, or body) and the rule."""

from __future__ import annotations

import json
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from tests.serving.conftest import AppWith, deployed_settings
from tests.serving.inprocess import BASE_URL, InProcessApp

CASES_PER_OPERATION = 100
"""Four operations, valid and invalid generation: up to 800 requests (at least 500 asked)."""

AUTH = {"X-API-Key": "key-alpha-0001"}

CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.positive_data_acceptance,
]
"""Schemathesis's checks that the answer is the one the document describes, and that what
the document calls valid is accepted. Not `negative_data_rejection`: the service keeps
pydantic's lax reading of JSON (`1` or `"yes"` for a boolean, `"12"` for an integer), so
it accepts some bodies the document, which gives the canonical types, does not list."""


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def names_the_problem(status: int, body: Any) -> bool:
    """422: a detail entry per problem with field and rule; other 4xx: 'what: why'."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return False
    if status == 422:
        detail = body.get("detail")
        return bool(detail) and all(d.get("field") and d.get("rule") for d in detail)
    return ":" in body["error"] or "X-API-Key" in body["error"]


def send(app: InProcessApp, case: Any) -> httpx.Response:
    """The generated request, as schemathesis would send it, through the app's client."""
    sent = case.as_transport_kwargs(base_url=BASE_URL, headers=AUTH)
    method, url = sent.pop("method"), sent.pop("url")
    body: dict[str, Any] = {}
    if "json" in sent:
        body["json"] = sent.pop("json")
    if "data" in sent:
        data = sent.pop("data")
        body["content" if isinstance(data, bytes | str) else "data"] = data
    if not sent.get("cookies"):
        sent.pop("cookies", None)
    assert set(sent) <= {"headers", "params"}, f"not sent: {sent}"
    return app.request(method, url, **sent, **body)


def body_form(body: Any) -> str:
    """Which of a route's documented body forms a generated request used."""
    return "array" if isinstance(body, list) else "object" if isinstance(body, dict) else "other"


def fuzz(app: InProcessApp, operation: Any, mode: GenerationMode, forms: set[str]) -> int:
    """Send up to CASES_PER_OPERATION generated requests; the number actually sent. The
    body forms of the requests the service accepted are added to `forms`."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report the first failure as found
    )
    def check(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = send(app, case)
        where = f"{case.as_curl_command()}\n{response.status_code} {response.text[:500]}"
        assert response.status_code < 500, where
        case.validate_response(response, checks=CONFORMANCE, headers=AUTH)
        if response.status_code >= 400:
            assert names_the_problem(response.status_code, json_or_none(response.text)), where
        else:
            forms.add(body_form(case.body))

    try:
        check()
    except Unsatisfiable:
        # e.g. a path parameter that accepts any string has no invalid form to generate
        assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def test_generated_requests_never_5xx_and_rejections_name_the_field(
    app_with: AppWith, postgres: PostgresServer, redis_server: RedisServer
) -> None:
    app = app_with(**deployed_settings(postgres.new_database(), redis_server.url))
    document = app.get("/docs.json")
    assert document.status_code == 200
    schema = schemathesis.openapi.from_dict(document.json())
    operations = [r.ok() for r in schema.include(method=["POST", "DELETE"]).get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /predict",
        "POST /predict/batch",
        "POST /feedback",
        "DELETE /customers/{customer_id}",
    }
    accepted: dict[str, set[str]] = {op.label: set() for op in operations}
    sent = {
        (operation.label, mode.value): fuzz(app, operation, mode, accepted[operation.label])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for operation in operations
    }
    print(f"schemathesis requests per operation and mode: {sent}")
    assert sum(sent.values()) >= 500, sent
    # Both documented forms of each body were generated, sent and accepted.
    assert accepted["POST /predict"] == {"object"}
    assert accepted["POST /predict/batch"] == {"array", "object"}
    assert accepted["POST /feedback"] == {"array", "object"}
