"""`sluice validate` runs on every commit, so it must not pay for the libraries stages use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("pandas", "numpy", "scipy", "sklearn", "pyarrow", "joblib", "docker", "kubernetes", "fastapi", "uvicorn", "httpx")
# Not heavy, but not needed to check a spec either: importing them would only slow the hook.
AVOIDABLE = ("networkx", "rich")

# Runs the CLI's own entry point in a fresh interpreter and reports what got imported.
PROBE = """
import json, sys
from sluice.engine.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def _validate(cwd: Path, *files: str) -> tuple[int, set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, "validate", *files], cwd=cwd, capture_output=True, text=True, check=False)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def _plugin_names() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", "from sluice.engine.registry import Registry; print('\\n'.join(Registry.discover().names()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_validate_imports_no_stage_libraries(tmp_path: Path) -> None:
    # One stage per installed plugin, so every plugin module is imported for its schema; empty
    # `with:` blocks may be invalid, which is fine: the point is what validating costs.
    names = _plugin_names()
    assert "util.copy" in names
    stages = "".join(f"  s{i}:\n    uses: {name}\n    with: {{}}\n" for i, name in enumerate(names))
    (tmp_path / "pipeline.yaml").write_text(f"version: 1\nstages:\n{stages}")
    code, modules = _validate(tmp_path, "pipeline.yaml")
    assert code in (0, 2)
    assert sorted(modules & set(HEAVY)) == []


def test_validate_skips_graph_and_console_libraries(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(
        "version: 1\nstages:\n  a:\n    cmd: echo a > ${outputs.x}\n    outputs: {x: a.txt}\n"
        "  b:\n    cmd: cat ${inputs.x}\n    inputs: {x: '${stages.a.outputs.x}'}\n"
    )
    code, modules = _validate(tmp_path, "pipeline.yaml")
    assert code == 0
    assert sorted(modules & set(AVOIDABLE)) == []


def test_invalid_spec_also_stays_light(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(
        "version: 1\nstages:\n  a:\n    cmd: echo\n    needs: [b]\n  b:\n    cmd: echo\n    needs: [a]\n"
    )
    code, modules = _validate(tmp_path, "pipeline.yaml")
    assert code == 2
    assert sorted(modules & set(HEAVY + AVOIDABLE)) == []
