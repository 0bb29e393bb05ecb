"""Every built-in ML plugin is registered, honours the contract, and imports without heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sluice import schemas
from sluice.engine.registry import Registry

ML_STAGES = ("data.validate", "data.drift", "data.split", "sklearn.train", "sklearn.evaluate", "model.gate", "model.benchmark")
HEAVY = ("pandas", "numpy", "scipy", "sklearn", "joblib", "pyarrow")


@pytest.mark.parametrize("name", ML_STAGES)
def test_registered_and_valid(name):
    cls = Registry.discover().load(name)  # checks name, version and schema (Draft 2020-12)
    assert cls.config_schema is schemas.load(f"stages/{name}")
    assert cls.config_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert cls.config_schema["additionalProperties"] is False


@pytest.mark.parametrize("name", ML_STAGES)
def test_every_property_is_described(name):
    def walk(schema, where):  # type: ignore[no-untyped-def]
        for key, sub in schema.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{name}: {where}{key} has no description"
            walk(sub, f"{where}{key}.")

    walk(schemas.load(f"stages/{name}"), "")


def test_loading_every_plugin_imports_no_heavy_library():
    code = (
        "import json, sys\n"
        "from sluice.engine.registry import Registry\n"
        f"r = Registry.discover()\n"
        f"for n in {list(ML_STAGES)!r}: r.instance(n).check({{}})\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert loaded == []
