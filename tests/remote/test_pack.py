"""A lock's pack is untrusted input: whatever its bytes, reading it yields well-formed entries and bundles, or nothing."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.engine.cache import RunEntry
from sluice.engine.fingerprint import Digest
from sluice.engine.remote.pack import BUNDLE_BYTES, BUNDLED, Bundle, bundle_key, groups, pack_body, pack_bundles
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


_BUNDLEISH = st.fixed_dictionaries(
    {
        "key": st.sampled_from([bundle_key("c" * 64), "objects/ab/cd", "bundles/../x.bin", ""]) | _JSON,
        "size": st.sampled_from([0, 10, BUNDLE_BYTES, BUNDLE_BYTES + 1, -1, True]) | _JSON,
        "objects": st.lists(st.lists(st.sampled_from(["a" * 64, "zz", 0, 4, 10, 11, -1, True]), max_size=4), max_size=4) | _JSON,
    }
)


@given(st.lists(_BUNDLEISH | _JSON, max_size=4), _JSON)
@settings(max_examples=300, deadline=None)
def test_the_bundles_a_pack_describes_are_well_formed_or_left_out(bundles: list[Any], entries: Any) -> None:
    body = json.dumps({"version": 1, "entries": entries if isinstance(entries, list) else [], "bundles": bundles}).encode()
    for b in pack_bundles(body):
        assert b.key.startswith("bundles/") and ".." not in b.key and 0 <= b.size <= BUNDLE_BYTES
        assert b.objects and all(len(d) == 64 and off >= 0 and n >= 0 and off + n <= b.size for d, off, n in b.objects)


def test_bundles_round_trip_through_a_pack_and_other_bytes_give_none() -> None:
    bundle = Bundle(bundle_key("c" * 64), 7, (("a" * 64, 0, 3), ("b" * 64, 3, 4)))
    assert pack_bundles(pack_body([], [bundle])) == [bundle]
    assert pack_bundles(pack_body([])) == [] and pack_bundles(b"not json") == [] and pack_bundles(None) == []


@given(st.lists(st.tuples(st.sampled_from("0123456789abcdef"), st.integers(0, 2**24), st.integers(0, 9)), max_size=60))
@settings(max_examples=200, deadline=None)
def test_objects_are_grouped_by_first_digit_within_the_size_bounds_each_once(made: list[tuple[str, int, int]]) -> None:
    objects = [(digit + f"{size:016x}{salt}".ljust(63, "0"), size) for digit, size, salt in made]
    out = groups(objects)
    flat = [o for g in out for o in g]
    assert len(flat) == len(set(flat)) and set(flat) <= set(objects)  # each at most once
    assert sum(size for _, size in flat) <= BUNDLED
    for g in out:
        assert len({d[0] for d, _ in g}) == 1  # one first digit per bundle
        assert len(g) == 1 or sum(size for _, size in g) <= BUNDLE_BYTES
    if sum(size for _, size in set(objects)) <= BUNDLED:
        assert set(flat) == set(objects)  # under the bound, every object is bundled
