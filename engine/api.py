"""validate(), status(), run(), dag(), rollback(): each composes the phases in order."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.engine.compile import Pipeline, compile_spec
from sluice.engine.errors import KeyPath, Location, Problem, SluiceError, SpecError, did_you_mean
from sluice.engine.load import Document, load_file
from sluice.engine.model import Decision, PlanItem, RunSummary, Spec, StageSpec
from sluice.engine.plugin import Plugin, StageContext
from sluice.engine.registry import Registry
from sluice.engine.resolve import apply_overrides, resolve
from sluice.engine.shell import raw_notes
from sluice.engine.state import Layout, workspace_lock
from sluice.engine.validate import broken_stages, config_problems, located, validate_document

# The run side (scheduler, store, hashing) is imported where it is used: `sluice validate`,
# the pre-commit hook, must start fast.
if TYPE_CHECKING:
    from sluice.engine.execute import Reporter
    from sluice.engine.export.catalog import Invocation
    from sluice.engine.export.protocol import Options
    from sluice.engine.maintenance import GcReport, VerifyReport
    from sluice.engine.plan import Plan, Planner
    from sluice.engine.remote.config import RemoteConfig, Remotes
    from sluice.engine.remote.sync import RemoteCache
    from sluice.engine.revisions import Choice
    from sluice.engine.state import LockFile

DEFAULT_FILE = Path("pipeline.yaml")


@dataclass(frozen=True)
class Loaded:
    doc: Document
    pipeline: Pipeline
    registry: Registry
    layout: Layout


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load(
    file: Path = DEFAULT_FILE,
    sets: Sequence[str] = (),
    params_file: Path | None = None,
    cache_dir: Path | None = None,
    registry: Registry | None = None,
    notes: list[Problem] | None = None,
) -> Loaded:
    """load → validate → resolve → compile; raises SpecError with every problem found.

    `notes`, if given, collects remarks that are not problems (each `${raw:…}` in a cmd).
    """
    from sluice.engine.limits import Limits

    limits = Limits.from_env()
    doc = load_file(file, display_path(file), limits)
    if notes is not None:
        notes.extend(raw_notes(doc))
    registry = registry or Registry.discover()
    if not isinstance(doc.data, dict):
        raise SpecError([Problem(doc.location(()), f"expected a mapping with 'version' and 'stages', got {type(doc.data).__name__}")])
    problems = validate_document(doc, registry)
    # Stages with schema problems are left out of resolve and compile, which check the others.
    skip = broken_stages(problems)
    if skip is None:
        raise SpecError(problems)
    # The folder the user named, not a symlinked spec's target: the lock and outputs belong here.
    named = Path(os.path.abspath(file))
    workspace = named.parent
    try:
        params = apply_overrides(doc, doc.data.get("params") or {}, params_file, sets, limits)
        spec = resolve(doc, params, workspace, named, skip, limits)
        problems += config_problems(doc, registry, spec.stages)
        pipeline = compile_spec(spec, doc.location)
    except SpecError as exc:
        raise SpecError(problems + list(exc.problems)) from None
    if problems:
        raise SpecError(problems)
    if notes is not None:
        notes.extend(_advice(doc, registry, spec))
    return Loaded(doc, pipeline, registry, Layout.for_workspace(workspace, cache_dir))


def _advice(doc: Document, registry: Registry, spec: Spec) -> list[Problem]:
    """Each plugin's `advice()`, once per stage as written (not per matrix instance)."""
    found: dict[tuple[str, tuple[Any, ...]], Problem] = {}
    for stage in spec.stages:
        if stage.uses:
            prefix: KeyPath = ("stages", stage.base, "with")
            for cp in registry.instance(stage.uses).advice(stage.config):
                note = located(doc, prefix, cp)
                found.setdefault((note.message, note.path), note)
    return list(found.values())


