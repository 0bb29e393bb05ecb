"""`sluice run --remote`, `push` and `pull` through the real CLI against real S3 servers (and one OpenSSH sshd)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from sluice.engine.fingerprint import hash_file
from sluice.engine.remote.config import RemoteConfig
from sluice.engine.remote.fsspec_store import FsspecStore
from sluice.engine.remote.pack import Bundle, pack_body, pack_bundles
from sluice.engine.remote.sync import SMALL_OBJECT
from tests.conftest import Workspace
from tests.remote.conftest import S3Server, chain, copy_checkout, remotes_yaml
from tests.support.sshserver import SshServer


def _outcomes(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    res = ws.sluice("run", "--json", *args, env=env)
    assert res.code in (0, 1), res.err
    return {k: v["outcome"] for k, v in res.json()["stages"].items()}, res.err


def _store(server: S3Server, url: str) -> FsspecStore:
    return FsspecStore(RemoteConfig("team", url, endpoint_url=server.endpoint))


def _object_of(ws: Workspace, path: str) -> str:
    return hash_file(ws.root / path)


def _bundles(store: FsspecStore) -> list[Bundle]:
    """The bundles the remote's one pack names."""
    (pack,) = [item.key for item in store.list("packs")]
    return pack_bundles(store.get_bytes(pack, 1 << 20))


