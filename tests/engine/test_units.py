"""Unit tests for the tricky parts: interpolation, DAG shapes, hashing fast path, the store."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.engine.cache import RunEntry, Store
from sluice.engine.compile import compile_spec, normalize
from sluice.engine.errors import SpecError
from sluice.engine.fingerprint import RACY_NS, Digest, HashCache, canonical, hash_data
from sluice.engine.interpolate import interpolate
from sluice.engine.load import load_text
from sluice.engine.plan import lock_entry
from sluice.engine.resolve import resolve
from sluice.engine.state import LockFile, section_digest
from tests.support.imports import imported_modules

names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
scalars = st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.text(max_size=12))


@given(value=st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(names, scalars, max_size=3)))
def test_whole_reference_keeps_its_type(value: object) -> None:
    assert interpolate("${params.x}", lambda expr: value) == value


@given(prefix=st.text(alphabet="abc ${}", max_size=10).filter(lambda s: "${" not in s and not s.endswith("$")), n=st.integers(0, 999))
def test_embedded_reference_is_rendered(prefix: str, n: int) -> None:
    assert interpolate(f"{prefix}${{params.n}}!", lambda expr: n) == f"{prefix}{n}!"


@given(text=st.text(alphabet="ab{}. x", max_size=20))
def test_escaped_reference_is_literal_and_never_looked_up(text: str) -> None:
    def lookup(expr: str) -> object:
        raise AssertionError(f"looked up {expr}")

    assert interpolate(f"$${{{text}}}", lookup) == f"${{{text}}}"


def test_escape_and_spelling() -> None:
    assert interpolate("echo $${HOME} ${params.b}", lambda e: True) == "echo ${HOME} true"
    assert interpolate("${a} and ${b}", lambda e: [1, 2] if e == "a" else None) == "1 2 and "


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    n = draw(st.integers(1, 25))
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))
    return n, sorted({(a, b) for a, b in edges if a < b})  # a < b: acyclic by construction


def _spec_text(n: int, edges: list[tuple[int, int]], via_reference: bool) -> str:
    lines = ["version: 1", "stages:"]
    ups: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        ups[b].append(a)
    for i in range(n):
        lines.append(f"  s{i}:")
        lines.append("    cmd: 'true'")
        lines.append(f"    outputs: {{o: out/s{i}.txt}}")
        if ups[i] and via_reference:
            lines.append("    inputs: {" + ", ".join(f"i{a}: '${{stages.s{a}.outputs.o}}'" for a in ups[i]) + "}")
        elif ups[i]:
            lines.append(f"    needs: [{', '.join(f's{a}' for a in ups[i])}]")
    return "\n".join(lines) + "\n"


def _compile(text: str, tmp: Path = Path("/tmp/ws")):
    doc = load_text(text, "p.yaml")
    return compile_spec(resolve(doc, doc.data.get("params") or {}, tmp, tmp / "p.yaml"), doc.location)


@settings(max_examples=60, deadline=None)
@given(dag=dags(), via_reference=st.booleans())
def test_compiled_order_respects_every_edge(dag: tuple[int, list[tuple[int, int]]], via_reference: bool) -> None:
    n, edges = dag
    pipeline = _compile(_spec_text(n, edges, via_reference))
    order = {sid: i for i, sid in enumerate(pipeline.stages)}
    assert len(order) == n
    for a, b in edges:
        assert order[f"s{a}"] < order[f"s{b}"]
    assert {(e.upstream, e.downstream) for e in pipeline.edges} == {(f"s{a}", f"s{b}") for a, b in edges}
    assert pipeline.graph.number_of_edges() == len(edges)


@settings(max_examples=30, deadline=None)
@given(dag=dags())
def test_any_back_edge_is_reported_as_a_cycle(dag: tuple[int, list[tuple[int, int]]]) -> None:
    n, edges = dag
    if not edges:
        return
    a, b = edges[0]
    text = _spec_text(n, edges, via_reference=False).replace(f"  s{a}:\n", f"  s{a}:\n    needs: [s{b}]\n", 1)
    if f"  s{a}:\n    needs: [s{b}]\n    cmd: 'true'\n    outputs: {{o: out/s{a}.txt}}\n    needs:" in text:
        return  # s{a} already had needs; a duplicate key would be reported instead
    with pytest.raises(SpecError) as info:
        _compile(text)
    assert "dependency cycle" in str(info.value)


def test_ten_thousand_stage_chain_compiles_without_recursion() -> None:
    n = 10_000
    lines = ["version: 1", "stages:"]
    for i in range(n):
        lines += [f"  s{i}:", "    cmd: 'true'", f"    outputs: {{o: o/{i}}}"]
        if i:
            lines.append(f"    inputs: {{i: '${{stages.s{i - 1}.outputs.o}}'}}")
    pipeline = _compile("\n".join(lines) + "\n")
    assert len(pipeline.closure_up(["s9999"])) == n
    assert list(pipeline.stages)[-1] == "s9999"


@pytest.mark.parametrize(
    "path,expected", [("a/./b/../c", "a/c"), ("../x", None), ("/etc/x", None), (".", None), ("a/../../b", None), ("~/x", None)]
)
def test_normalize(path: str, expected: str | None) -> None:
    assert normalize(path) == expected


def test_canonical_ignores_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"y": 2, "x": 1}]}) == canonical({"a": [1, {"x": 1, "y": 2}], "b": 1})
    assert hash_data({"a": 1}) != hash_data({"a": 1.5})


def test_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(4096))
    old = time.time() - 10
    os.utime(f, (old, old))
    real = time.time_ns  # recorded 10 s after the file's ctime (which utime set to now): outside the racy window
    monkeypatch.setattr(time, "time_ns", lambda: real() + 10**10)
    cache = HashCache(tmp_path / "h.db", tmp_path)
    first = cache.file("data.bin")
    assert cache.reads == 1
    cache.save()
    again = HashCache(tmp_path / "h.db", tmp_path)
    assert again.file("data.bin") == first and again.reads == 0
    f.write_bytes(os.urandom(4096))  # same size, new content and mtime
    assert again.file("data.bin") != first and again.reads == 1


def test_racy_entry_is_rechecked(tmp_path: Path) -> None:
    f = tmp_path / "fresh.txt"
    f.write_text("one")
    cache = HashCache(tmp_path / "h.db", tmp_path)
    d1 = cache.file("fresh.txt")
    st = os.stat(f)
    f.write_text("two")  # same size; force the same mtime, as a coarse clock would
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert RACY_NS > 0 and cache.file("fresh.txt") != d1


def test_directory_digest_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "d/sub").mkdir(parents=True)
    (tmp_path / "d/a.txt").write_text("a")
    (tmp_path / "d/sub/b.txt").write_text("b")
    cache = HashCache(tmp_path / "h.db", tmp_path)
    d1 = cache.digest("d")
    assert d1 is not None and d1.kind == "dir" and [m[0] for m in d1.manifest] == ["a.txt", "sub/b.txt"]
    (tmp_path / "d/sub/b.txt").rename(tmp_path / "d/sub/c.txt")
    assert cache.digest("d").value != d1.value
    assert cache.digest("missing") is None


def test_store_roundtrip_and_corruption(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "out").mkdir(parents=True)
    (ws / "out/x.txt").write_text("x" * 100)
    (ws / "out/y.txt").write_text("y")
    cache = HashCache(tmp_path / "h.db", ws)
    digest = cache.digest("out")
    store = Store(tmp_path / "store")
    store.put(ws / "out", digest)
    entry = RunEntry("f" * 64, "s", {"o": ("out", digest)}, time.time())
    store.save_run(entry)
    assert store.lookup("f" * 64) == entry
    assert store.restore(digest, tmp_path / "back")
    assert (tmp_path / "back/x.txt").read_text() == "x" * 100
    victim = next(p for p in (tmp_path / "store/objects").rglob("*") if p.is_file())
    os.chmod(victim, 0o644)
    victim.write_text("evil")
    assert not store.restore(digest, tmp_path / "again")
    assert not victim.exists()  # a corrupt object is dropped, never offered again
    assert store.lookup("f" * 64) is None


_DIGEST = st.builds(Digest, st.sampled_from(["file", "dir"]), st.text(min_size=1), st.integers(min_value=0))
_RECORD = st.builds(
    lambda fp, outs: lock_entry(fp, {"spec": 1, "cmd": "true", "params": {}, "matrix": {}, "inputs": {}}, outs),
    st.text(min_size=1),
    st.dictionaries(st.text(min_size=1), st.tuples(st.text(min_size=1), _DIGEST)),
)


@given(st.dictionaries(st.text(min_size=1), _RECORD, min_size=1))
@settings(max_examples=50, deadline=None)
def test_a_lock_sections_digest_survives_the_written_lock(tmp_path_factory: pytest.TempPathFactory, section: dict[str, Any]) -> None:
    """A remote pack is named by the section a run records and found by the section a checkout reads back."""
    path = tmp_path_factory.mktemp("lock") / "sluice.lock"
    LockFile().with_stages(section).write(path)
    read = LockFile.read(path)
    assert read.stages == section
    assert section_digest(read.stages) == section_digest(section) is not None


def test_a_lock_section_digest_is_none_when_nothing_is_recorded_or_json_cannot_hold_it() -> None:
    assert section_digest({"s": {"outputs": {}}}) is None  # no fingerprint: nothing to restore
    assert section_digest({"s": {"fingerprint": "f", "outputs": {1: {}, "o": {}}}}) is None  # YAML keys JSON cannot sort
    assert section_digest({"a": {"fingerprint": "f"}, "b": {"fingerprint": "g"}}) == section_digest(
        {"b": {"fingerprint": "g"}, "a": {"fingerprint": "f"}}
    )


# The phases in import order. A subpackage (`dag`) takes one place in it, and its own modules
# have an order of their own in SUBPACKAGES.
ORDER = [
    "errors",
    "limits",
    "model",
    "durable",
    "paths",
    "fingerprint",
    "secret",
    "plugin",
    "load",
    "schema_check",
    "registry",
    "validate",
    "interpolate",
    "shell",
    "resolve",
    "compile",
    "cache",
    "state",
    "revisions",
    "maintenance",
    "remote",
    "plan",
    "stage_runner",
    "watchdog",
    "guard",
    "execute",
    "report",
    "dag",
    "export",
    "schema_bundle",
]
SUBPACKAGES = {
    "dag": ["view", "layout", "formats", "html", "render"],
    "export": ["protocol", "github", "info", "catalog"],
    "remote": ["protocol", "config", "sign", "pack", "fsspec_store", "sync", "upkeep"],
}
FREE = {"errors", "limits", "model", "fingerprint"}
TOP = {"api", "cli", "__main__"}
ENGINE = Path(__file__).resolve().parents[2] / "engine"


def _engine_imports(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, module path under sluice.engine) for every engine module `path` imports, however spelled."""
    package = path.relative_to(ENGINE).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ("sluice", "engine", *package[: len(package) - node.level + 1])
                module = (*base, *(node.module.split(".") if node.module else ()))
            else:
                module = tuple((node.module or "").split("."))
            if module[:2] != ("sluice", "engine"):
                continue
            # `from sluice.engine.dag import formats` names a module; `... import Name` does not
            for alias in node.names:
                sub = (*module[2:], alias.name)
                is_module = (ENGINE.joinpath(*sub).with_suffix(".py")).is_file() or ENGINE.joinpath(*sub).is_dir()
                found.append((node.lineno, sub if is_module else module[2:]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, tuple(a.name.split("."))[2:]) for a in node.names if a.name.startswith("sluice.engine.")]
    return found