def validate(files: Sequence[Path], registry: Registry | None = None, notes: list[Problem] | None = None) -> list[Problem]:
    """Everything that can be checked without running anything, for each file; `notes` as in load()."""
    registry = registry or Registry.discover()
    problems: list[Problem] = []
    for file in files:
        try:
            load(file, registry=registry, notes=notes)
        except SpecError as exc:
            problems.extend(exc.problems)
    return problems


def _targets(loaded: Loaded, targets: Sequence[str]) -> frozenset[str] | None:
    if not targets:
        return None
    stages = loaded.pipeline.stages
    by_base: dict[str, list[str]] = {}
    for sid, st in stages.items():
        by_base.setdefault(st.base, []).append(sid)
    chosen: list[str] = []
    problems = []
    for t in targets:
        if t in stages:
            chosen.append(t)
        elif t in by_base:
            chosen.extend(by_base[t])
        else:
            problems.append(Problem(Location("command line"), f"no stage named '{t}'", hint=did_you_mean(t, by_base)))
    if problems:
        raise SpecError(problems)
    return frozenset(loaded.pipeline.closure_up(chosen))


def planner(
    loaded: Loaded, targets: Sequence[str] = (), force: bool = False, rehash: bool = False, remote: RemoteCache | None = None
) -> Planner:
    from sluice.engine.cache import Store
    from sluice.engine.fingerprint import HashCache
    from sluice.engine.plan import Planner

    used = {st.uses for st in loaded.pipeline.stages.values() if st.uses}
    plugins = {name: loaded.registry.load(name) for name in used}
    return Planner(
        pipeline=loaded.pipeline,
        versions={name: cls.version for name, cls in plugins.items()},
        always_run=frozenset(name for name, cls in plugins.items() if cls.always_run),
        lock=_read_lock(loaded),
        # --force re-reads what it runs on: the lock must record the bytes the stage saw, not a stat match.
        hashes=HashCache(loaded.layout.hash_db, loaded.layout.workspace, rehash=rehash or force),
        store=Store.at(loaded.layout.cache_dir),
        locate=loaded.doc.location,
        force=force,
        selected=_targets(loaded, targets),
        remote=remote,
    )


def status(loaded: Loaded, targets: Sequence[str] = (), force: bool = False, rehash: bool = False) -> list[PlanItem]:
    """What each stage would do and why: `status`, `run --dry-run` and `dag --status` alike."""
    p = planner(loaded, targets, force, rehash)
    plan = p.plan()  # nothing saved: status and --dry-run only read (a read-only or full workspace too)
    return list(plan.items.values())


