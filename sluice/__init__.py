"""Sluice: declarative, cached, parallel pipelines for ML CI/CD.

`sluice.engine`, `sluice.stages` and `sluice.schemas` are the repository's top-level folders. A
wheel installs them inside this package (pyproject's package-dir); in a source checkout they are
reached through the symlinks beside this file, so Python, mypy and editors all see one name.
"""

__version__ = "0.1.0"
