"""Pipeline + recorded state → for each stage: run, skip or restore, with the reasons.

`Planner.decide` is the one answer to "why does this stage run?": `status`, `run --dry-run`
and `dag --status` call it over the whole graph, and the executor calls it again for each
stage once its upstream stages have finished, so a stage whose upstream re-ran but produced
identical outputs is skipped (early cut-off).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.engine.cache import RunEntry, Store
from sluice.engine.compile import Pipeline
from sluice.engine.errors import KeyPath, Location, Problem, SpecError
from sluice.engine.fingerprint import Digest, HashCache, hash_data
from sluice.engine.model import SPEC_VERSION, Decision, PlanItem, StageSpec
from sluice.engine.paths import PathEscape
from sluice.engine.remote.sync import RemoteCache
from sluice.engine.state import LockFile


def components(stage: StageSpec, plugin_version: str | None, inputs: Mapping[str, Digest | None]) -> dict[str, Any]:
    """Everything a stage's result depends on; its canonical hash is the fingerprint."""
    return {
        "spec": SPEC_VERSION,
        "cmd": stage.source.get("cmd"),
        "plugin": f"{stage.uses}@{plugin_version}" if stage.uses else None,
        "config": hash_data(stage.source.get("with", {})),
        "env": hash_data(stage.source.get("env", {})),
        "matrix": dict(stage.matrix),
        "params": dict(stage.param_deps),
        "inputs": {n: {"path": stage.inputs[n], "hash": d.value if d else None} for n, d in sorted(inputs.items())},
        "outputs": dict(sorted(stage.outputs.items())),
    }


def input_digests(digests: Mapping[str, Digest | None]) -> dict[str, dict[str, str]]:
    """The planner's digests as `PlanItem.inputs`: per input, each file's BLAKE3 by its path inside it."""
    out: dict[str, dict[str, str]] = {}
    for name, d in digests.items():
        if d is not None:
            out[name] = {rel: value for rel, value, _, _ in d.manifest} if d.kind == "dir" else {"": d.value}
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def explain_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Plain reasons a stage's recorded fingerprint no longer matches."""
    reasons: list[str] = []
    if old.get("spec") != new["spec"]:
        reasons.append(f"spec version changed {old.get('spec')} → {new['spec']}")
    if old.get("cmd") != new["cmd"]:
        reasons.append("command changed")
    if old.get("plugin") != new["plugin"]:
        reasons.append(f"plugin changed {old.get('plugin')} → {new['plugin']}")
    if old.get("config") != new["config"]:
        reasons.append("config (with:) changed")
    if old.get("env") != new["env"]:
        reasons.append("env changed")
    old_p, new_p = old.get("params") or {}, new["params"]
    for key in sorted(set(old_p) | set(new_p)):
        if key not in old_p:
            reasons.append(f"param {key} added")
        elif key not in new_p:
            reasons.append(f"param {key} no longer used")
        elif old_p[key] != new_p[key]:
            reasons.append(f"param {key} changed {_show(old_p[key])} → {_show(new_p[key])}")
    old_i, new_i = old.get("inputs") or {}, new["inputs"]
    for name in sorted(set(old_i) | set(new_i)):
        if name not in old_i:
            reasons.append(f"input {new_i[name]['path']} added")
        elif name not in new_i:
            reasons.append(f"input {old_i[name].get('path')} removed")
        elif old_i[name].get("path") != new_i[name]["path"]:
            reasons.append(f"input {name} now reads {new_i[name]['path']}")
        elif new_i[name]["hash"] is not None and old_i[name].get("hash") != new_i[name]["hash"]:
            reasons.append(f"input {new_i[name]['path']} changed")
    old_o = {k: v.get("path") for k, v in (old.get("outputs") or {}).items()}
    if old_o != new["outputs"]:
        reasons.append("outputs changed")
    return reasons or ["recorded fingerprint differs"]