def preflight(loaded: Loaded, plan: Plan) -> None:
    """Plugin checks that need heavy imports, for the stages about to run, before any of them starts."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for sid, item in plan.items.items():
        stage = loaded.pipeline.stages[sid]
        if item.decision is Decision.RUN:
            problems += _missing_secrets(loaded, stage)
        if item.decision is not Decision.RUN or not stage.uses or stage.base in seen:
            continue
        seen.add(stage.base)
        plugin = loaded.registry.instance(stage.uses)
        problems += [located(loaded.doc, ("stages", stage.base, "with"), cp) for cp in plugin.preflight(stage.config)]
    if problems:
        raise SpecError(problems)


def _missing_secrets(loaded: Loaded, stage: StageSpec) -> list[Problem]:
    """A secret that cannot be read now would fail its stage later: say so before anything starts."""
    from sluice.engine.secret import SecretMissing, read_secret

    problems = []
    for ref in stage.secrets:
        try:
            read_secret(stage.id, ref, loaded.pipeline.spec.workspace)
        except SecretMissing as exc:
            at: KeyPath = ("stages", stage.base, "secrets", ref.name)
            problems.append(Problem(loaded.doc.location(at), str(exc), at))
    return problems


def run(
    loaded: Loaded,
    reporter: Reporter,
    targets: Sequence[str] = (),
    jobs: int | None = None,
    force: bool = False,
    rehash: bool = False,
    remote: str | None = None,
    read_only: bool = False,
) -> RunSummary:
    """`remote`: a configured remote's name, looked up on a local miss and pushed to after each stage runs."""
    import sqlite3

    from sluice.engine.execute import Executor, install_stop_handlers, stop_leftovers
    from sluice.engine.state import new_run_id, write_run_record

    layout = loaded.layout
    run_id = new_run_id()
    config = remote_config(layout, remote) if remote is not None else None  # a bad remotes file: refused before anything runs
    with workspace_lock(layout, run_id):
        stop_leftovers(layout, run_id, reporter)  # a dead run's stage must not run beside its next copy
        sweep_leftovers(layout, run_id)
        p = planner(loaded, targets, force, rehash)
        if config is not None:
            from sluice.engine.remote.sync import open_cache

            p.remote = open_cache(config, p.store, read_only)  # the planner's store: pushes wait on its pending writes
            p.fetch_ahead = True  # each restore's downloads start once it is decided, in parallel, not one stage at a time
        cache = p.remote
        try:
            plan = p.plan()
            preflight(loaded, plan)
        except BaseException:
            if cache is not None:  # refused before anything ran: downloads not yet started never start
                cache.close(cancel=True)
            raise
        executor = Executor(
            pipeline=loaded.pipeline,
            planner=p,
            layout=layout,
            store=p.store,
            hashes=p.hashes,
            reporter=reporter,
            run_id=run_id,
            plan=plan,
            jobs=jobs or os.cpu_count() or 1,
            lock_stages={k: v for k, v in p.lock.stages.items() if k in loaded.pipeline.stages},
            keep_on_failure=kept_reports(loaded),
            remote=cache,
        )
        restore_handlers = install_stop_handlers(executor.stop)
        try:
            summary = executor.run()
        finally:
            restore_handlers()
            if cache is not None:
                pushed = cache.finish()  # pushes still in flight: their warnings, if any, before the summary
            try:
                # Whatever happened, record what did succeed: a rerun resumes from here.
                # Only this pipeline file's section is replaced: its neighbours' entries stay.
                recorded = p.lock.with_stages(executor.lock_stages)
                if recorded != p.lock or not layout.lock_file.exists():
                    recorded.write(layout.lock_file, layout.lock_shadow)
                else:
                    p.lock.keep_parse(layout.lock_shadow)
                with contextlib.suppress(OSError, sqlite3.Error):  # only a cache of digests (a full disk, say): the next run hashes again
                    p.hashes.save()
                if cache is not None:  # after the lock is recorded: the pack is named by it, and only saves requests
                    cache.write_pack(executor.lock_stages, _cached(loaded))
            finally:
                if cache is not None:
                    cache.close()
        if cache is not None:
            summary = replace(summary, remote=cache.tally(pushed))
        write_run_record(layout, summary, display_path(loaded.pipeline.spec.file))
    return summary


def _cached(loaded: Loaded) -> frozenset[str]:
    """The stages whose results are filed in the cache (`cache: true`): the ones a lock's pack holds."""
    return frozenset(sid for sid, st in loaded.pipeline.stages.items() if st.cache)


def kept_reports(loaded: Loaded) -> dict[str, frozenset[str]]:
    """Each plugin stage's report outputs (by output name): kept when it fails, uploaded by CI exports."""
    return {sid: loaded.registry.load(st.uses).kept_on_failure(st.outputs) for sid, st in loaded.pipeline.stages.items() if st.uses}


def _rollback_target(loaded: Loaded, stage_id: str) -> tuple[Plugin, StageContext]:
    """The plugin and a context at the final output paths, for commands that act on a past run."""
    stages = loaded.pipeline.stages
    matches = [sid for sid, st in stages.items() if sid == stage_id or st.base == stage_id]
    if len(matches) != 1:
        hint = did_you_mean(stage_id, list(stages))
        what = "is a matrix; name one instance" if matches else "does not exist"
        raise SpecError([Problem(Location("command line"), f"stage '{stage_id}' {what}", hint=hint)])
    stage = stages[matches[0]]
    if not stage.uses:
        raise SluiceError(f"stage '{stage.id}' is a cmd stage; only plugin stages can be rolled back")
    from sluice.engine.secret import gather
    from sluice.engine.stage_runner import stage_context

    log = logging.getLogger(f"sluice.stage.{stage.id}")
    secrets = gather(stage, loaded.pipeline.spec.workspace)
    ctx = stage_context(stage, loaded.pipeline.spec, stage.outputs, loaded.layout.state_dir(stage.id), log, secrets)
    return loaded.registry.instance(stage.uses), ctx


