"""`sluice export github-actions`: the workflow passes actionlint and GitHub's schema, reads the
cache on pull requests without writing it, and its own scripts, run twice with the cache
carried over as actions/cache would, run nothing the second time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Workspace

WORKFLOW = ".github/workflows/sluice.yml"


def _load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    data["on"] = data.pop(True)  # PyYAML reads YAML 1.1, where a bare `on` is a boolean; GitHub's reader does not
    return data


def _export(repo: Workspace, *args: str) -> dict[str, Any]:
    res = repo.sluice("export", "github-actions", "-f", "ml/pipeline.yaml", *args)
    assert res.code == 0, res.err
    return _load(repo.read(WORKFLOW))


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return workflow["jobs"]["pipeline"]["steps"]


def _uses(workflow: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in _steps(workflow) if s.get("uses", "").split("@")[0] == action]


def _lint(path: Path) -> None:
    for argv in (["actionlint", str(path)], ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)]):
        if shutil.which(argv[0]) is None:
            pytest.fail(f"{argv[0]} is not installed: pip install '.[dev]'")
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}{proc.stderr}"


REMOTES = {
    "none": None,
    "s3": "version: 1\nremotes:\n  team: {url: 's3://ml-cache/sluice', endpoint_url: 'http://127.0.0.1:8333'}\n",
    "signed": "version: 1\ndefault: b\nremotes:\n  a: {url: 'file:///a'}\n  b: {url: 'gs://b/c', require_signed: true}\n",
    "read-only": "version: 1\nremotes:\n  mirror: {url: 'file:///mnt/cache', read_only: true}\n",
}


@pytest.mark.parametrize("remote", REMOTES)
def test_the_workflow_passes_actionlint_and_the_github_schema(repo: Workspace, remote: str) -> None:
    if REMOTES[remote]:
        repo.write("ml/sluice.remotes.yaml", REMOTES[remote])
    _export(repo)
    _lint(repo.root / WORKFLOW)


def test_the_pipeline_at_the_root_with_requirements_and_options(tmp_path: Path) -> None:
    from tests.export.conftest import PIPELINE

    ws = Workspace(tmp_path)
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("requirements.txt", "sluice\n")
    res = ws.sluice("export", "github-actions", "--branch", "trunk", "--branch", "release", "--python", "3.12")
    assert res.code == 0, res.err
    _lint(tmp_path / WORKFLOW)
    wf = _load(ws.read(WORKFLOW))
    assert wf["on"]["push"] == {"branches": ["trunk", "release"]}
    assert _uses(wf, "actions/setup-python")[0]["with"] == {
        "python-version": "3.12",
        "cache": "pip",
        "cache-dependency-path": "requirements.txt",
    }
    assert next(s for s in _steps(wf) if s.get("id") == "install")["run"] == "python -m pip install -r requirements.txt"
    assert _uses(wf, "actions/cache/restore")[0]["with"]["path"] == ".sluice/cache"


def test_pull_requests_read_the_cache_and_never_write_it(repo: Workspace) -> None:
    wf = _export(repo)
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["group"] == "sluice-${{ github.ref }}"
    assert set(wf["on"]) == {"push", "pull_request", "workflow_dispatch"}
    assert not _uses(wf, "actions/cache")  # it saves only when its job succeeds, and on every event
    (restore,) = _uses(wf, "actions/cache/restore")
    (save,) = _uses(wf, "actions/cache/save")
    assert "if" not in restore
    assert save["if"] == "${{ !cancelled() && github.event_name != 'pull_request' }}"
    prefix = restore["with"]["restore-keys"]
    assert restore["with"]["key"] == save["with"]["key"] == prefix + "${{ github.run_id }}-${{ github.run_attempt }}"
    assert restore["with"]["path"] == save["with"]["path"] == "ml/.sluice/cache"
    (upload,) = _uses(wf, "actions/upload-artifact")
    assert upload["with"]["path"].split() == ["sluice-run.json", "ml/reports/validation.json"]
    assert upload["if"] == "${{ !cancelled() }}"
    (run,) = [s for s in _steps(wf) if "sluice run" in s.get("run", "")]
    assert run["run"] == 'sluice run -f ml/pipeline.yaml --json --markdown-summary "$GITHUB_STEP_SUMMARY" | tee sluice-run.json'


def test_with_a_remote_pull_requests_run_read_only_and_pushes_write(repo: Workspace) -> None:
    repo.write("ml/sluice.remotes.yaml", REMOTES["s3"])
    wf = _export(repo)
    assert not _uses(wf, "actions/cache/restore") and not _uses(wf, "actions/cache/save")
    runs = {s["if"]: s for s in _steps(wf) if "sluice run" in s.get("run", "")}
    pr, push = runs["${{ github.event_name == 'pull_request' }}"], runs["${{ github.event_name != 'pull_request' }}"]
    assert "--remote team --read-only " in pr["run"]
    assert "--remote team " in push["run"] and "--read-only" not in push["run"]
    assert push["env"] == {
        "AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
        "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}",
    }


def test_a_signed_remote_gets_its_key_from_secrets(repo: Workspace) -> None:
    repo.write("ml/sluice.remotes.yaml", REMOTES["signed"])
    wf = _export(repo)
    runs = [s for s in _steps(wf) if "sluice run" in s.get("run", "")]
    assert len(runs) == 2 and all("--remote b" in s["run"] for s in runs)  # the default one
    assert all(s["env"] == {"SLUICE_REMOTE_KEY": "${{ secrets.SLUICE_REMOTE_KEY }}"} for s in runs)


def test_a_read_only_remote_is_never_pushed_to(repo: Workspace) -> None:
    repo.write("ml/sluice.remotes.yaml", REMOTES["read-only"])
    wf = _export(repo)
    (run,) = [s for s in _steps(wf) if "sluice run" in s.get("run", "")]
    assert "if" not in run and "--remote mirror --read-only" in run["run"]


def test_several_remotes_need_a_default_or_a_choice(repo: Workspace) -> None:
    repo.write("ml/sluice.remotes.yaml", "version: 1\nremotes:\n  a: {url: 'file:///a'}\n  b: {url: 'file:///b'}\n")
    res = repo.sluice("export", "github-actions", "-f", "ml/pipeline.yaml")
    assert res.code == 2 and "several remotes (a, b) and no default" in res.err and "--remote" in res.err
    res = repo.sluice("export", "github-actions", "-f", "ml/pipeline.yaml", "--remote", "c")
    assert res.code == 2 and "no remote named 'c' in sluice.remotes.yaml" in res.err
    wf = _export(repo, "--remote", "b")
    assert any("--remote b" in s.get("run", "") for s in _steps(wf))
    assert "--remote b" in repo.read(WORKFLOW).splitlines()[2]  # the regenerate command keeps the choice


def test_a_bad_remotes_file_is_located(repo: Workspace) -> None:
    repo.write("ml/sluice.remotes.yaml", "version: 1\nremotes:\n  team: {url: 5}\n")
    res = repo.sluice("export", "github-actions", "-f", "ml/pipeline.yaml")
    assert res.code == 2
    assert "ml/sluice.remotes.yaml:3:15: remotes.team.url: url is required and must be a string" in res.err


def test_a_path_github_would_evaluate_is_refused(repo: Workspace) -> None:
    repo.write("ml/pipeline.yaml", repo.read("ml/pipeline.yaml").replace("reports/validation.json", "'reports/$${{ secrets.X }}.json'"))
    res = repo.sluice("export", "github-actions", "-f", "ml/pipeline.yaml")
    assert res.code == 1 and "contains '${{'" in res.err
    assert not (repo.root / WORKFLOW).exists()


# ---- the behavioural test: the workflow's own steps, without GitHub

CONDITIONS = {  # every `if:` the exporter writes, as it evaluates on a push that nobody cancelled
    "${{ !cancelled() }}": True,
    "${{ !cancelled() && github.event_name != 'pull_request' }}": True,
    "${{ github.event_name != 'pull_request' }}": True,
    "${{ github.event_name == 'pull_request' }}": False,
}


class ActionsCache:
    """actions/cache/restore and /save over a folder: exact key, else the newest entry by prefix."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.saved: list[str] = []

    def restore(self, key: str, prefix: str, path: Path) -> str | None:
        hit = key if key in self.saved else next((k for k in reversed(self.saved) if k.startswith(prefix)), None)
        if hit is not None:
            shutil.copytree(self.root / hit, path, dirs_exist_ok=True)
        return hit

    def save(self, key: str, path: Path) -> None:
        assert key not in self.saved, "cache keys are immutable: a second save under one key is refused"
        shutil.copytree(path, self.root / key)
        self.saved.append(key)


