"""`sluice cache verify --remote` and `sluice gc --remote` against real S3 servers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from sluice.engine import api
from sluice.engine.errors import SpecError
from sluice.engine.fingerprint import hash_file
from sluice.engine.maintenance import DAY
from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.fsspec_store import FsspecStore
from sluice.engine.revisions import Choice
from tests.conftest import Workspace
from tests.remote.conftest import S3Server, chain
from tests.support.git import commit, git, init


def _key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest[2:]}"


def test_verify_finds_corrupt_objects_and_dangling_entries_and_sets_them_aside(seaweed: S3Server, ws: Workspace) -> None:
    url = seaweed.url()
    chain(ws, 3, remote_url=url, endpoint=seaweed.endpoint)
    ws.sluice("run", "--remote", "team")
    clean = ws.sluice("cache", "verify", "--remote", "team", "--json")
    assert clean.code == 0 and clean.json()["objects"] == 3 and clean.json()["entries"] == 3
    store = FsspecStore(RemoteConfig("team", url, endpoint_url=seaweed.endpoint))
    corrupt, lost = hash_file(ws.root / "out/s0.txt"), hash_file(ws.root / "out/s2.txt")
    store.put_bytes(_key(corrupt), b"z" * 1000)  # a raw PUT over the object, bypassing sluice
    store.delete(_key(lost))
    (pack,) = [i.key for i in store.list("packs")]
    bundle = sorted(i.key for i in store.list("bundles"))[0]
    store.put_bytes(bundle, (store.get_bytes(bundle, 1 << 20) or b"") + b"!")  # no longer the bytes its name hashes
    store.put_bytes(pack, b'{"version": 1, "entries": [{"stage": "s0"}]}')
    res = ws.sluice("cache", "verify", "--remote", "team", "--json")
    assert res.code == 1 and res.out.startswith("{"), res.out + res.err
    problems = {b["path"]: b["problem"] for b in res.json()["bad"]}
    assert problems[_key(corrupt)] == "content does not match its name"
    assert problems[pack] == "holds an entry that is not well formed"
    assert problems[bundle] == "content does not match its name" and store.head(bundle) is None  # set aside
    assert sorted(p.split(",")[0] for p in problems.values() if "object(s)" in p or "names a" in p) == [
        "names 1 missing object(s)",
        "names a corrupt object",
    ]
    assert store.head(_key(corrupt)) is None and store.get_bytes(f"quarantine/{_key(corrupt)}", 2000) == b"z" * 1000
    assert ws.sluice("cache", "verify", "--remote", "team").code == 0


def test_gc_keeps_what_the_lock_and_recent_entries_name(seaweed: S3Server, ws: Workspace) -> None:
    url = seaweed.url()
    chain(ws, 1, remote_url=url, endpoint=seaweed.endpoint)
    ws.sluice("run", "--remote", "team")
    old = hash_file(ws.root / "out/s0.txt")
    chain(ws, 1, size=999, remote_url=url, endpoint=seaweed.endpoint)  # the lock now names the new result only
    ws.sluice("run", "--remote", "team")
    new = hash_file(ws.root / "out/s0.txt")
    young = ws.sluice("gc", "--remote", "team", "--keep-days", "0", "--json")
    assert young.code == 0 and young.json()["removed_objects"] == 0  # within the grace period: a push may be under way
    store = FsspecStore(RemoteConfig("team", url, endpoint_url=seaweed.endpoint))
    report = api.gc(ws.root / "pipeline.yaml", keep_days=1, remote="team", now=time.time() + 3 * DAY)
    # the old lock's pack went with its entry, and the bundle of its object with the pack; the new pack keeps its own
    assert (report.entries, report.objects, report.packs, report.bundles) == (1, 1, 1, 1)
    assert store.head(_key(old)) is None and store.head(_key(new)) == 999
    assert len(list(store.list("runs"))) == len(list(store.list("packs"))) == len(list(store.list("bundles"))) == 1
    fresh = Workspace(ws.root.parent / "fresh")
    chain(fresh, 1, size=999, remote_url=url, endpoint=seaweed.endpoint)
    assert fresh.run_json("--remote", "team") == {"s0": "restored"}


def test_gc_refuses_a_read_only_remote(ws: Workspace, tmp_path: Path) -> None:
    chain(ws, 1, remote_url=(tmp_path / "r").as_uri(), extra="read_only: true")
    res = ws.sluice("gc", "--remote", "team")
    assert res.code == 1 and "read-only" in res.err


def test_gc_keeps_what_a_chosen_git_revisions_lock_names(
    seaweed: S3Server, ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = seaweed.url()
    init(ws.root)
    ws.write(".gitignore", ".sluice/\nout/\n")
    chain(ws, 1, remote_url=url, endpoint=seaweed.endpoint)
    ws.sluice("run", "--remote", "team")
    old = hash_file(ws.root / "out/s0.txt")
    release = commit(ws.root, "1000 bytes")
    git(ws.root, "branch", "release")
    chain(ws, 1, size=999, remote_url=url, endpoint=seaweed.endpoint)  # main's lock no longer names release's result
    ws.sluice("run", "--remote", "team")
    commit(ws.root, "999 bytes")
    store = FsspecStore(RemoteConfig("team", url, endpoint_url=seaweed.endpoint))
    res = ws.sluice("gc", "--remote", "team", "--rev", "release", "--json")
    assert res.code == 0, res.err
    assert res.json()["revisions"] == [{"rev": "release", "commit": release, "lock": "sluice.lock"}]
    later = time.time() + 3 * DAY  # past the grace period and --keep-days: only the locks keep anything
    for choice in (Choice(revs=("release",)), Choice(all_branches=True)):
        report = api.gc(ws.root / "pipeline.yaml", keep_days=1, remote="team", revisions=choice, now=later)
        assert (report.objects, report.entries, report.packs, report.bundles) == (0, 0, 0, 0), report.removed
    assert store.head(_key(old)) == 1000
    fresh = tmp_path_factory.mktemp("clone") / "release"
    git(ws.root.parent, "clone", "-q", "-b", "release", str(ws.root), str(fresh))
    assert Workspace(fresh).run_json("--remote", "team") == {"s0": "restored"}
    # a bad revision among good ones: refused before anything is listed, let alone removed
    res = ws.sluice("gc", "--remote", "team", "--rev", "release", "--rev", "nope")
    assert res.code == 2 and "--rev nope: not a commit in this repository" in res.err and "Traceback" not in res.err, res.err
    with pytest.raises(SpecError, match="--rev nope"):
        api.gc(ws.root / "pipeline.yaml", keep_days=1, remote="team", revisions=Choice(("release", "nope")), now=later)
    assert store.head(_key(old)) == 1000
    report = api.gc(ws.root / "pipeline.yaml", keep_days=1, remote="team", now=later)
    assert (report.objects, report.entries, report.packs, report.bundles) == (1, 1, 1, 1) and store.head(_key(old)) is None
    for made in ("out", ".sluice"):  # what the restore wrote: a new clone again
        shutil.rmtree(fresh / made)
    assert Workspace(fresh).run_json("--remote", "team") == {"s0": "ran"}


def test_gc_aborts_the_unfinished_uploads_of_pushes_that_died(seaweed: S3Server, ws: Workspace) -> None:
    """A push killed in a multipart upload leaves parts the server keeps (and bills); gc gives them up
    once they are past the grace period, and leaves a young one, which may be a push under way."""
    url = seaweed.url()
    chain(ws, 1, remote_url=url, endpoint=seaweed.endpoint)
    store = FsspecStore(RemoteConfig("team", url, endpoint_url=seaweed.endpoint))
    fs = store._open()
    bucket, name, _ = fs.split_path(store._path(_key("ab" * 32)))
    upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=name)
    fs.call_s3("upload_part", Bucket=bucket, Key=name, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1000)
    assert [u.key for u in store.unfinished()] == [_key("ab" * 32)]
    young = ws.sluice("gc", "--remote", "team", "--json")
    assert young.code == 0 and young.json()["aborted_uploads"] == 0 and len(store.unfinished()) == 1
    dry = api.gc(ws.root / "pipeline.yaml", remote="team", dry_run=True, now=time.time() + 3 * DAY)
    assert dry.uploads == 1 and f"{_key('ab' * 32)} (unfinished upload {upload['UploadId']})" in dry.removed
    assert len(store.unfinished()) == 1  # a dry run aborts nothing
    report = api.gc(ws.root / "pipeline.yaml", remote="team", now=time.time() + 3 * DAY)
    assert report.uploads == 1 and store.unfinished() == []
    assert store.head(_key("ab" * 32)) is None


def test_verify_reports_an_oversized_entry_or_pack_as_a_finding(seaweed: S3Server, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value over the read bound is one bad item in the report, not the end of the check."""
    chain(ws, 1, remote_url=seaweed.url(), endpoint=seaweed.endpoint)
    ws.sluice("run", "--remote", "team")
    monkeypatch.setattr("sluice.engine.remote.upkeep.ENTRY_BYTES", 10)  # every entry and pack is over it now
    report = api.cache_verify(ws.root / "pipeline.yaml", remote="team")
    problems = sorted((b.path.split("/")[0], b.problem) for b in report.bad)
    assert problems == [("packs", "over 10 bytes: not a pack sluice writes"), ("runs", "over 10 bytes: not a run entry sluice writes")]