def rollback(loaded: Loaded, stage_id: str) -> str:
    from sluice.engine.secret import Masker

    plugin, ctx = _rollback_target(loaded, stage_id)
    with workspace_lock(loaded.layout):
        return Masker(ctx.secrets.values()).text(plugin.rollback(ctx))


def sweep_leftovers(layout: Layout, run_id: str) -> None:
    """Remove what killed runs left (staging folders, temp files); the workspace lock must be held."""
    from sluice.engine.maintenance import sweep_leftovers as sweep

    sweep(layout, run_id)


def _maintenance_layout(file: Path, cache_dir: Path | None) -> Layout:
    """The workspace `-f` names, as `run` would use it; the spec itself need not be valid."""
    if not file.is_file():
        raise SpecError([Problem(Location(display_path(file)), "file not found")])
    return Layout.for_workspace(Path(os.path.abspath(file)).parent, cache_dir)


def cache_verify(file: Path = DEFAULT_FILE, cache_dir: Path | None = None, delete: bool = False, remote: str | None = None) -> VerifyReport:
    """`sluice cache verify`: re-hash every object, check every run entry, retire the bad ones (of `remote`, if named)."""
    from sluice.engine.cache import Store
    from sluice.engine.maintenance import verify

    if remote is not None:
        from sluice.engine.remote.upkeep import verify as verify_remote

        cache = open_remote(_maintenance_layout(file, cache_dir), remote)
        try:
            return verify_remote(cache, delete)
        finally:
            cache.close()

    return verify(Store.at(_maintenance_layout(file, cache_dir).cache_dir), delete)


def gc(
    file: Path = DEFAULT_FILE,
    cache_dir: Path | None = None,
    keep_days: float = 7,
    dry_run: bool = False,
    remote: str | None = None,
    revisions: Choice | None = None,
    now: float | None = None,
) -> GcReport:
    """`sluice gc`: drop what no lock (the workspace's, or a chosen git revision's) and no recent run entry names.

    See engine.maintenance and engine.remote.upkeep; every lock is read before anything is listed.
    """
    from sluice.engine.cache import Store
    from sluice.engine.limits import Limits
    from sluice.engine.maintenance import gc as collect
    from sluice.engine.maintenance import keep_set
    from sluice.engine.revisions import Choice, revision_locks

    layout = _maintenance_layout(file, cache_dir)
    limits = Limits.from_env()
    others = revision_locks(layout.workspace, revisions or Choice(), limits)
    if remote is not None:
        from sluice.engine.remote.upkeep import gc as collect_remote

        keep = keep_set(layout, others, limits)
        cache = open_remote(layout, remote)
        try:
            return collect_remote(keep, cache, keep_days, dry_run, now)
        finally:
            cache.close()
    if dry_run:  # read-only: no workspace lock file written
        return collect(keep_set(layout, others, limits), Store.at(layout.cache_dir), keep_days, True, now)
    with workspace_lock(layout):  # a run here could be about to name what gc would take
        return collect(keep_set(layout, others, limits), Store.at(layout.cache_dir), keep_days, False, now)


@dataclass(frozen=True)
class Exported:
    path: Path
    command: str  # what regenerates it, run at the repository root
    current: bool  # the file on disk already holds exactly this document


