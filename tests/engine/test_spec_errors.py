"""Bad specs: every problem at once, each with file:line:col and key path, exit 2, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import Workspace

OK_STAGE = "  a:\n    cmd: echo hi > ${outputs.o}\n    outputs: {o: a.txt}\n"

CASES: dict[str, tuple[str, list[str]]] = {
    "malformed yaml": ("version: 1\nstages:\n  a: [1, 2\n  b: 3\n", ["pipeline.yaml:4:4: invalid YAML: did not find expected ',' or ']'"]),
    "empty file": ("", ["pipeline.yaml:1:1: the file is empty"]),
    "not a mapping": ("- just\n- a list\n", ["pipeline.yaml:1:1: expected a mapping with 'version' and 'stages', got list"]),
    "deep nesting": ("version: 1\nx: " + "[" * 50_000 + "]" * 50_000 + "\n", ["nested more than 100 levels deep"]),
    "boolean stage name": (
        "version: 1\nstages:\n  yes:\n    cmd: x\n",
        ["pipeline.yaml:3:3: key 'yes' is read by YAML as a boolean; quote it"],
    ),
    "numeric stage name": ("version: 1\nstages:\n  1.5:\n    cmd: x\n", ["pipeline.yaml:3:3: key '1.5' is read by YAML as a number"]),
    "unknown keys": (
        "version: 1\nstagez: {}\nstages:\n  a:\n    cmd: x\n    ouputs: {o: a}\n",
        [
            "pipeline.yaml:2:1: stagez: unknown key 'stagez' (did you mean 'stages'?)",
            "pipeline.yaml:6:5: stages.a.ouputs: unknown key 'ouputs' (did you mean 'outputs'?)",
        ],
    ),
    "wrong type": (
        "version: 1\nstages:\n  a:\n    cmd: x\n    retries: many\n",
        ["pipeline.yaml:5:14: stages.a.retries: expected an integer, got string 'many'"],
    ),
    "cmd and uses": (
        "version: 1\nstages:\n  a:\n    cmd: x\n    uses: util.copy\n",
        ["stages.a: needs exactly one of 'cmd' or 'uses', has both"],
    ),
    "unknown plugin": (
        "version: 1\nstages:\n  a:\n    uses: util.cpy\n",
        ["pipeline.yaml:4:11: stages.a.uses: unknown stage plugin 'util.cpy' (did you mean 'util.copy'?)"],
    ),
    "bad plugin config": (
        "version: 1\nstages:\n  a:\n    uses: util.copy\n    with: {pair: {}}\n",
        ["pipeline.yaml:5:12: stages.a.with.pair: unknown key 'pair' (did you mean 'pairs'?)"],
    ),
    "cycle": (
        "version: 1\nstages:\n  a: {cmd: x, needs: [c]}\n  b: {cmd: x, needs: [a]}\n  c: {cmd: x, needs: [b]}\n",
        ["dependency cycle: ", "a → b → c → a"],
    ),
    "missing need": (
        "version: 1\nstages:\n" + OK_STAGE + "  b: {cmd: x, needs: [aa]}\n",
        ["pipeline.yaml:6:23: stages.b.needs[0]: no stage named 'aa' (did you mean 'a'?)"],
    ),
    "missing reference": (
        "version: 1\nstages:\n" + OK_STAGE + "  b:\n    cmd: x\n    inputs: {i: '${stages.a.outputs.oo}'}\n",
        ["pipeline.yaml:8:17: stages.b.inputs.i: stage 'a' has no output 'oo' (did you mean 'o'?)"],
    ),
    "duplicate outputs": (
        "version: 1\nstages:\n" + OK_STAGE + "  b: {cmd: x, outputs: {o: ./a.txt}}\n",
        ["stages.b.outputs.o: output 'a.txt' is also written by stage 'a'"],
    ),
    "overlapping outputs": (
        "version: 1\nstages:\n  a: {cmd: x, outputs: {o: out}}\n  b: {cmd: x, outputs: {o: out/x.csv}}\n",
        ["output 'out/x.csv' overlaps output 'out' of stage 'a'"],
    ),
    "output escapes": (
        "version: 1\nstages:\n  a: {cmd: x, outputs: {up: ../x, abs: /etc/x}}\n",
        ["stages.a.outputs.up: output '../x' is outside the workspace", "stages.a.outputs.abs: output '/etc/x' is outside the workspace"],
    ),
    "undefined param": (
        "version: 1\nparams: {model: {C: 1}}\nstages:\n  a: {cmd: 'echo ${params.model.c}'}\n",
        ["pipeline.yaml:4:12: stages.a.cmd: 'params.model.c' is not defined (params.model has no 'c') (did you mean 'C'?)"],
    ),
    "python tag": (
        "version: 1\nstages:\n  a: {cmd: !!python/object:os.system x}\n",
        ["pipeline.yaml:3:12: YAML tag !!python/object:os.system is not allowed"],
    ),
    "alias bomb": (
        "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
        ["an alias bomb?"],
    ),
    "duplicate key": ("version: 1\nstages:\n" + OK_STAGE + OK_STAGE, ["pipeline.yaml:6:3: duplicate key 'a' (first at line 3)"]),
    "bad version": ("version: 2\nstages:\n" + OK_STAGE, ["pipeline.yaml:1:10: version: must be 1, got 2"]),
    "bad stage name": ("version: 1\nstages:\n  'has space': {cmd: x}\n", ["pipeline.yaml:3:3: stages.has space: invalid name 'has space'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_spec(ws: Workspace, case: str, command: str) -> None:
    text, expected = CASES[case]
    ws.write("pipeline.yaml", text)
    res = ws.sluice(command)
    output = res.out + res.err
    assert res.code == 2, output
    assert "Traceback" not in output
    for fragment in expected:
        assert fragment in output, output
    # Nothing is written for a bad spec.
    assert not (ws.root / "sluice.lock").exists()
    assert not (ws.root / "a.txt").exists()


def test_every_error_reported_at_once(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a:\n    cmd: x\n    retries: -1\n    timout: 5\n  b:\n    uses: nope.plugin\n")
    res = ws.sluice("validate")
    lines = [line for line in res.out.splitlines() if line.startswith("pipeline.yaml:")]
    assert len(lines) == 3, res.out
    assert res.code == 2


def test_missing_input_file(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a:\n    cmd: cat ${inputs.raw}\n    inputs: {raw: data/nope.csv}\n")
    res = ws.sluice("run")
    assert res.code == 2
    assert "pipeline.yaml:5:19: stages.a.inputs.raw: input 'data/nope.csv' does not exist" in res.err


def test_bad_set_override(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nparams: {model: {C: 1}}\nstages:\n" + OK_STAGE)
    res = ws.sluice("run", "--set", "model.D=2")
    assert res.code == 2 and "params.model.D is not defined" in res.err and "did you mean 'C'" not in res.err
    res = ws.sluice("run", "--set", "modle.C=2")
    assert res.code == 2 and "did you mean 'model'" in res.err


def test_validate_json_and_many_files(ws: Workspace) -> None:
    ws.write("good.yaml", "version: 1\nstages:\n" + OK_STAGE)
    ws.write("bad.yaml", "version: 1\nstages:\n  a: {cmd: x, needs: [b]}\n")
    res = ws.sluice("validate", "good.yaml", "bad.yaml", "--json")
    data = res.json()
    assert res.code == 2 and not data["ok"]
    assert data["problems"] == [
        {
            "file": "bad.yaml",
            "line": 3,
            "col": 23,
            "path": "stages.a.needs[0]",
            "message": "no stage named 'b'",
            "hint": None,
        }
    ]
    assert ws.sluice("validate", "good.yaml").code == 0


def test_symlinked_output_outside_workspace_is_refused(ws: Workspace, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep.txt").write_text("precious\n")
    (ws.root / "link").symlink_to(outside)
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a:\n    cmd: echo x > ${outputs.o}\n    outputs: {o: link/keep.txt}\n")
    data = ws.sluice("run", "--json").json()["stages"]["a"]
    assert data["outcome"] == "failed" and "outside the workspace" in data["error"]
    assert (outside / "keep.txt").read_text() == "precious\n"


def test_plugin_config_is_checked_after_interpolation(ws: Workspace) -> None:
    spec = """\
        version: 1
        params: {pairs: {src: dst}, bad: 5}
        stages:
          copy:
            uses: util.copy
            with: {pairs: "${params.pairs}"}
            inputs: {src: in.txt}
            outputs: {dst: out.txt}
        """
    ws.write("in.txt", "x\n")
    ws.write("pipeline.yaml", spec)
    assert ws.sluice("validate").code == 0  # the param is a mapping, as the schema wants
    assert ws.run_json() == {"copy": "ran"} and ws.read("out.txt") == "x\n"
    ws.write("pipeline.yaml", spec.replace("${params.pairs}", "${params.bad}"))
    res = ws.sluice("validate")
    assert res.code == 2
    assert "pipeline.yaml:6:19: stages.copy.with.pairs: expected a mapping, got integer 5" in res.out


@pytest.mark.parametrize("jobs", ["0", "-2", "many"])
def test_bad_jobs_is_a_usage_error(ws: Workspace, jobs: str) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n" + OK_STAGE)
    res = ws.sluice("run", "--jobs", jobs, timeout=30)
    assert res.code == 2 and "--jobs" in res.err and "Traceback" not in res.err
