"""The contract every stage shares: the customer schema, the answer shapes, the settings
and the loaded predictor (`core.pipeline`). Imports nothing else of the product."""

__version__ = "0.1.0"