def _play(workflow: dict[str, Any], checkout: Path, cache: ActionsCache, run_id: int, tmp: Path) -> dict[str, Any]:
    """Run one job of the workflow as a push event would, the actions emulated; returns what happened."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "sluice"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m sluice "$@"\n')  # this checkout's sluice, as `install` would provide
    shim.chmod(0o755)
    summary = tmp / f"summary-{run_id}.md"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_STEP_SUMMARY": str(summary),
        "RUNNER_TEMP": str(tmp),
    }

    def expand(text: str) -> str:
        return (
            text.replace("${{ runner.os }}", "Linux").replace("${{ github.run_id }}", str(run_id)).replace("${{ github.run_attempt }}", "1")
        )

    seen: dict[str, Any] = {"restored": None, "uploaded": []}
    for step in workflow["jobs"]["pipeline"]["steps"]:
        if "if" in step and not CONDITIONS[step["if"]]:
            continue
        action = step.get("uses", "").split("@")[0]
        if step.get("id") == "install":
            continue  # installing is pip's business: the shim above puts this checkout's sluice on PATH
        if "run" in step:
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                check=False,
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, f"step {step['name']!r} failed:\n{proc.stdout}{proc.stderr}"
        elif action == "actions/cache/restore":
            w = step["with"]
            seen["restored"] = cache.restore(expand(w["key"]), expand(w["restore-keys"]), checkout / w["path"])
        elif action == "actions/cache/save":
            cache.save(expand(step["with"]["key"]), checkout / step["with"]["path"])
        elif action == "actions/upload-artifact":
            seen["uploaded"] = [p for p in step["with"]["path"].split() if (checkout / p).is_file()]
    seen["run"] = json.loads((checkout / "sluice-run.json").read_text())
    seen["summary"] = summary.read_text()
    return seen


def _commit(repo: Workspace) -> None:
    subprocess.run(["git", "-C", str(repo.root), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo.root), "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init"], check=True
    )


def test_the_second_run_of_the_workflow_runs_nothing(repo: Workspace, tmp_path: Path) -> None:
    workflow = _export(repo)
    _commit(repo)
    cache = ActionsCache(tmp_path / "actions-cache")
    outcomes = []
    for run_id in (1, 2):
        checkout = tmp_path / f"runner-{run_id}"  # every run starts on a fresh runner with a fresh clone
        subprocess.run(["git", "clone", "-q", str(repo.root), str(checkout)], check=True)
        seen = _play(workflow, checkout, cache, run_id, tmp_path / f"tmp-{run_id}")
        outcomes.append({s: r["outcome"] for s, r in seen["run"]["stages"].items()})
        assert seen["uploaded"] == ["sluice-run.json", "ml/reports/validation.json"]
        assert "| stage | outcome | seconds | why |" in seen["summary"]
        if run_id == 1:
            assert seen["restored"] is None
        else:
            assert seen["restored"] == "sluice-ml-pipeline.yaml-Linux-1-1"  # the newest earlier entry, by prefix
    assert set(outcomes[0].values()) == {"ran"}
    assert outcomes[1] == {"prepare": "restored", "check": "restored", "summary": "restored"}
    assert cache.saved == ["sluice-ml-pipeline.yaml-Linux-1-1", "sluice-ml-pipeline.yaml-Linux-2-1"]


def test_the_markdown_summary_is_a_table_of_the_run(repo: Workspace) -> None:
    repo.write("ml/data/raw.csv", "name,age\nann,-3\n")
    summary = repo.root / "summary.md"
    summary.write_text("earlier step\n")
    res = Workspace(repo.root / "ml").sluice("run", "--markdown-summary", str(summary))
    assert res.code == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n### sluice run failed: 2 ran, 1 failed in ")  # appended, not replaced
    assert "| prepare | ✓ ran |" in text
    assert "| check | ✗ failed |" in text and "validation rule(s) failed |" in text
    assert "| summary | ✓ ran |" in text


# ---- this repository's own workflow and its page

REPO = Path(__file__).resolve().parents[2]


def test_this_repository_workflow_is_current_and_docs_show_it() -> None:
    res = Workspace(REPO).sluice("export", "--check")
    assert res.code == 0, res.err  # stale: run the command in its header at the repository root
    assert "1 generated file up to date" in res.out
    page = (REPO / "docs/ci.md").read_text()
    shown = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert shown == (REPO / WORKFLOW).read_text()
