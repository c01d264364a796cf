"""Churn prediction: data, features, training and the model store, used by the service."""

__version__ = "0.1.0"
