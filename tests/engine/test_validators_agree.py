"""The compiled fast path and jsonschema must agree on every spec, or big specs could slip through."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from sluice import schemas
from sluice.engine.errors import SpecError
from sluice.engine.load import load_text
from sluice.engine.schema_check import compiled, valid
from tests.engine.test_spec_errors import CASES

SCHEMA = schemas.load("pipeline")
FAST = compiled(SCHEMA)
SLOW = Draft202012Validator(SCHEMA)


def _fast_valid(data: Any) -> bool:
    assert FAST is not None
    return valid(FAST, data)


def test_agree_on_the_error_corpus() -> None:
    checked = 0
    for text, _ in CASES.values():
        try:
            data = load_text(text, "p.yaml").data
        except SpecError:
            continue
        assert _fast_valid(data) == SLOW.is_valid(data), text
        checked += 1
    assert checked >= 10


keys = st.sampled_from(
    ["cmd", "uses", "with", "inputs", "outputs", "needs", "params", "matrix", "env", "retries", "timeout", "cache", "desc", "bogus"]
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["x", "util.copy", "10m", "1h30m", "5 minutes", "${params.x}", "a b", ""]),
    st.lists(st.sampled_from(["a", "b", 1, True]), max_size=3),
    st.dictionaries(st.sampled_from(["o", "a b", "x", "1"]), st.sampled_from(["p.txt", 1, "", ["l"]]), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    stages=st.dictionaries(st.sampled_from(["a", "b-c", "_d", "1e", "bad name"]), st.dictionaries(keys, values, max_size=5), max_size=3),
    version=st.sampled_from([1, 2, "1"]),
)
def test_agree_on_random_specs(stages: dict[str, Any], version: Any) -> None:
    data = {"version": version, "stages": stages}
    assert _fast_valid(data) == SLOW.is_valid(data)