def test_modules_import_only_earlier_phases() -> None:
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(ENGINE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or parts[0] in TOP:
            continue
        unit = parts[0]
        assert unit in ORDER, f"engine/{unit} is not in the layering order: add it"
        if len(parts) > 1:
            assert parts[1] in SUBPACKAGES[unit], f"engine/{'/'.join(parts)}.py is not in the order of engine/{unit}: add it"
        for line, dep in _engine_imports(path):
            where = f"engine/{path.relative_to(ENGINE)}:{line} imports {'.'.join(dep)}"
            assert dep and dep[0] not in TOP, where
            if dep[0] == unit and len(parts) > 1 and len(dep) > 1:
                inner = SUBPACKAGES[unit]
                assert inner.index(dep[1]) < inner.index(parts[1]), where
            elif dep[0] != unit:
                assert dep[0] in FREE or ORDER.index(dep[0]) < ORDER.index(unit), where


def test_layering_check_sees_every_spelling_of_an_import() -> None:
    """The walker must not miss an import just because of how it is spelled."""
    assert {d for _, d in _engine_imports(ENGINE / "dag" / "render.py")} == {("dag", "formats"), ("dag", "html"), ("dag", "view")}


def test_nothing_imports_the_old_top_level_names() -> None:
    """Installed, there is no top-level `engine`, `stages` or `schemas`: everything is under `sluice.`."""
    root = ENGINE.parent
    offenders = [
        f"{path.relative_to(root)}:{line} {name}"
        for folder in ("engine", "stages", "schemas", "sluice", "tests", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        for line, name in imported_modules(path)
        if name.split(".")[0] in {"engine", "stages", "schemas"}
    ]
    assert not offenders


def test_stages_see_only_the_plugin_api() -> None:
    root = Path(__file__).resolve().parents[2] / "stages"
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sluice.engine"):
                assert node.module == "sluice.engine.plugin", f"{path.relative_to(root.parent)} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sluice.engine") for a in node.names), f"{path} imports the engine"


def test_a_key_no_pattern_admits_is_reported_where_a_schema_has_pattern_properties() -> None:
    """A plugin's `with:` schema may admit keys by pattern; a key matching none must still be an error, at its line."""
    from sluice.engine.validate import schema_problems

    schema = {"type": "object", "properties": {"mode": {"type": "string"}}, "patternProperties": {"^x-": {}}, "additionalProperties": False}
    doc = load_text("mode: fast\nx-note: fine\nmdoe: slow\n", "with.yaml")
    problems = [str(p) for p in schema_problems(doc, schema, doc.data)]
    assert problems == ["with.yaml:3:1: mdoe: unknown key 'mdoe' (did you mean 'mode'?)"]
    assert schema_problems(doc, schema, {"mode": "fast", "x-note": 1}) == []
