"""A big object of known size comes down in parallel ranged GETs, against real SeaweedFS and rclone."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.fsspec_store import FsspecStore
from sluice.engine.remote.protocol import object_key
from tests.conftest import Workspace
from tests.remote.conftest import S3Server, chain, copy_checkout

T = TypeVar("T")
RANGES = {"range_size": 1000, "gets_in_flight": 3}  # ranges this small make every edge of the loop cheap to reach


@pytest.fixture(params=["seaweed", "rclone"])
def config(request: pytest.FixtureRequest) -> RemoteConfig:
    server: S3Server = request.getfixturevalue(request.param)
    return RemoteConfig("t", server.url(), endpoint_url=server.endpoint)


class _Counting(FsspecStore):
    def _call(self, what: str, fn: Callable[[], T], counted: bool = True) -> T:
        if counted:
            self.__dict__.setdefault("calls", []).append(what)
        return super()._call(what, fn, counted)


def _put(store: FsspecStore, data: bytes) -> str:
    key = object_key(os.urandom(32).hex())
    store.put_bytes(key, data)
    return key


@pytest.mark.parametrize("size", [10_007, 9_999, 10_000])  # the last range short, one byte short, and exactly full
def test_an_object_of_the_size_expected_comes_whole_in_ranges(config: RemoteConfig, tmp_path: Path, size: int) -> None:
    store = _Counting(config, **RANGES)
    data = os.urandom(size)
    key = _put(store, data)
    store.__dict__["calls"] = []
    dest = tmp_path / "back.bin"
    assert store.get_file(key, dest, size) is True
    assert dest.read_bytes() == data
    assert store.__dict__["calls"] == [f"GET {key}"] * (size // 1000 + 1)  # ranges of 1000 up to byte `size` + 1


def test_an_object_longer_than_expected_is_read_one_byte_past_the_size(config: RemoteConfig, tmp_path: Path) -> None:
    store = FsspecStore(config, **RANGES)
    data = os.urandom(50_000)
    key = _put(store, data)
    dest = tmp_path / "back.bin"
    assert store.get_file(key, dest, 5_000) is True
    assert dest.read_bytes() == data[:5_001]  # enough for the caller's hash to refuse it, and no more read


@pytest.mark.parametrize("size", [4_321, 0])
def test_an_object_shorter_than_expected_comes_as_it_is(config: RemoteConfig, tmp_path: Path, size: int) -> None:
    store = FsspecStore(config, **RANGES)
    data = os.urandom(size)
    key = _put(store, data)
    dest = tmp_path / "back.bin"
    assert store.get_file(key, dest, 12_000) is True  # ranges past its end are empty, not an error
    assert dest.read_bytes() == data


def test_a_missing_object_is_no_such_key_not_a_failure(config: RemoteConfig, tmp_path: Path) -> None:
    store = FsspecStore(config, **RANGES)
    assert store.get_file(object_key("ef" * 32), tmp_path / "none.bin", 10_000) is False
    assert store.head(object_key("ef" * 32)) is None


def test_a_fresh_checkout_restores_a_big_output_in_ranges(seaweed: S3Server, tmp_path: Path) -> None:
    size = 40 * 2**20  # over two ranges of 16 MiB: three of them
    first = Workspace(tmp_path / "first")
    chain(first, 1, size=size, remote_url=seaweed.url(), endpoint=seaweed.endpoint)
    assert first.sluice("run", "--remote", "team").code == 0
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    res = fresh.sluice("run", "--json", "--remote", "team")
    assert res.code == 0, res.err
    done = res.json()
    assert {s["outcome"] for s in done["stages"].values()} == {"restored"}
    assert done["remote"]["requests"] == {"GET": 4, "HEAD": 1}  # the pack, then the object's three ranges
    assert (fresh.root / "out/s0.txt").read_bytes() == (first.root / "out/s0.txt").read_bytes()