def _render(target: str, file: Path, output: Path | None, options: Options, root: Path | None = None) -> tuple[Path, str, str]:
    """(where the document goes, its text, the command that regenerates it)."""
    from sluice.engine.export.catalog import exporter
    from sluice.engine.export.info import gather, repo_root

    exp = exporter(target)
    loaded = load(file)
    root = root or repo_root(loaded.pipeline.spec.workspace)
    path = output if output is not None else root / exp.default_output
    kept = kept_reports(loaded)
    reports = [loaded.pipeline.stages[sid].outputs[name] for sid, names in kept.items() for name in names]
    info = gather(target, loaded.pipeline, reports, path, options, root)
    return path, exp.render(info), info.command


def export(target: str, file: Path = DEFAULT_FILE, output: Path | None = None, options: Options | None = None) -> Exported:
    """`sluice export TARGET`: write the document (untouched when it is already current)."""
    from sluice.engine.export.catalog import write
    from sluice.engine.export.protocol import Options

    path, text, command = _render(target, file, output, options or Options())
    return Exported(path, command, current=not write(path, text))


def export_check(
    target: str | None, file: Path = DEFAULT_FILE, output: Path | None = None, options: Options | None = None
) -> list[Exported]:
    """`sluice export --check`: each generated file compared with what its command renders now.

    With a target, the one file that command writes; without, every file under the repository
    root (found from the current folder) whose header names the command that made it.
    """
    from sluice.engine.export.catalog import generated_files, is_current
    from sluice.engine.export.info import repo_root
    from sluice.engine.export.protocol import Options

    if target is not None:
        path, text, command = _render(target, file, output, options or Options())
        return [Exported(path, command, is_current(path, text))]
    root = repo_root(Path.cwd())
    found: list[tuple[Path, Invocation]] = list(generated_files(root))
    checked = []
    for path, inv in found:
        # The header's paths are relative to the root; the file it names is the file it writes.
        _, text, command = _render(inv.target, root / inv.file, path, inv.options, root)
        checked.append(Exported(path, command, is_current(path, text)))
    return checked


# ---- remotes (docs/remote.md)


def remotes_file(file: Path = DEFAULT_FILE) -> Path:
    """`sluice.remotes.yaml` beside the pipeline file."""
    from sluice.engine.remote.config import FILE_NAME

    return Path(os.path.abspath(file)).parent / FILE_NAME


def read_remotes(file: Path = DEFAULT_FILE) -> Remotes:
    from sluice.engine.limits import Limits
    from sluice.engine.remote.config import Remotes

    path = remotes_file(file)
    return Remotes.read(path, Limits.from_env(), display_path(path))


def remote_add(
    name: str, url: str, file: Path = DEFAULT_FILE, read_only: bool = False, endpoint_url: str | None = None, default: bool = False
) -> Remotes:
    from sluice.engine.remote.config import RemoteConfig, check_new
    from sluice.engine.state import atomic_write

    check_new(name, url, endpoint_url)
    current = read_remotes(file)
    updated = current.added(RemoteConfig(name, url, endpoint_url, read_only), default or not current.remotes)
    atomic_write(current.file, updated.render())
    return updated


def remote_remove(name: str, file: Path = DEFAULT_FILE) -> Remotes:
    from sluice.engine.state import atomic_write

    current = read_remotes(file)
    updated = current.removed(name)
    atomic_write(current.file, updated.render())
    return updated


def remote_config(layout: Layout, name: str | None) -> RemoteConfig:
    from sluice.engine.limits import Limits
    from sluice.engine.remote.config import FILE_NAME, Remotes

    path = layout.workspace / FILE_NAME
    return Remotes.read(path, Limits.from_env(), display_path(path)).pick(name or None)


def open_remote(layout: Layout, name: str | None, read_only: bool = False) -> RemoteCache:
    """The named (or default) remote of the workspace, beside its local store; nothing contacted yet."""
    from sluice.engine.cache import Store
    from sluice.engine.remote.sync import open_cache

    return open_cache(remote_config(layout, name), Store.at(layout.cache_dir), read_only)


