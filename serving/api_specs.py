"""The bodies of the service's BentoML API methods, as BentoML's clients see them.

A flat `/predict` body is one customer: as a BentoML input spec its fields are the API's
parameters, so `bentoml.SyncHTTPClient(url).predict(**customer)` (or
`.predict(customer_id="C1", tenure_months=3, ...)`) sends exactly the JSON the HTTP API
documents. `/feedback` takes one label the same way. Both are the shared schema's models
(core/schema.py, monitoring/feedback.py) with BentoML's public `IODescriptor` mixed in.
"""

from __future__ import annotations

from typing import Any

import bentoml

from core.schema import CustomerData
from monitoring.feedback import Label


class CustomerInput(CustomerData, bentoml.IODescriptor):
    """One customer: the `/predict` body."""


class LabelInput(Label, bentoml.IODescriptor):
    """One observed outcome: a `/feedback` body."""


def body_of(model: type[CustomerData] | type[Label], fields: dict[str, Any]) -> bytes:
    """The JSON an HTTP client would have sent for these API arguments."""
    return model(**fields).model_dump_json().encode()


__all__ = ["CustomerInput", "LabelInput", "body_of"]