def test_a_fresh_checkout_restores_every_stage_from_the_remote(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    first = Workspace(tmp_path / "first")
    chain(first, 4, remote_url=url, endpoint=seaweed.endpoint)
    assert _outcomes(first, "--remote", "team")[0] == dict.fromkeys(("s0", "s1", "s2", "s3"), "ran")
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    assert _outcomes(fresh, "--remote", "team")[0] == dict.fromkeys(("s0", "s1", "s2", "s3"), "restored")
    assert fresh.read("out/s3.txt") == first.read("out/s3.txt")
    assert _outcomes(fresh, "--remote", "team")[0] == dict.fromkeys(("s0", "s1", "s2", "s3"), "skipped")


def test_an_ssh_remote_added_on_the_command_line_restores_a_fresh_checkout(ssh: SshServer, tmp_path: Path) -> None:
    first = Workspace(tmp_path / "first")
    chain(first, 4)
    url = ssh.url()
    added = first.sluice("remote", "add", "team", url)
    assert added.code == 0, added.err
    remotes = yaml.safe_load(first.read("sluice.remotes.yaml"))
    remotes["remotes"]["team"]["options"] = ssh.options()  # the key file's path, as a team commits it
    first.write("sluice.remotes.yaml", yaml.safe_dump(remotes))
    assert _outcomes(first, "--remote", "team")[0] == dict.fromkeys(("s0", "s1", "s2", "s3"), "ran")
    on_server = Path(url.split(str(ssh.port), 1)[1])  # ssh://user@127.0.0.1:PORT/abs/path
    assert len([p for p in (on_server / "objects").rglob("*") if p.is_file()]) == 4
    assert not [p for p in (on_server / "tmp").rglob("*") if p.is_file()]  # every temp key was renamed into place
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    assert _outcomes(fresh, "--remote", "team")[0] == dict.fromkeys(("s0", "s1", "s2", "s3"), "restored")
    assert fresh.read("out/s3.txt") == first.read("out/s3.txt")


def test_push_uploads_each_object_once_and_pull_fills_the_cache(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    first = Workspace(tmp_path / "first")
    chain(first, 3, remote_url=url, endpoint=seaweed.endpoint)
    assert first.run_json() == dict.fromkeys(("s0", "s1", "s2"), "ran")  # no remote: nothing pushed yet
    assert list(_store(seaweed, url).list("objects")) == []
    pushed = first.sluice("push", "--json")
    assert pushed.code == 0, pushed.err
    assert (pushed.json()["entries"], pushed.json()["objects"]) == (3, 3)
    again = first.sluice("push", "--json").json()
    assert (again["entries"], again["objects"]) == (3, 0)  # objects are pushed once
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    pulled = fresh.sluice("pull", "--json")
    assert pulled.code == 0, pulled.err
    assert (pulled.json()["entries"], pulled.json()["objects"]) == (3, 3)
    assert fresh.run_json() == dict.fromkeys(("s0", "s1", "s2"), "restored")  # offline: from the local cache now


@dataclass(frozen=True)
class _Tampered:
    first: Workspace  # ran and pushed
    fresh: Workspace  # a checkout of it, restored after the tampering
    outcomes: dict[str, str]
    err: str
    url: str
    key: str  # the tampered object's key


def _restore_tampered(server: S3Server, tmp_path: Path, n: int, output: str, tamper: Callable[[str, str], object]) -> _Tampered:
    """A chain of `n` stages run and pushed; `tamper(url, key)` changes the remote object of `output`; a fresh checkout restores."""
    url = server.url()
    first = Workspace(tmp_path / "first")
    chain(first, n, remote_url=url, endpoint=server.endpoint)
    _outcomes(first, "--remote", "team")
    digest = _object_of(first, output)
    key = f"objects/{digest[:2]}/{digest[2:]}"
    tamper(url, key)
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    outcomes, err = _outcomes(fresh, "--remote", "team")
    return _Tampered(first, fresh, outcomes, err, url, key)


def _unbundle(store: FsspecStore, key: str) -> None:
    """Delete the bundle that carries a copy of the object at `key`: a checkout must then fetch the object itself."""
    store.delete(next(b.key for b in _bundles(store) if any(key == f"objects/{d[:2]}/{d[2:]}" for d, _, _ in b.objects)))


def _quarantined(ws: Workspace, key: str) -> bytes:
    return (ws.root / ".sluice" / "cache" / "quarantine" / "remote" / "team" / key.removeprefix("objects/").replace("/", "")).read_bytes()


def test_an_object_deleted_out_of_band_reruns_exactly_that_stage_and_is_pushed_again(seaweed: S3Server, tmp_path: Path) -> None:
    """Gone from the remote: its object, and the pack's bundle that carried a copy of it."""

    def delete(url: str, key: str) -> None:
        _store(seaweed, url).delete(key)
        _unbundle(_store(seaweed, url), key)

    done = _restore_tampered(seaweed, tmp_path, 4, "out/s1.txt", delete)
    assert done.outcomes == {"s0": "restored", "s1": "ran", "s2": "restored", "s3": "restored"}
    assert _store(seaweed, done.url).head(done.key) == 1000  # the run pushed it again


def test_an_object_deleted_out_of_band_but_held_in_a_bundle_is_restored_from_it_and_pushed_again(seaweed: S3Server, tmp_path: Path) -> None:
    """The bundle's copy is the object (its bytes hash to its name), so the stage is restored, not run;
    `sluice push` from that checkout puts the object back, since a push checks each object with a HEAD."""
    done = _restore_tampered(seaweed, tmp_path, 4, "out/s1.txt", lambda url, key: _store(seaweed, url).delete(key))
    assert done.outcomes == dict.fromkeys(("s0", "s1", "s2", "s3"), "restored")
    assert done.fresh.read("out/s1.txt") == done.first.read("out/s1.txt")
    store = _store(seaweed, done.url)
    assert store.head(done.key) is None
    pushed = done.fresh.sluice("push", "--json")
    assert pushed.code == 0, pushed.err
    assert (pushed.json()["objects"], store.head(done.key)) == (1, 1000)


def test_a_corrupt_remote_object_is_quarantined_and_the_stage_runs(rclone: S3Server, tmp_path: Path) -> None:
    assert rclone.folder is not None
    folder = rclone.folder

    def on_disk(url: str, key: str) -> Path:
        return folder / url.removeprefix("s3://") / key

    def corrupt(url: str, key: str) -> None:  # same size, other bytes: only a re-hash can tell
        on_disk(url, key).write_bytes(b"b" * 1000)
        _unbundle(_store(rclone, url), key)

    done = _restore_tampered(rclone, tmp_path, 3, "out/s1.txt", corrupt)
    assert done.outcomes == {"s0": "restored", "s1": "ran", "s2": "restored"}
    assert "corrupt" in done.err
    assert done.fresh.read("out/s1.txt") == done.first.read("out/s1.txt")
    assert _quarantined(done.fresh, done.key) == b"b" * 1000
    assert hash_file(on_disk(done.url, done.key)) == _object_of(done.first, "out/s1.txt")  # dropped, and the good bytes pushed


def test_a_remote_object_longer_than_its_entry_says_is_quarantined_and_the_stage_runs(seaweed: S3Server, tmp_path: Path) -> None:
    def lengthen(url: str, key: str) -> None:  # the named bytes, and more: a bounded read must not pass it
        _store(seaweed, url).put_bytes(key, b"a" * 1000 + b"tail")
        _unbundle(_store(seaweed, url), key)

    done = _restore_tampered(seaweed, tmp_path, 2, "out/s0.txt", lengthen)
    assert done.outcomes == {"s0": "ran", "s1": "restored"} and "corrupt" in done.err, done.err
    assert _quarantined(done.fresh, done.key) == b"a" * 1000 + b"tail"
    assert done.fresh.read("out/s0.txt") == "a" * 1000
    assert _store(seaweed, done.url).head(done.key) == 1000  # dropped from the remote, and pushed again


def test_read_only_runs_never_push(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    ws = Workspace(tmp_path / "pr")
    chain(ws, 2, remote_url=url, endpoint=seaweed.endpoint)
    assert _outcomes(ws, "--remote", "team", "--read-only")[0] == {"s0": "ran", "s1": "ran"}
    assert list(_store(seaweed, url).list("")) == []
    chain(ws, 2, remote_url=url, endpoint=seaweed.endpoint, extra="read_only: true")
    ws.sluice("run", "--force", "--remote", "team")
    assert list(_store(seaweed, url).list("")) == []
    refused = ws.sluice("push")
    assert refused.code == 1 and "read-only" in refused.err


def test_signed_entries_are_required_when_the_remote_says_so(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    unsigned = Workspace(tmp_path / "unsigned")
    chain(unsigned, 2, remote_url=url, endpoint=seaweed.endpoint)
    _outcomes(unsigned, "--remote", "team")  # no key: unsigned entries
    strict = Workspace(tmp_path / "strict")
    chain(strict, 2, remote_url=url, endpoint=seaweed.endpoint, extra="require_signed: true")
    good = {"SLUICE_REMOTE_KEY": "team-secret"}
    assert _outcomes(strict, "--remote", "team", env=good)[0] == {"s0": "ran", "s1": "ran"}  # unsigned ones ignored
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(strict.root, fresh.root)
    assert _outcomes(fresh, "--remote", "team", env=good)[0] == {"s0": "restored", "s1": "restored"}  # strict pushed signed ones
    wrong = Workspace(tmp_path / "wrong")
    copy_checkout(strict.root, wrong.root)
    assert _outcomes(wrong, "--remote", "team", "--read-only", env={"SLUICE_REMOTE_KEY": "guess"})[0] == {"s0": "ran", "s1": "ran"}
    keyless = Workspace(tmp_path / "keyless")
    copy_checkout(strict.root, keyless.root)
    outcomes, err = _outcomes(keyless, "--remote", "team", "--read-only", env={"SLUICE_REMOTE_KEY": ""})
    assert outcomes == {"s0": "ran", "s1": "ran"} and "SLUICE_REMOTE_KEY is not set" in err


def test_a_poisoned_entry_is_never_restored(seaweed: S3Server, tmp_path: Path) -> None:
    """An entry with a forged signature, or naming a path outside the stage's outputs, does not count."""
    url = seaweed.url()
    first = Workspace(tmp_path / "first")
    chain(first, 1, remote_url=url, endpoint=seaweed.endpoint, extra="require_signed: true")
    _outcomes(first, "--remote", "team", env={"SLUICE_REMOTE_KEY": "k"})
    store = _store(seaweed, url)
    (key,) = [item.key for item in store.list("runs")]
    entry = json.loads(store.get_bytes(key, 1 << 20) or b"")
    evil = first.root / "evil.txt"
    evil.write_bytes(b"x" * 1000)
    digest = hash_file(evil)
    store.put_file(f"objects/{digest[:2]}/{digest[2:]}", evil, __import__("hashlib").sha256(evil.read_bytes()).digest())
    entry["outputs"]["o"]["hash"] = digest  # the signature no longer matches
    _forge(store, key, entry)
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    assert _outcomes(fresh, "--remote", "team", "--read-only", env={"SLUICE_REMOTE_KEY": "k"})[0] == {"s0": "ran"}
    assert fresh.read("out/s0.txt") == "a" * 1000
    entry.pop("signature")
    entry["outputs"]["o"]["path"] = "../escaped.txt"
    _forge(store, key, entry)
    lax = Workspace(tmp_path / "lax")
    chain(lax, 1, remote_url=url, endpoint=seaweed.endpoint)  # signatures not required: still the path is checked
    assert _outcomes(lax, "--remote", "team", "--read-only")[0] == {"s0": "ran"}
    assert not (tmp_path / "escaped.txt").exists()


def _forge(store: FsspecStore, key: str, entry: dict[str, Any]) -> None:
    """Put `entry` at `key` and in place of every entry of every pack: where a lookup could find it."""
    store.put_bytes(key, json.dumps(entry).encode())
    for item in store.list("packs"):
        store.put_bytes(item.key, pack_body([entry]))


def test_a_pack_is_a_transport_a_forged_or_missing_one_falls_back_to_each_stage_entry(seaweed: S3Server, tmp_path: Path) -> None:
    """The lock's entries come in one GET (its pack); an entry in it that fails a check (a forged signature, an
    id other than the lock's) is looked up on its own instead, and a missing pack costs one GET."""
    url = seaweed.url()
    key = {"SLUICE_REMOTE_KEY": "k"}
    first = Workspace(tmp_path / "first")
    chain(first, 3, remote_url=url, endpoint=seaweed.endpoint, extra="require_signed: true")
    _outcomes(first, "--remote", "team", env=key)
    store = _store(seaweed, url)
    (pack,) = [item.key for item in store.list("packs")]  # written once every stage's entry was confirmed
    docs = json.loads(store.get_bytes(pack, 1 << 20) or b"")["entries"]
    assert sorted(d["stage"] for d in docs) == ["s0", "s1", "s2"]
    forged = json.loads(json.dumps(docs))
    forged[0]["outputs"]["o"]["size"] = 999  # the signature no longer matches
    forged[1]["outputs"]["o"]["path"] = "out/elsewhere.txt"  # not the stage's outputs
    store.put_bytes(pack, pack_body(forged))

    def restore(name: str) -> dict[str, Any]:
        fresh = Workspace(tmp_path / name)
        copy_checkout(first.root, fresh.root)
        res = fresh.sluice("run", "--json", "--remote", "team", "--read-only", env=key)
        assert res.code == 0, res.err
        assert {k: v["outcome"] for k, v in res.json()["stages"].items()} == dict.fromkeys(("s0", "s1", "s2"), "restored")
        assert fresh.read("out/s2.txt") == first.read("out/s2.txt")
        return cast(dict[str, Any], res.json()["remote"]["requests"])

    assert restore("forged") == {"GET": 1 + 2 + 3}  # the pack, the two stages' own entries, the objects
    store.delete(pack)
    assert restore("unpacked") == {"GET": 1 + 3 + 3}
    assert list(store.list("packs")) == []  # read-only: no pack written either


def test_a_pack_is_written_only_once_the_remote_holds_every_stage_of_the_lock(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    ws = Workspace(tmp_path / "ws")
    chain(ws, 3, remote_url=url, endpoint=seaweed.endpoint)
    assert _outcomes(ws)[0] == dict.fromkeys(("s0", "s1", "s2"), "ran")  # no remote: nothing pushed
    ws.write("pipeline.yaml", ws.read("pipeline.yaml").replace("echo 2)", "echo 22)"))
    assert _outcomes(ws, "--remote", "team")[0] == {"s0": "skipped", "s1": "skipped", "s2": "ran"}
    store = _store(seaweed, url)
    assert list(store.list("packs")) == []  # s0 and s1 were never confirmed on the remote
    pushed = ws.sluice("push")
    assert pushed.code == 0, pushed.err
    assert len(list(store.list("packs"))) == 1
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(ws.root, fresh.root)
    restored = _remote_json(fresh)
    assert restored["remote"]["requests"] == {"GET": 1 + len(_bundles(store))}


def test_a_pack_leaves_out_folder_outputs_which_are_looked_up_by_listing(seaweed: S3Server, tmp_path: Path) -> None:
    """The lock does not record a folder's manifest, so it cannot name that entry: the pack holds the others."""
    url = seaweed.url()
    ws = Workspace(tmp_path / "ws")
    ws.write(
        "pipeline.yaml",
        "version: 1\nstages:\n  f:\n    cmd: echo f > ${outputs.o}\n    outputs: {o: out/f.txt}\n"
        "  d:\n    cmd: mkdir -p ${outputs.o} && echo a > ${outputs.o}/a && echo b > ${outputs.o}/b\n    outputs: {o: out/d}\n",
    )
    ws.write("sluice.remotes.yaml", remotes_yaml(url, seaweed.endpoint))
    assert _outcomes(ws, "--remote", "team")[0] == {"f": "ran", "d": "ran"}
    store = _store(seaweed, url)
    (pack,) = [item.key for item in store.list("packs")]
    assert [d["stage"] for d in json.loads(store.get_bytes(pack, 1 << 20) or b"")["entries"]] == ["f"]
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(ws.root, fresh.root)
    restored = _remote_json(fresh)
    assert {k: v["outcome"] for k, v in restored["stages"].items()} == {"f": "restored", "d": "restored"}
    assert restored["remote"]["requests"] == {"GET": 1 + 1 + 1 + 2, "LIST": 1}  # pack, f's object; d's entry, its 2 files
    assert fresh.read("out/d/b") == "b\n"


def _remote_json(ws: Workspace, *args: str) -> dict[str, Any]:
    res = ws.sluice("run", "--json", "--remote", "team", *args)
    assert res.code == 0, res.err
    return cast(dict[str, Any], res.json())


def test_a_fresh_checkout_asks_for_what_its_lock_names_and_nothing_more(seaweed: S3Server, tmp_path: Path) -> None:
    """The lock's entries in one GET (its pack, remote/pack.py), then the small objects in the pack's bundles (the
    check and the download in one GET each); nothing asked twice; a no-op asks nothing."""
    url = seaweed.url()
    first = Workspace(tmp_path / "first")
    chain(first, 5, remote_url=url, endpoint=seaweed.endpoint)
    _outcomes(first, "--remote", "team")
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    restored = _remote_json(fresh, "--markdown-summary", str(tmp_path / "summary.md"))
    assert {s["outcome"] for s in restored["stages"].values()} == {"restored"}
    gets = 1 + len(_bundles(_store(seaweed, url)))  # the pack, its bundles (by the objects' first digit)
    assert 1 < gets < 6 and restored["remote"]["requests"] == {"GET": gets}
    assert restored["remote"]["fetched"] == {"objects": 5, "bytes": 5000}
    assert (
        f"remote team: fetched 5 objects (5,000 bytes), pushed 0 objects (0 bytes) in 0 entries; {gets} requests ({gets} GET)"
        in (tmp_path / "summary.md").read_text()
    )
    again = _remote_json(fresh)
    assert again["remote"]["requests"] == {}  # everything hit locally: the remote was not contacted
    line = fresh.sluice("run", "--remote", "team").out.strip().splitlines()[-1]
    assert line == "remote team: not asked (nothing was missing locally)"


def test_a_fresh_checkout_restores_the_result_its_lock_records(seaweed: S3Server, tmp_path: Path) -> None:
    """Two runs of one unchanged, non-deterministic stage file two entries under one fingerprint: a checkout
    gets the one its own lock names, not the newest, so the restore leaves the committed lock as it was."""
    url = seaweed.url()
    pipeline = "version: 1\nstages:\n  draw:\n    cmd: od -An -N16 -tx1 /dev/urandom > ${outputs.o}\n    outputs: {o: out/draw.txt}\n"
    mine = Workspace(tmp_path / "mine")
    mine.write("pipeline.yaml", pipeline)
    mine.write("sluice.remotes.yaml", remotes_yaml(url, seaweed.endpoint))
    _outcomes(mine, "--remote", "team")
    theirs = Workspace(tmp_path / "theirs")
    copy_checkout(mine.root, theirs.root)
    assert _outcomes(theirs, "--remote", "team", "--force")[0] == {"draw": "ran"}  # a newer entry, other bytes
    assert theirs.read("out/draw.txt") != mine.read("out/draw.txt")
    assert len([i for i in _store(seaweed, url).list("runs") if i.key.endswith(".json")]) == 2
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(mine.root, fresh.root)
    assert _outcomes(fresh, "--remote", "team")[0] == {"draw": "restored"}
    assert fresh.read("out/draw.txt") == mine.read("out/draw.txt")
    assert fresh.read("sluice.lock") == mine.read("sluice.lock")


def test_a_big_object_is_head_checked_at_lookup_and_fetched_once_its_restore_is_decided(seaweed: S3Server, tmp_path: Path) -> None:
    first = Workspace(tmp_path / "first")
    chain(first, 2, size=SMALL_OBJECT + 1, remote_url=seaweed.url(), endpoint=seaweed.endpoint)
    _outcomes(first, "--remote", "team")
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    restored = _remote_json(fresh)
    assert {s["outcome"] for s in restored["stages"].values()} == {"restored"}
    assert restored["remote"]["requests"] == {"GET": 3, "HEAD": 2}  # the pack; per stage a HEAD, then the object
    assert fresh.read("out/s1.txt") == first.read("out/s1.txt")


def test_a_run_refused_after_planning_leaves_the_local_cache_as_it_was(seaweed: S3Server, tmp_path: Path) -> None:
    """Planning fetches small objects ahead; when it then refuses the run (an input is missing), what it
    fetched is taken back out: bad input writes nothing."""
    first = Workspace(tmp_path / "first")
    chain(first, 3, remote_url=seaweed.url(), endpoint=seaweed.endpoint)
    _outcomes(first, "--remote", "team")
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    fresh.write(
        "pipeline.yaml",
        fresh.read("pipeline.yaml")
        + "  extra:\n    cmd: cp ${inputs.i} ${outputs.o}\n    inputs: {i: nowhere.txt}\n    outputs: {o: out/extra.txt}\n",
    )
    res = fresh.sluice("run", "--remote", "team")
    assert res.code == 2 and "input 'nowhere.txt' does not exist" in res.err, res.err
    objects = fresh.root / ".sluice" / "cache" / "objects"
    assert not objects.exists() or [p for p in objects.rglob("*") if p.is_file()] == []
    assert not (fresh.root / "out").exists()


def test_small_objects_come_in_bundles_and_a_bad_or_missing_bundle_costs_only_requests(seaweed: S3Server, tmp_path: Path) -> None:
    """A pack's bundles carry its small objects in a few GETs; a bundle is a transport: a slice counts only if it
    hashes to its object, so a tampered or deleted bundle sends its objects' GETs to the objects themselves."""
    url = seaweed.url()
    first = Workspace(tmp_path / "first")
    chain(first, 8, remote_url=url, endpoint=seaweed.endpoint)
    _outcomes(first, "--remote", "team")
    store = _store(seaweed, url)
    bundles = _bundles(store)
    assert sorted(d for b in bundles for d, _, _ in b.objects) == sorted(_object_of(first, f"out/s{i}.txt") for i in range(8))
    assert sorted(i.key for i in store.list("bundles")) == sorted(b.key for b in bundles) and len(bundles) >= 2

    def restore(name: str) -> dict[str, Any]:
        fresh = Workspace(tmp_path / name)
        copy_checkout(first.root, fresh.root)
        res = fresh.sluice("run", "--json", "--remote", "team")
        assert res.code == 0, res.err
        assert {s["outcome"] for s in res.json()["stages"].values()} == {"restored"}
        assert all(fresh.read(f"out/s{i}.txt") == first.read(f"out/s{i}.txt") for i in range(8))
        assert not (fresh.root / ".sluice" / "cache" / "quarantine").exists()  # the objects were fine: nothing set aside
        return cast(dict[str, Any], res.json()["remote"]["requests"])

    assert restore("bundled") == {"GET": 1 + len(bundles)}  # no object asked for on its own
    tampered, gone = bundles[0], bundles[1]
    data = bytearray(store.get_bytes(tampered.key, tampered.size) or b"")
    data[tampered.objects[0][1]] ^= 1  # one byte of its first object
    store.put_bytes(tampered.key, bytes(data))
    store.delete(gone.key)
    asked = restore("tampered")
    assert asked["GET"] == 1 + len(bundles) + 1 + len(gone.objects)  # the tampered slice and the lost ones, on their own
    # that restore could write: it took the bad bundle away, and put both back (HEAD, then PUT) with the same pack
    assert sorted(i.key for i in store.list("bundles")) == sorted(b.key for b in bundles)
    assert store.get_bytes(tampered.key, tampered.size) != bytes(data) and _bundles(store) == bundles
    assert restore("repaired") == {"GET": 1 + len(bundles)}


def test_a_remote_marked_bundles_false_gets_none_and_a_checkout_asks_for_each_object(seaweed: S3Server, tmp_path: Path) -> None:
    url = seaweed.url()
    first = Workspace(tmp_path / "first")
    chain(first, 4, remote_url=url, endpoint=seaweed.endpoint, extra="bundles: false")
    _outcomes(first, "--remote", "team")
    store = _store(seaweed, url)
    assert _bundles(store) == [] and list(store.list("bundles")) == []
    fresh = Workspace(tmp_path / "fresh")
    copy_checkout(first.root, fresh.root)
    assert _remote_json(fresh)["remote"]["requests"] == {"GET": 1 + 4}  # the pack, then each object