def _read_lock(loaded: Loaded) -> LockFile:
    """This pipeline file's section of the workspace's lock."""
    from sluice.engine.limits import Limits
    from sluice.engine.state import LockFile

    layout = loaded.layout
    return LockFile.read(
        layout.lock_file, layout.lock_shadow, Limits.from_env(), layout.section(loaded.pipeline.spec.file), loaded.pipeline.stages
    )


def _lock_section(loaded: Loaded, targets: Sequence[str]) -> dict[str, Any]:
    lock = _read_lock(loaded)
    chosen = _targets(loaded, targets)
    return {sid: e for sid, e in lock.stages.items() if sid in loaded.pipeline.stages and (chosen is None or sid in chosen)}


@dataclass(frozen=True)
class Transfer:
    """What `sluice push` or `sluice pull` did: counts, and one line per stage it could not move."""

    remote: str
    entries: int
    objects: int
    bytes: int
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "entries": self.entries,
            "objects": self.objects,
            "bytes": self.bytes,
            "problems": list(self.problems),
        }


def push(loaded: Loaded, targets: Sequence[str] = (), remote: str | None = None, run_cache: bool = False) -> Transfer:
    """Objects, then run entries, for the lock's stages (with `run_cache`: every local entry)."""
    from sluice.engine.cache import UNREADABLE, RunEntry

    cache = open_remote(loaded.layout, remote)
    if not cache.writable:
        raise SluiceError(f"the remote '{cache.config.name}' is read-only: nothing is pushed to it")
    problems: list[str] = []
    entries: list[RunEntry] = []
    if run_cache:
        for path in cache.local.entry_paths():
            try:
                entries.append(RunEntry.load(path))
            except UNREADABLE:
                problems.append(f"{path}: not a readable run entry (run `sluice cache verify`)")
    else:
        for sid, rec in _lock_section(loaded, targets).items():
            want = {name: o.get("hash") for name, o in (rec.get("outputs") or {}).items()}
            found = next(
                (e for e in cache.local.candidates(rec["fingerprint"]) if {n: d.value for n, (_, d) in e.outputs.items()} == want), None
            )
            if found is None:
                problems.append(f"{sid}: its outputs are not in the local cache (run it, then push)")
            else:
                entries.append(found)
    for entry in entries:
        cache.push_later(entry)
    try:
        report = cache.finish()
        if not run_cache:
            cache.write_pack(_lock_section(loaded, ()), _cached(loaded))
    finally:
        cache.close()
    if cache.down:
        problems.append(cache.down)
    return Transfer(cache.config.name, report.entries, report.objects, report.bytes, tuple(problems + report.skipped))


def pull(loaded: Loaded, targets: Sequence[str] = (), remote: str | None = None, run_cache: bool = False) -> Transfer:
    """Run entries and their objects, verified, into the local cache; `sluice run` then restores them."""
    from sluice.engine.cache import RunEntry

    cache = open_remote(loaded.layout, remote, read_only=True)
    problems: list[str] = []
    wanted = []
    done = 0
    try:
        if run_cache:
            wanted = [(e.stage, e) for e in cache.remote_entries()]
        else:
            todo = {sid: rec for sid, rec in _lock_section(loaded, targets).items() if cache.local.lookup(rec["fingerprint"]) is None}
            if todo:
                cache.expect_pack(_lock_section(loaded, ()))
            for sid, rec in todo.items():
                entry = cache.lookup(rec["fingerprint"], loaded.pipeline.stages[sid].outputs, RunEntry.id_from_lock(rec.get("outputs")))
                if entry is None:
                    problems.append(f"{sid}: no usable entry on the remote")
                else:
                    wanted.append((sid, entry))
        cache.prefetch(e for _, e in wanted)
        for sid, entry in wanted:
            why = cache.fetch(entry)
            if why:
                problems.append(f"{sid}: {why}")
            else:
                done += 1
    except SluiceError as exc:  # a RemoteError from listing the remote
        problems.append(str(exc))
    finally:
        cache.close()
    if cache.down and cache.down not in problems:
        problems.append(cache.down)
    return Transfer(cache.config.name, done, cache.fetched_objects, cache.fetched_bytes, tuple(problems))
