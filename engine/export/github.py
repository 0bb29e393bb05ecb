"""`sluice export github-actions`: a GitHub Actions workflow that runs the pipeline with a cache.

Without a remote the cache is `actions/cache` of the local cache folder. Its keys are immutable,
so every run saves under a new key (run id and attempt) and restores the newest earlier entry by
prefix. With a remote, `sluice run --remote` fetches on a miss and pushes after each stage.
Pull requests only read: `actions/cache/restore` and `--read-only`, never a save or a push.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from sluice.engine.errors import SluiceError
from sluice.engine.export.protocol import ExportInfo, header

PR = "github.event_name == 'pull_request'"
NOT_PR = "github.event_name != 'pull_request'"
WRITES = f"${{{{ !cancelled() && {NOT_PR} }}}}"  # after a failed stage too: what succeeded is worth keeping
ALWAYS = "${{ !cancelled() }}"
RUN_JSON = "sluice-run.json"
# Credentials each URL scheme's fsspec backend reads from the environment, passed from secrets.
CREDENTIALS = {"s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
SIGNING_KEY = "SLUICE_REMOTE_KEY"  # signs run entries pushed to a `require_signed` remote and verifies those pulled


class GitHubActions:
    name = "github-actions"
    default_output = ".github/workflows/sluice.yml"
    search: tuple[str, ...] = (".github/workflows/*.yml", ".github/workflows/*.yaml")

    def render(self, info: ExportInfo) -> str:
        _refuse_expressions(info)
        workflow = {
            "name": "sluice",
            "on": {"push": {"branches": list(info.options.branches)}, "pull_request": None, "workflow_dispatch": None},
            "permissions": {"contents": "read"},
            # One run per ref at a time; a newer push to a pull request cancels the older run, while
            # branch runs finish so their cache is saved.
            "concurrency": {"group": "sluice-${{ github.ref }}", "cancel-in-progress": f"${{{{ {PR} }}}}"},
            "defaults": {"run": {"shell": "bash"}},  # explicit bash: -eo pipefail, so `| tee` keeps the exit code
            "jobs": {
                "pipeline": {
                    "name": f"sluice run {info.pipeline_file}",
                    "runs-on": "ubuntu-latest",
                    "timeout-minutes": 60,
                    "steps": _steps(info),
                }
            },
        }
        # PyYAML quotes `on` (a YAML 1.1 boolean); GitHub, like YAML 1.2, reads it bare as a string.
        return header(info) + _dump(workflow).replace("\n'on':\n", "\non:\n", 1)


def _steps(info: ExportInfo) -> list[dict[str, Any]]:
    setup = {"python-version": info.options.python, "cache": "pip", "cache-dependency-path": _lines(info.dependency_files)}
    steps: list[dict[str, Any]] = [
        {"name": "Check out the repository", "uses": "actions/checkout@v4"},
        {"name": "Set up Python with pip caching", "uses": "actions/setup-python@v5", "with": setup},
        {"name": "Install", "id": "install", "run": info.install},
    ]
    spec = ["-f", info.pipeline_file]
    run = ["sluice", "run", *spec, "--json"]
    tail = f' --markdown-summary "$GITHUB_STEP_SUMMARY" | tee {RUN_JSON}'
    if info.remote is None:
        steps += _local_cache(info, shlex.join(run) + tail, shlex.join(["sluice", "gc", *spec]))
    else:
        steps += _remote(info, run, tail)
    reports = {"name": "sluice-reports", "path": _lines((RUN_JSON, *info.reports)), "if-no-files-found": "warn"}
    steps.append({"name": "Upload the run summary and reports", "if": ALWAYS, "uses": "actions/upload-artifact@v4", "with": reports})
    return steps


def _local_cache(info: ExportInfo, run: str, gc: str) -> list[dict[str, Any]]:
    prefix = f"sluice-{_slug(info.pipeline_file)}-${{{{ runner.os }}}}-"
    key = prefix + "${{ github.run_id }}-${{ github.run_attempt }}"
    return [
        {
            "name": "Restore the Sluice cache (the newest earlier entry)",
            "uses": "actions/cache/restore@v4",
            "with": {"path": info.cache_dir, "key": key, "restore-keys": prefix},
        },
        {"name": "Run the pipeline", "id": "run", "run": run},
        {"name": "Trim the cache to what the lock and recent runs name", "id": "gc", "if": WRITES, "run": gc},
        {
            "name": "Save the Sluice cache (never from pull requests)",
            "if": WRITES,
            "uses": "actions/cache/save@v4",
            "with": {"path": info.cache_dir, "key": key},
        },
    ]


def _remote(info: ExportInfo, run: list[str], tail: str) -> list[dict[str, Any]]:
    assert info.remote is not None
    remote = ["--remote", info.remote.name]
    scheme = info.remote.url.split("://", 1)[0] if "://" in info.remote.url else "file"
    names = (*CREDENTIALS.get(scheme, ()), *((SIGNING_KEY,) if info.remote.require_signed else ()))
    env = {name: f"${{{{ secrets.{name} }}}}" for name in names}
    read_only = {"name": "Run the pipeline, the remote read-only", "id": "run", "run": shlex.join([*run, *remote, "--read-only"]) + tail}
    if info.remote.read_only:  # marked read-only in the config: no event pushes
        return [{**read_only, **({"env": env} if env else {})}]
    writable = {"name": "Run the pipeline, pushing to the remote", "id": "run-push", "run": shlex.join([*run, *remote]) + tail}
    return [{**step, "if": f"${{{{ {cond} }}}}", **({"env": env} if env else {})} for step, cond in ((read_only, PR), (writable, NOT_PR))]


def _lines(items: tuple[str, ...]) -> str:
    return "\n".join(items) + "\n" if len(items) > 1 else items[0]


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", path).strip("-")


def _refuse_expressions(info: ExportInfo) -> None:
    """GitHub evaluates `${{` anywhere in a workflow, so a path holding one would run as an expression."""
    for path in (info.pipeline_file, info.cache_dir, *info.reports):
        if "${{" in path:
            raise SluiceError(f"cannot export a workflow: the path '{path}' contains '${{{{', which GitHub would evaluate")


def _dump(data: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)  # list items indented under their key, as GitHub's docs write them

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    def null(dumper: yaml.SafeDumper, value: None) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:null", "")  # `pull_request:` rather than `pull_request: null`

    Dumper.add_representer(str, text)
    Dumper.add_representer(type(None), null)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)
