"""The published OpenAPI document, built in-process from the service's routes (the server
test, tests/serving/test_contract.py, fetches and uses the live one)."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from core import __version__
from core.pipeline.extras import ExtraColumn
from serving.openapi import REFUSALS, component_schemas, product_document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    import service

    return product_document(service.ChurnService.openapi_spec.asdict())


def test_the_document_is_valid_openapi_with_the_products_version(document: dict[str, Any]) -> None:
    validate(document)
    assert document["info"]["version"] == __version__
    assert document["openapi"].startswith("3.1")


def test_every_route_of_the_service_is_described(document: dict[str, Any]) -> None:
    paths = set(document["paths"])
    assert {
        "/predict",
        "/predict/batch",
        "/feedback",
        "/customers/{customer_id}",
        "/health",
    } <= paths
    assert {"/livez", "/readyz", "/metrics"} <= paths
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_refusals_only_on_protected_routes(document: dict[str, Any]) -> None:
    health = document["paths"]["/health"]["get"]["responses"]
    assert set(health) == {"200"}
    delete = document["paths"]["/customers/{customer_id}"]["delete"]["responses"]
    assert set(REFUSALS) - {415} <= {int(s) for s in delete}
    assert "415" not in delete  # no body, no content type to refuse


def test_schemas_are_openapi_31(document: dict[str, Any]) -> None:
    monthly = component_schemas()["CustomerData"]["properties"]["monthly_charges"]
    assert monthly["exclusiveMinimum"] == 0 and "minimum" not in monthly
    label = {"$ref": "#/components/schemas/Label"}
    body = document["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][0] == label
    assert body["schema"]["oneOf"][1]["items"] == label


def test_extra_is_what_the_served_model_reads(document: dict[str, Any]) -> None:
    """The request path refuses any `extra` member the model was not trained with, and
    requires the model's required ones: the document says the same, per served model."""
    none = document["components"]["schemas"]["CustomerData"]["properties"]["extra"]
    nothing, null = none["anyOf"]
    assert nothing["properties"] == {} and nothing["additionalProperties"] is False
    assert null == {"type": "null"}

    columns = (
        ExtraColumn("region", "category", ("north", "south")),
        ExtraColumn("visits", "number", required=False),
    )
    import service

    with_extras = product_document(service.ChurnService.openapi_spec.asdict(), columns)
    validate(with_extras)
    customer = with_extras["components"]["schemas"]["CustomerData"]
    assert customer["properties"]["extra"] == {
        "type": "object",
        "description": "The served model's extra inputs (a data profile's extra columns).",
        "properties": {"region": {"enum": ["north", "south"]}, "visits": {"type": "number"}},
        "additionalProperties": False,
        "required": ["region"],
    }
    assert "extra" in customer["required"]
