"""Objects above the single-PUT size go up in parts, each carrying its SHA-256, against real SeaweedFS and rclone."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.fsspec_store import FsspecStore
from sluice.engine.remote.protocol import RemoteError, object_key

T = TypeVar("T")
MiB = 2**20
SMALL = {"single_put": 5 * MiB, "part_size": 5 * MiB}  # S3's smallest part (SeaweedFS enforces it; rclone does not)


@pytest.fixture(params=["seaweed", "rclone"])
def backend(request: pytest.FixtureRequest) -> tuple[str, RemoteConfig]:
    server = request.getfixturevalue(request.param)
    return request.param, RemoteConfig("t", server.url(), endpoint_url=server.endpoint)


class _Counting(FsspecStore):
    """Records the name of every request it makes (what `_call` is asked to run)."""

    def _call(self, what: str, fn: Callable[[], T], counted: bool = True) -> T:
        if counted:
            self.__dict__.setdefault("calls", []).append(what)
        return super()._call(what, fn, counted)


class _Corrupting(FsspecStore):
    """Flips one byte of part 2 after it was hashed: what a bad NIC or proxy would do on the way."""

    def _part_body(self, number: int, data: bytes) -> bytes:
        return data if number != 2 else bytes([data[0] ^ 1]) + data[1:]


def _s3(store: FsspecStore, op: str, key: str, **kw: Any) -> Any:
    fs = store._open()
    bucket, name, _ = fs.split_path(store._path(key))
    return fs.call_s3(op, Bucket=bucket, Key=name, **kw) if op != "list_multipart_uploads" else fs.call_s3(op, Bucket=bucket, Prefix=name)


def _left(store: FsspecStore, key: str) -> list[Any]:
    """Multipart uploads still open for `key` (parts the server keeps and bills for)."""
    return list(_s3(store, "list_multipart_uploads", key).get("Uploads") or [])


def _file(tmp_path: Path, size: int, name: str = "big.bin") -> tuple[Path, bytes, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).digest()


def _composite(data: bytes, part: int) -> str:
    """S3's composite SHA-256: the SHA-256 of the parts' SHA-256s, then `-N`."""
    digests = [hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part)]
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + f"-{len(digests)}"


def test_a_big_object_goes_up_in_parts_once(backend: tuple[str, RemoteConfig], tmp_path: Path) -> None:
    name, config = backend
    store = _Counting(config, **SMALL)
    src, data, sha = _file(tmp_path, 12 * MiB + 123)
    key = object_key("ab" * 32)
    assert store.put_file(key, src, sha) is True
    assert store.head(key) == len(data)
    assert sorted(c for c in store.__dict__["calls"] if " part " in c) == [f"PUT {key} part {n}" for n in (1, 2, 3)]  # 5 + 5 + 2 MiB
    meta = _s3(store, "head_object", key, ChecksumMode="ENABLED")
    if name == "seaweed":
        assert meta["ETag"].strip('"').endswith("-3")
        assert meta.get("ChecksumSHA256") == _composite(data, 5 * MiB)
    else:  # a plain file behind the server: its ETag is the whole file's MD5
        assert "ChecksumSHA256" not in meta, "rclone serve s3 keeps no checksums; now it does: check it"
    dest = tmp_path / "back.bin"
    assert store.get_file(key, dest) is True
    assert dest.read_bytes() == data

    store.__dict__["calls"] = []
    other, _, other_sha = _file(tmp_path, 12 * MiB, "other.bin")
    assert store.put_file(key, other, other_sha) is False  # already there: nothing goes up
    assert store.__dict__["calls"] == [f"HEAD {key}"]
    again = _s3(store, "head_object", key)
    assert (again["ETag"], again["LastModified"]) == (meta["ETag"], meta["LastModified"])
    assert store.get_file(key, dest) is True and dest.read_bytes() == data
    assert _left(store, key) == []


def test_a_part_whose_bytes_do_not_match_its_checksum_is_refused(backend: tuple[str, RemoteConfig], tmp_path: Path) -> None:
    name, config = backend
    store = _Corrupting(config, **SMALL)
    src, data, sha = _file(tmp_path, 11 * MiB)
    key = object_key("cd" * 32)
    if name == "rclone":  # it stores what it is sent; pull's BLAKE3 check is what catches it there
        assert store.put_file(key, src, sha) is True
        dest = tmp_path / "back.bin"
        store.get_file(key, dest)
        assert dest.read_bytes() != data
        pytest.skip("rclone serve s3 does not check x-amz-checksum-sha256 on parts; SeaweedFS does")
    with pytest.raises(RemoteError, match="refused"):
        store.put_file(key, src, sha)
    assert store.head(key) is None
    assert _left(store, key) == []


def test_a_file_that_changed_after_it_was_hashed_is_not_completed(backend: tuple[str, RemoteConfig], tmp_path: Path) -> None:
    _, config = backend
    store = FsspecStore(config, **SMALL)
    src, _, _ = _file(tmp_path, 11 * MiB)
    key = object_key("ef" * 32)
    with pytest.raises(RemoteError, match="changed"):
        store.put_file(key, src, hashlib.sha256(b"what the caller hashed").digest())
    assert store.head(key) is None  # on either server: the upload is aborted by us before it completes
    assert _left(store, key) == []


def test_two_stores_pushing_one_key_at_once(backend: tuple[str, RemoteConfig], tmp_path: Path) -> None:
    name, config = backend
    both_past_head = threading.Barrier(2)

    class _Racing(FsspecStore):
        def _part_body(self, number: int, data: bytes) -> bytes:
            if number == 1:
                both_past_head.wait(timeout=30)  # each has HEADed the key and found nothing
            return data

    src, data, sha = _file(tmp_path, 11 * MiB)
    key = object_key("12" * 32)
    stores = [_Racing(config, **SMALL), _Racing(config, **SMALL)]
    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(lambda s: s.put_file(key, src, sha), stores))
    if name == "seaweed":
        assert results == [False, True]  # If-None-Match: * on CompleteMultipartUpload: exactly one wins
    else:
        assert results == [True, True], "rclone serve s3 ignores If-None-Match; now it honours it: check it"
    dest = tmp_path / "back.bin"
    assert stores[0].get_file(key, dest) is True and dest.read_bytes() == data
    assert _left(stores[0], key) == []


def test_an_object_over_64_mib_carries_our_sha256_by_default(seaweed: Any, tmp_path: Path) -> None:
    store = FsspecStore(RemoteConfig("t", seaweed.url(), endpoint_url=seaweed.endpoint))
    src, data, sha = _file(tmp_path, 64 * MiB + 1)
    key = object_key("34" * 32)
    assert store.put_file(key, src, sha) is True
    assert store.head(key) == len(data)
    meta = _s3(store, "head_object", key, ChecksumMode="ENABLED")
    assert meta.get("ChecksumSHA256") == _composite(data, store.part_size)
    dest = tmp_path / "back.bin"
    assert store.get_file(key, dest) is True
    assert hashlib.sha256(dest.read_bytes()).digest() == sha
