"""A contract that tells the truth (issue 13, points 15 and 17): answers whose risk level
agrees with the decision, and an OpenAPI document that declares every status the service
answers (the service in this process, with API keys); and, against the real service
(`bentoml serve`, PostgreSQL, Redis, API keys), a client generated from that document
installs and calls every endpoint, `/metrics` included."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from core import __version__
from core.settings import MAX_BATCH_CUSTOMERS, Settings
from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from serving.scoring import RISK_LEVELS, risk_levels
from tests.serving.conftest import KEYS, AppWith, deployed_settings, serve
from tests.serving.inprocess import InProcessApp
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}
REFUSALS = {401, 403, 408, 413, 422, 429, 503}
"""Every refusal a protected route may answer (415 too, for the POST routes)."""
CLIENT = "churn_prediction_service_client"


@pytest.fixture(scope="module")
def bands(trained: TrainingOutcome) -> tuple[float, float]:
    """Configured bands both above the model's threshold: with fixed cut-offs every
    customer between the threshold and the first band would be "will churn" and "low"."""
    threshold = trained.predictor.threshold
    return round(threshold + (1 - threshold) / 2, 4), round(threshold + 3 * (1 - threshold) / 4, 4)


@pytest.fixture
def contract(app_with: AppWith, bands: tuple[float, float]) -> InProcessApp:
    """The service in this process with API keys and risk bands of its own."""
    medium, high = bands
    return app_with(
        **deployed_settings(
            None, None, CHURN_RISK_MEDIUM_FROM=str(medium), CHURN_RISK_HIGH_FROM=str(high)
        )
    )


@pytest.fixture(scope="module")
def contract_server(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[ServerProcess]:
    """The service as deployed, in a subprocess: what a generated client meets."""
    tmp = tmp_path_factory.mktemp("contract")
    server = serve(tmp, postgres.new_database(), redis_server.url, "contract")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:1000])


# --- point 15: risk level and decision agree -----------------------------------------------


def test_a_customer_who_will_churn_is_never_low_risk_with_no_action(
    contract: InProcessApp,
    bodies: list[dict[str, Any]],
    bands: tuple[float, float],
    trained: TrainingOutcome,
) -> None:
    batch = contract.post("/predict/batch", json=bodies, headers=AUTH)
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    for body in bodies[:40]:  # the single route too (its own code path and batcher)
        single = contract.post("/predict", json=body, headers=AUTH)
        assert single.status_code == 200, single.text
        answers.append(single.json())

    for answer in answers:
        if answer["will_churn"]:
            assert answer["risk_level"] != "low", answer
            assert not answer["recommendation"].startswith("No action"), answer
        if answer["risk_level"] == "high":
            assert answer["will_churn"], answer

    # The levels are the documented bands around the threshold, and the case of the issue
    # is present: "will churn" below the configured medium band (the fixed cut-offs'
    # "low, no action").
    medium, high = bands
    probability = np.array([a["churn_probability"] for a in answers])
    settings = Settings(risk_medium_from=medium, risk_high_from=high)
    expected = risk_levels(probability, settings, trained.predictor.threshold)
    assert [a["risk_level"] for a in answers] == [RISK_LEVELS[i] for i in expected]
    below_band = [a for a in answers if a["will_churn"] and a["churn_probability"] < medium]
    assert below_band, "no customer between the threshold and the configured band"
    assert {a["risk_level"] for a in below_band} == {"medium"}


# --- point 17: the OpenAPI document --------------------------------------------------------


@pytest.fixture
def document(contract: InProcessApp) -> dict[str, Any]:
    answer = contract.get("/docs.json")
    assert answer.status_code == 200
    return dict(answer.json())


def declared(document: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(status) for status in document["paths"][path][method]["responses"]}


def test_the_docs_ui_is_where_the_readme_says(contract: InProcessApp) -> None:
    page = contract.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "swagger" in page.text.lower()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "`GET /docs` | OpenAPI UI" in readme


def test_the_document_is_valid_and_names_the_product(document: dict[str, Any]) -> None:
    validate(document)  # raises on an invalid OpenAPI document
    info = document["info"]
    assert info["version"] == __version__
    assert "bentoml" not in (info["title"] + info.get("description", "")).lower()
    assert "contact" not in info


def test_every_refusal_is_declared_with_its_body(document: dict[str, Any]) -> None:
    protected = [
        ("post", "/predict"),
        ("post", "/predict/batch"),
        ("post", "/feedback"),
        ("delete", "/customers/{customer_id}"),
    ]
    for method, path in protected:
        statuses = declared(document, method, path)
        wanted = REFUSALS | ({415} if method == "post" else set())
        assert wanted <= statuses, (method, path, wanted - statuses)
        operation = document["paths"][path][method]
        for status in wanted:
            schema = operation["responses"][str(status)]["content"]["application/json"]
            assert schema["schema"]["$ref"].startswith("#/components/schemas/")
        assert operation["security"] == [{"ApiKey": []}]
    assert 202 in declared(document, "post", "/feedback")
    assert 503 in declared(document, "get", "/readyz")
    batch = document["paths"]["/predict/batch"]["post"]["requestBody"]
    bare, wrapped = batch["content"]["application/json"]["schema"]["oneOf"]
    assert bare["maxItems"] == MAX_BATCH_CUSTOMERS  # a JSON array of customers...
    assert wrapped["properties"]["customers"]["maxItems"] == MAX_BATCH_CUSTOMERS  # ...or BentoML's


def test_what_the_service_answers_is_declared(
    contract: InProcessApp, document: dict[str, Any], bodies: list[dict[str, Any]]
) -> None:
    """Refusals provoked on every protected route: each status is one the document lists."""
    label = {"customer_id": "C-1", "churned": True, "observed_date": "2026-11-01"}
    cases = [
        ("post", "/predict", contract.post("/predict", json=bodies[0]), 401),
        (
            "post",
            "/predict",
            contract.post("/predict", json=bodies[0], headers={"X-API-Key": "no"}),
            403,
        ),
        (
            "post",
            "/predict",
            contract.post("/predict", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}),
            415,
        ),
        (
            "post",
            "/predict",
            contract.post("/predict", json={**bodies[0], "age": 3}, headers=AUTH),
            422,
        ),
        (
            "post",
            "/predict/batch",
            contract.post(
                "/predict/batch", json=bodies[:1] * (MAX_BATCH_CUSTOMERS + 1), headers=AUTH
            ),
            413,
        ),
        (
            "post",
            "/predict/batch",
            contract.post("/predict/batch", json=[{"age": 40}], headers=AUTH),
            422,
        ),
        ("post", "/feedback", contract.post("/feedback", json=label), 401),
        (
            "post",
            "/feedback",
            contract.post("/feedback", json={**label, "churned": "maybe"}, headers=AUTH),
            422,
        ),
        (
            "post",
            "/feedback",
            contract.post("/feedback", json=label, headers=AUTH),
            200,
        ),
        ("delete", "/customers/{customer_id}", contract.delete("/customers/C-1"), 401),
        (
            "delete",
            "/customers/{customer_id}",
            contract.delete("/customers/C-1", headers=AUTH),
            200,
        ),
    ]
    for method, path, answer, status in cases:
        assert answer.status_code == status, (method, path, answer.status_code, answer.text)
        assert status in declared(document, method, path), (method, path, status)
        assert "error" in answer.json() or status == 200


def body_schema_validator(document: dict[str, Any], path: str) -> Draft202012Validator:
    """A JSON Schema validator for the request body the document declares for POST `path`
    (the document's components beside it, where its `#/components/...` references point)."""
    body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return Draft202012Validator({**body["schema"], "components": document["components"]})


def test_every_documented_body_form_is_accepted_and_nothing_else(
    contract: InProcessApp, document: dict[str, Any], bodies: list[dict[str, Any]]
) -> None:
    """Issue 14: `/predict/batch` takes a JSON array or BentoML's `{"customers": [...]}`,
    `/feedback` one label or an array of them; each form the document's `oneOf` declares
    is answered 200 (the same predictions for both batch forms), a body it rules out 422."""
    label = {
        "customer_id": bodies[0]["customer_id"],
        "churned": True,
        "observed_date": "2026-11-01",
    }
    cases = {
        "/predict/batch": (
            [bodies[:3], {"customers": bodies[:3]}],
            [{"customers": bodies[:3], "more": 1}, {"customer": bodies[:3]}],
        ),
        "/feedback": (
            [label, [label, {**label, "churned": False, "observed_date": "2026-11-02"}]],
            [[], {"labels": [label]}],
        ),
    }
    answers: dict[str, list[Any]] = {}
    for path, (accepted, refused) in cases.items():
        validator = body_schema_validator(document, path)
        for body in accepted:
            validator.validate(body)  # one of the declared forms
            answer = contract.post(path, json=body, headers=AUTH)
            assert answer.status_code == 200, (path, body, answer.text)
            answers.setdefault(path, []).append(answer.json())
        for body in refused:
            assert not validator.is_valid(body), (path, body)
            answer = contract.post(path, json=body, headers=AUTH)
            assert answer.status_code == 422, (path, body, answer.text)
    bare, wrapped = answers["/predict/batch"]
    assert [p["churn_probability"] for p in bare["predictions"]] == [
        p["churn_probability"] for p in wrapped["predictions"]
    ]
    assert [a["stored"] for a in answers["/feedback"]] == [1, 2]


# --- point 17: a generated client installs and calls every endpoint ------------------------


@pytest.fixture(scope="module")
def client_package(
    contract_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """openapi-python-client's default (Poetry) package from the live document, installed
    with pip into a folder of its own, then imported from there."""
    tmp = tmp_path_factory.mktemp("client")
    spec = tmp / "docs.json"
    document = httpx.get(f"{contract_server.url}/docs.json", timeout=30)
    assert document.status_code == 200
    spec.write_bytes(document.content)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    generated = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(spec),
            "--fail-on-warning",
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    (project,) = [p for p in tmp.iterdir() if p.is_dir()]
    site = tmp / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(project),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    sys.path.insert(0, str(site))
    try:
        yield importlib.import_module(CLIENT)
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == CLIENT or m.startswith(f"{CLIENT}.")]:
            del sys.modules[name]


def module(name: str) -> Any:
    return importlib.import_module(f"{CLIENT}.{name}")


@pytest.mark.server
def test_a_generated_client_installs_and_calls_every_endpoint(
    client_package: ModuleType, contract_server: ServerProcess, bodies: list[dict[str, Any]]
) -> None:
    models = module("models")
    api = "api"
    client = client_package.AuthenticatedClient(
        base_url=contract_server.url,
        token=KEYS[0],
        auth_header_name="X-API-Key",
        prefix="",
        raise_on_unexpected_status=True,  # an undeclared status raises
        timeout=httpx.Timeout(120.0),
    )
    customers = [models.CustomerData.from_dict(body) for body in bodies[:20]]

    one = module(f"{api}.scoring.predict").sync_detailed(client=client, body=customers[0])
    assert one.status_code == 200 and isinstance(one.parsed, models.Prediction)
    assert one.parsed.customer_id == bodies[0]["customer_id"]
    assert one.parsed.risk_level.value in RISK_LEVELS

    many = module(f"{api}.scoring.predict_batch").sync_detailed(client=client, body=customers)
    assert many.status_code == 200 and isinstance(many.parsed, models.BatchPrediction)
    assert [p.customer_id for p in many.parsed.predictions] == [
        b["customer_id"] for b in bodies[:20]
    ]

    feedback = module(f"{api}.ground_truth.send_feedback")
    labels = [
        models.Label(
            customer_id=b["customer_id"], churned=i % 2 == 0, observed_date=date(2026, 11, 1)
        )
        for i, b in enumerate(bodies[:3])
    ]
    single = feedback.sync_detailed(client=client, body=labels[0])
    assert single.status_code == 200 and single.parsed.stored == 1
    several = feedback.sync_detailed(client=client, body=labels)
    assert several.status_code == 200 and isinstance(several.parsed, models.LabelsReceived)

    deleted = module(f"{api}.privacy.delete_customer").sync_detailed(
        bodies[0]["customer_id"], client=client
    )
    assert deleted.status_code == 200 and isinstance(deleted.parsed, models.CustomerDeleted)
    # Its prediction and label are gone (counted by kind).
    assert sum(deleted.parsed.deleted.additional_properties.values()) >= 2

    health = module(f"{api}.operations.health").sync_detailed(client=client)
    assert health.status_code == 200 and health.parsed.model_loaded is True
    for probe in ("livez", "readyz", "healthz", "metrics"):
        assert (
            module(f"{api}.infrastructure.{probe}").sync_detailed(client=client).status_code == 200
        )

    # Refusals arrive as the declared bodies.
    anonymous = client_package.Client(base_url=contract_server.url, raise_on_unexpected_status=True)
    refused = module(f"{api}.scoring.predict").sync_detailed(client=anonymous, body=customers[0])
    assert refused.status_code == 401 and isinstance(refused.parsed, models.ErrorBody)
    invalid = models.CustomerData.from_dict({**bodies[0], "age": 3})
    rejected = module(f"{api}.scoring.predict").sync_detailed(client=client, body=invalid)
    assert rejected.status_code == 422 and isinstance(rejected.parsed, models.ValidationErrorBody)
    assert rejected.parsed.detail[0].field == "age"
