"""`sluice gc --rev / --all-branches / --all-tags / --all-commits`: what the locks of other git revisions name is kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import Workspace
from tests.engine.test_cache_maintenance import GC, _age_cache, _objects
from tests.support.git import commit, git, init


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "runs").rglob("*.json"))


def _two_branches(ws: Workspace) -> Workspace:
    """A repository whose pipeline lives in `ml/`: `release` (and tag v1) locks n=1's outputs, main n=2's.

    Tag `bare` is a commit before there was any lock. The cache is a month old: only locks keep it.
    """
    init(ws.root)
    proj = Workspace(ws.root / "ml")
    proj.write(".gitignore", ".sluice/\nout.txt\nfolder/\n")
    commit(ws.root, "ignore what sluice writes")
    git(ws.root, "tag", "bare")
    proj.write("pipeline.yaml", GC)
    assert proj.run_json() == {"s": "ran", "d": "ran"}
    commit(ws.root, "n=1")
    git(ws.root, "branch", "release")
    git(ws.root, "tag", "-a", "v1", "-m", "v1")  # annotated: it must be peeled to its commit
    proj.write("pipeline.yaml", GC.replace("{n: 1}", "{n: 2}"))
    assert proj.run_json() == {"s": "ran", "d": "ran"}
    commit(ws.root, "n=2")
    _age_cache(proj.root / ".sluice/cache", 30)
    return proj


def _run_on_release(proj: Workspace) -> dict[str, str]:
    """Check out `release` in place, drop the outputs, and run: restored, or ran again."""
    git(proj.root, "checkout", "-q", "release")
    (proj.root / "out.txt").unlink()
    shutil.rmtree(proj.root / "folder")
    return proj.run_json()


def test_gc_without_a_revision_drops_what_only_a_branchs_lock_names(ws: Workspace) -> None:
    proj = _two_branches(ws)
    res = proj.sluice("gc", "--json")
    assert res.code == 0, res.err
    report = res.json()
    assert (report["removed_objects"], report["removed_entries"], report["revisions"]) == (2, 2, [])
    assert _run_on_release(proj) == {"s": "ran", "d": "ran"}


@pytest.mark.parametrize(
    "flags", [["--rev", "release"], ["--all-branches"], ["--all-tags"], ["--rev", "HEAD~1", "--rev", "v1"]], ids=" ".join
)
def test_gc_keeps_what_a_chosen_revisions_lock_names(ws: Workspace, flags: list[str]) -> None:
    proj = _two_branches(ws)
    release = git(ws.root, "rev-parse", "release")
    res = proj.sluice("gc", *flags, "--json")
    assert res.code == 0, res.err
    report = res.json()
    assert (report["removed_objects"], report["removed_entries"]) == (0, 0), report["removed"]
    assert {"rev": flags[-1] if flags[0] == "--rev" else "release" if "branches" in flags[0] else "v1", "commit": release,
            "lock": "ml/sluice.lock"} in report["revisions"]  # fmt: skip
    assert _run_on_release(proj) == {"s": "restored", "d": "restored"}


def test_gc_names_each_kept_revision_and_one_without_a_lock_keeps_nothing_extra(ws: Workspace) -> None:
    proj = _two_branches(ws)
    release, bare = git(ws.root, "rev-parse", "release"), git(ws.root, "rev-parse", "bare")
    res = proj.sluice("gc", "--rev", "release", "--rev", "bare", "--dry-run")
    assert res.code == 0, res.err
    assert f"kept what the locks of 2 git revisions name: release {release[:10]}, bare {bare[:10]} (no ml/sluice.lock)" in res.out
    assert "would remove 0 objects and 0 run entries" in res.out, res.out
    res = proj.sluice("gc", "--rev", "bare", "--json")
    assert res.code == 0, res.err
    assert res.json()["revisions"] == [{"rev": "bare", "commit": bare, "lock": None}]
    assert res.json()["removed_objects"] == 2


def _lock_version(proj: Workspace, repo: Path, n: int, message: str = "") -> None:
    proj.write("pipeline.yaml", GC.replace("{n: 1}", f"{{n: {n}}}"))
    assert set(proj.run_json().values()) <= {"ran", "restored"}
    commit(repo, message or f"n={n}")


def test_gc_all_commits_keeps_every_version_of_the_lock_in_the_history(ws: Workspace) -> None:
    """Versions no branch or tag points at (a commit since superseded, a merge's own resolution) are kept too."""
    proj = _two_branches(ws)  # release: n=1, main: n=2
    _lock_version(proj, ws.root, 3)  # n=2 is now only in main's history
    git(ws.root, "checkout", "-q", "-b", "side")
    _lock_version(proj, ws.root, 4)
    git(ws.root, "checkout", "-q", "main")
    _lock_version(proj, ws.root, 5)
    git(ws.root, "merge", "-q", "--no-commit", "-s", "ours", "side")
    _lock_version(proj, ws.root, 6, "merge side, resolved as n=6")  # a lock neither parent has
    merge = git(ws.root, "rev-parse", "HEAD")
    _lock_version(proj, ws.root, 7)
    git(ws.root, "branch", "-D", "side")  # n=4 is left only in the merge's second parent
    _age_cache(proj.root / ".sluice/cache", 30)
    branches = proj.sluice("gc", "--all-branches", "--all-tags", "--dry-run", "--json").json()
    assert branches["removed_entries"] == 2 * 5  # n=2 to 6, on no branch or tag: each stage's entry
    res = proj.sluice("gc", "--all-commits", "--dry-run")
    assert res.code == 0, res.err
    assert "would remove 0 objects and 0 run entries" in res.out, res.out
    assert "kept what the locks of 7 git revisions name: " in res.out and merge[:10] in res.out, res.out
    kept = proj.sluice("gc", "--all-commits", "--json").json()
    assert (kept["removed_objects"], kept["removed_entries"]) == (0, 0)
    assert {r["commit"] for r in kept["revisions"]} >= {merge, git(ws.root, "rev-parse", "release")}
    assert _run_on_release(proj) == {"s": "restored", "d": "restored"}


def _bad_locks_on_branches(proj: Workspace, repo: Path) -> None:
    """Branch `broken`: a lock that is not YAML; `huge`: one over SLUICE_MAX_LOCK_BYTES=20000; `linked`: a symlink."""
    lock = proj.read("sluice.lock")
    for branch, make in [
        ("broken", lambda p: p.write_text("version: 2\npipelines: [\n")),
        ("huge", lambda p: p.write_text(lock + "#" * 20_000 + "\n")),
        ("linked", lambda p: (p.unlink(), p.symlink_to("pipeline.yaml"))),
    ]:
        git(repo, "checkout", "-q", "-b", branch, "main")
        make(proj.root / "sluice.lock")
        commit(repo, branch)
    git(repo, "checkout", "-q", "main")


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--rev", "release", "--rev", "nope"], 2, "--rev nope: not a commit in this repository"),
        (["--rev=--all"], 2, "--rev --all: not a commit in this repository"),
        (["--rev", "broken"], 2, "broken:ml/sluice.lock:3:1: the lock file is not valid YAML"),
        (["--all-branches"], 2, "broken:ml/sluice.lock:3:1: the lock file is not valid YAML"),
        (["--rev", "huge"], 2, "huge:ml/sluice.lock: the lock file is 21,"),
        (["--rev", "linked"], 2, "linked:ml/sluice.lock: is a symbolic link at this revision, not a lock file"),
        (["--all-commits"], 2, ":ml/sluice.lock: is a symbolic link at this revision, not a lock file"),
    ],
    ids=["unknown", "an option", "malformed", "malformed among all branches", "over the limit", "a symlink", "a symlink in history"],
)
def test_gc_refuses_a_bad_revision_and_removes_nothing(ws: Workspace, flags: list[str], code: int, message: str) -> None:
    proj = _two_branches(ws)
    _bad_locks_on_branches(proj, ws.root)
    cache = proj.root / ".sluice/cache"
    before = (_objects(cache), _entries(cache))
    res = proj.sluice("gc", *flags, env={"SLUICE_MAX_LOCK_BYTES": "20000"})
    assert res.code == code, res.out + res.err
    assert message in res.err and "Traceback" not in res.err, res.err
    assert (_objects(cache), _entries(cache)) == before  # the working lock alone would have let 2 objects go


def test_gc_rev_outside_a_git_repository_or_without_git_refuses_and_removes_nothing(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws.write("pipeline.yaml", GC)
    ws.run_json("--set", "n=2")
    ws.run_json()
    cache = ws.root / ".sluice/cache"
    _age_cache(cache, 30)
    before = (_objects(cache), _entries(cache))
    res = ws.sluice("gc", "--rev", "main", env={"GIT_CEILING_DIRECTORIES": str(ws.root.parent)})
    assert res.code == 1 and "Traceback" not in res.err, res.err
    assert f"sluice: --rev main: {ws.root} is not in a git repository" in res.err, res.err
    no_git = tmp_path_factory.mktemp("no-git")  # a PATH with no git on it
    res = ws.sluice("gc", "--all-tags", env={"PATH": str(no_git)})
    assert res.code == 1 and "git is not installed" in res.err and "Traceback" not in res.err, res.err
    assert (_objects(cache), _entries(cache)) == before
    assert ws.sluice("gc").code == 0 and len(_objects(cache)) == 3  # without a revision: as before
