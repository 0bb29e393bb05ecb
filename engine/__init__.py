"""Sluice: declarative, cached, parallel pipelines for ML CI/CD."""

__version__ = "0.1.0"