@dataclass
class Plan:
    items: dict[str, PlanItem] = field(default_factory=dict)
    restore_from: dict[str, RunEntry] = field(default_factory=dict)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stale(self) -> list[PlanItem]:
        return [i for i in self.items.values() if i.decision is not Decision.SKIP]


@dataclass
class Planner:
    pipeline: Pipeline
    versions: Mapping[str, str]  # plugin name → version
    always_run: frozenset[str]  # plugin names with side effects
    lock: LockFile
    hashes: HashCache
    store: Store
    locate: Callable[[KeyPath], Location]
    force: bool = False
    selected: frozenset[str] | None = None  # None: every stage
    remote: RemoteCache | None = None  # asked only on a local miss
    fetch_ahead: bool = False  # a run: start a remote restore's downloads as soon as it is decided

    def __post_init__(self) -> None:
        self._data_ups: dict[str, dict[str, str]] = {sid: {} for sid in self.pipeline.stages}
        for e in self.pipeline.edges:
            if e.artifact:
                self._data_ups[e.downstream][e.artifact] = e.upstream

    def plan(self) -> Plan:
        """Decide every stage in topological order, simulating what earlier decisions will do."""
        plan = Plan()
        running: set[str] = set()
        restored: dict[str, Digest] = {}
        missing: list[Problem] = []
        with self.hashes.steady():  # nothing runs while planning: each folder is checked once
            self._ask_remote_ahead()
            for sid in self.pipeline.stages:
                item, entry, comps = self.decide(sid, running, restored, missing)
                plan.items[sid] = item
                if comps is not None:
                    plan.components[sid] = comps
                if item.decision is Decision.RUN:
                    running.add(sid)
                elif entry is not None:
                    plan.restore_from[sid] = entry
                    restored.update(entry.outputs.values())
                    if self.remote is not None and self.fetch_ahead and item.decision is Decision.RESTORE:
                        self.remote.prefetch((entry,))
        if missing:
            raise SpecError(missing)
        return plan

    def _ask_remote_ahead(self) -> None:
        """Start the remote lookups that planning will need, all at once.

        Deciding is sequential (a stage's fingerprint needs its inputs' digests), but a stage the
        lock records, whose outputs are not in the workspace and whose entry the local store lacks
        (a fresh clone), will be looked up under its recorded fingerprint unless an input changed:
        asking ahead turns a round trip per stage into one wait. A wrong guess costs one request.
        """
        if self.remote is None or self.force:
            return
        asks = []
        for sid, stage in self.pipeline.stages.items():
            recorded = self.lock.stages.get(sid)
            fp = recorded.get("fingerprint") if recorded else None
            if recorded is None or not isinstance(fp, str) or not stage.cache or stage.uses in self.always_run:
                continue
            if (self.selected is None or sid in self.selected) and self._damaged_outputs(stage, recorded) and not self.store.lookup(fp):
                asks.append((fp, stage.outputs, RunEntry.id_from_lock(recorded.get("outputs"))))
        if asks:  # the lock's entries in one GET, where a push left them (remote/pack.py)
            self.remote.expect_pack(self.lock_section())
        for fp, outputs, entry_id in asks:
            self.remote.lookup_soon(fp, outputs, entry_id)

    def lock_section(self) -> dict[str, Any]:
        """What the lock records for this pipeline's stages."""
        return {sid: rec for sid, rec in self.lock.stages.items() if sid in self.pipeline.stages}

    def decide(
        self,
        sid: str,
        running: Iterable[str] = (),
        restored: Mapping[str, Digest] | None = None,
        missing: list[Problem] | None = None,
    ) -> tuple[PlanItem, RunEntry | None, dict[str, Any] | None]:
        stage = self.pipeline.stages[sid]
        if self.selected is not None and sid not in self.selected:
            return PlanItem(sid, Decision.SKIP, ("not selected",)), None, None
        running = running if isinstance(running, (set, frozenset)) else set(running)
        restored = restored or {}
        waiting = sorted({up for art, up in self._data_ups[sid].items() if up in running})
        digests: dict[str, Digest | None] = {}
        for name, path in stage.inputs.items():
            up = self._data_ups[sid].get(path)
            if up in running:
                digests[name] = None
            elif path in restored:
                digests[name] = restored[path]
            else:
                at: KeyPath = ("stages", stage.base, "inputs", name)
                why = ""
                try:
                    d = self.hashes.digest(path)
                except PathEscape as exc:
                    d, why = None, exc.describe("input")
                if d is None and not up and not why:
                    why = f"input '{path}' does not exist"
                if why:
                    problem = Problem(self.locate(at), why, at)
                    if missing is None:
                        raise SpecError([problem])
                    missing.append(problem)
                digests[name] = d
        version = self.versions.get(stage.uses or "")
        comps = components(stage, version, digests)
        recorded = self.lock.stages.get(sid)
        changes = explain_change(recorded, comps) if recorded else ["never run"]
        if waiting:
            own = [r for r in changes if r != "recorded fingerprint differs"]
            reasons = own + [f"upstream {up} will re-run" for up in waiting]
            return PlanItem(sid, Decision.RUN, tuple(reasons)), None, None
        fp = hash_data(comps)
        hashed = input_digests(digests)
        if not stage.cache or (stage.uses in self.always_run):
            why = "cache: false, always runs" if not stage.cache else f"{stage.uses} has side effects, always runs"
            return PlanItem(sid, Decision.RUN, (why,), fp, hashed), None, comps
        if self.force:
            return PlanItem(sid, Decision.RUN, ("forced (--force)",), fp, hashed), None, comps
        if recorded and recorded.get("fingerprint") == fp:
            bad = self._damaged_outputs(stage, recorded)
            if not bad:
                return PlanItem(sid, Decision.SKIP, ("up to date",), fp), None, comps
            changes = bad
        entry = self.store.lookup(fp)
        if entry is None and self.remote is not None:
            named = RunEntry.id_from_lock(recorded.get("outputs")) if recorded and recorded.get("fingerprint") == fp else None
            entry = self.remote.lookup(fp, stage.outputs, named)
        if entry is None:
            return PlanItem(sid, Decision.RUN, tuple(changes), fp, hashed), None, comps
        if self._outputs_match(entry):
            return PlanItem(sid, Decision.SKIP, (*changes, "outputs already match the cache"), fp), entry, comps
        return PlanItem(sid, Decision.RESTORE, (*changes, "outputs found in cache"), fp, hashed), entry, comps

    def _damaged_outputs(self, stage: StageSpec, recorded: Mapping[str, Any]) -> list[str]:
        outs = recorded.get("outputs") or {}
        return self._differences({path: (outs.get(name) or {}).get("hash") for name, path in stage.outputs.items()})

    def _outputs_match(self, entry: RunEntry) -> bool:
        return not self._differences({path: digest.value for path, digest in entry.outputs.values()})

    def _differences(self, expected: Mapping[str, str | None]) -> list[str]:
        """How the workspace differs from the expected output hashes (path → hash)."""
        bad = []
        for path, want in expected.items():
            try:
                d = self.hashes.digest(path)
            except PathEscape as exc:  # running the stage refuses it, with this message
                bad.append(exc.describe("output"))
                continue
            if d is None:
                bad.append(f"output {path} is missing")
            elif d.value != want:
                bad.append(f"output {path} changed on disk")
        return bad


def lock_entry(fp: str, comps: Mapping[str, Any], outputs: Mapping[str, tuple[str, Digest]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"fingerprint": fp}
    entry.update({k: v for k, v in comps.items() if k != "outputs" and v is not None})
    entry["outputs"] = {name: {"path": path, "hash": d.value, "kind": d.kind, "size": d.size} for name, (path, d) in outputs.items()}
    return entry
