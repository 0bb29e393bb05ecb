"""A lock's pack is untrusted input: whatever its bytes, reading it yields well-formed entries or nothing."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.engine.cache import RunEntry
from sluice.engine.fingerprint import Digest
from sluice.engine.remote.pack import pack_body
from sluice.engine.remote.sync import pack_index

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_KEYS = st.sampled_from(["fingerprint", "stage", "created", "outputs", "path", "kind", "hash", "size", "manifest", "signature"])
_ENTRYISH = st.recursive(_JSON, lambda inner: st.dictionaries(_KEYS, inner, max_size=6) | st.lists(inner, max_size=3), max_leaves=30)


@given(st.one_of(st.binary(max_size=64), _JSON.map(lambda v: json.dumps(v).encode())))
@settings(max_examples=200, deadline=None)
def test_any_bytes_read_as_a_pack_give_nothing_or_entries(data: bytes) -> None:
    assert pack_index(data) == {} or all(isinstance(doc, dict) for doc in pack_index(data).values())


_HEX = st.sampled_from(["a" * 64, "b" * 64, "zz", ""])
_NEAR = st.fixed_dictionaries(  # near-valid entries, each field sometimes wrong: the deep checks get exercised
    {
        "fingerprint": _HEX | _JSON,
        "stage": st.text(max_size=4) | _JSON,
        "created": st.floats(allow_nan=False) | _JSON,
        "outputs": st.dictionaries(
            st.text(max_size=4),
            st.fixed_dictionaries(
                {
                    "path": st.sampled_from(["out/o", "../x", "/abs", ""]) | _JSON,
                    "kind": st.sampled_from(["file", "dir", "link"]),
                    "hash": _HEX,
                    "size": st.integers(-2, 5) | _JSON,
                    "manifest": st.lists(st.lists(st.sampled_from(["a", "../b", "a" * 64, 3, -1, True]), max_size=5), max_size=3) | _JSON,
                }
            )
            | _JSON,
            max_size=3,
        )
        | _JSON,
    }
)


@given(st.lists(_ENTRYISH | _NEAR, max_size=5))
@settings(max_examples=300, deadline=None)
def test_a_pack_of_malformed_entries_never_raises(docs: list[Any]) -> None:
    body = json.dumps({"version": 1, "entries": docs}).encode()
    for (fp, entry_id), doc in pack_index(body).items():
        entry = RunEntry.from_json(doc)
        assert (entry.fingerprint, entry.id) == (fp, entry_id)


def test_a_well_formed_entry_is_found_by_its_fingerprint_and_id() -> None:
    entry = RunEntry("a" * 64, "s", {"o": ("out/o.txt", Digest("file", "b" * 64, 3))}, 1.0)
    index = pack_index(pack_body([entry.to_json(), {"stage": "not an entry"}]))
    assert list(index) == [("a" * 64, entry.id)]
