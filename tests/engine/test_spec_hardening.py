"""Hostile and unlucky specs: values never become shell code, bounds hold, every problem shows at once."""

from __future__ import annotations

import json

import pytest

from sluice.engine.shell import splice_cmd
from tests.conftest import Workspace

# ---------------------------------------------------------------- item 1: quoting in cmd

HOSTILE = [
    "x; touch ../outside/p",
    "$(touch pwned)",
    "`touch pwned`",
    "a 'b' \"c\" \\d",
    "line one\nline two; touch pwned",
    "${HOME} $$ $HOME !x * ?",
    "it's",
    "",
]

# Each reference sits unquoted, inside double quotes, inside single quotes, and within a word.
PLACES = {
    "unquoted": "printf '%s\\n' ${params.v} > ${outputs.o}",
    "double": "printf '%s\\n' \"${params.v}\" > ${outputs.o}",
    "single": "printf '%s\\n' '${params.v}' > ${outputs.o}",
    "mixed word": "printf '%s\\n' \"<\"${params.v}'>' > ${outputs.o}",
    "in a substitution": "printf '%s\\n' \"$(printf '%s' \"${params.v}\")\" > ${outputs.o}",
}
EXPECTED = {"mixed word": "<{}>"}


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_values_reach_the_command_as_exact_strings(ws: Workspace, place: str, value: str) -> None:
    (ws.root / "inner").mkdir()
    inner = Workspace(ws.root / "inner")
    (ws.root / "outside").mkdir()
    inner.write(
        "pipeline.yaml",
        "version: 1\nparams: {v: " + json.dumps(value) + "}\nstages:\n  a:\n"
        f"    cmd: {json.dumps(PLACES[place])}\n    outputs: {{o: out.txt}}\n",
    )
    assert inner.run_json() == {"a": "ran"}
    assert inner.read("out.txt") == EXPECTED.get(place, "{}").format(value) + "\n"
    assert not (ws.root / "outside" / "p").exists()
    assert not (inner.root / "pwned").exists()


def test_matrix_values_and_set_overrides_are_quoted(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {name: safe}
        stages:
          a:
            matrix: {m: ["$(touch pwned1)", "x; touch pwned2"]}
            cmd: echo ${matrix.m} ${params.name} > out-${matrix.m}.txt
            outputs: {o: "out-${matrix.m}.txt"}
        """,
    )
    res = ws.sluice("run", "--set", "name=`touch pwned3`")
    assert res.code == 0, res.out + res.err
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("pwned")) == []
    assert ws.read("out-x; touch pwned2.txt") == "x; touch pwned2 `touch pwned3`\n"


def test_a_list_outside_quotes_is_several_words(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {files: [a b, "c;d", e]}
        stages:
          a:
            cmd: printf '[%s]' ${params.files} > ${outputs.o}; printf '<%s>' "${params.files}" >> ${outputs.o}
            outputs: {o: out.txt}
        """,
    )
    assert ws.run_json() == {"a": "ran"}
    assert ws.read("out.txt") == "[a b][c;d][e]<a b c;d e>"


def test_raw_splices_flags_and_validate_notes_it(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {flags: "-n -e"}
        stages:
          a:
            cmd: echo ${raw:params.flags} 'x\\ty' > ${outputs.o}
            outputs: {o: out.txt}
        """,
    )
    res = ws.sluice("validate")
    assert res.code == 0, res.out
    assert "pipeline.yaml:5:10: stages.a.cmd: note: ${raw:params.flags} is spliced into the shell command unquoted" in res.out
    assert "1 file valid." in res.out
    data = ws.sluice("validate", "--json").json()
    assert data["ok"] is True
    assert [(n["line"], n["col"], n["path"]) for n in data["notes"]] == [(5, 10, "stages.a.cmd")]
    assert ws.run_json() == {"a": "ran"}
    assert ws.read("out.txt") == "x\ty"  # echo got -n and -e as two flags


def test_raw_only_in_cmd(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nparams: {f: x}\nstages:\n  a:\n    cmd: echo\n    env: {A: '${raw:params.f}'}\n")
    res = ws.sluice("validate")
    assert res.code == 2
    assert "pipeline.yaml:6:14: stages.a.env.A: ${raw:…} splices into a shell command and is only allowed in cmd" in res.out


def test_here_document_bodies_are_escaped(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {v: "$(touch pwned) `touch pwned` \\\\ x"}
        stages:
          a:
            cmd: |
              cat > ${outputs.o} <<EOF
              [${params.v}]
              EOF
            outputs: {o: out.txt}
        """,
    )
    assert ws.run_json() == {"a": "ran"}
    assert ws.read("out.txt") == "[$(touch pwned) `touch pwned` \\ x]\n"
    assert not (ws.root / "pwned").exists()


def test_a_value_cannot_end_a_here_document(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {v: "EOF\\ntouch pwned"}
        stages:
          a:
            cmd: |
              cat > ${outputs.o} <<EOF
              ${params.v}
              EOF
            outputs: {o: out.txt}
        """,
    )
    res = ws.sluice("validate")
    assert res.code == 2
    assert "stages.a.cmd: the value of ${params.v} has a line break and cannot be spliced into a here-document" in res.out


def test_comments_do_not_change_the_quoting(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {v: "a\\ntouch pwned"}
        stages:
          a:
            cmd: |
              # don't ${params.v}
              printf '%s' ${params.v} > ${outputs.o}
            outputs: {o: out.txt}
        """,
    )
    assert ws.run_json() == {"a": "ran"}
    assert ws.read("out.txt") == "a\ntouch pwned"
    assert not (ws.root / "pwned").exists()


def test_paths_in_double_quotes_are_one_argument(ws: Workspace) -> None:
    ws.write("in put.txt", "hello\n")
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          a:
            cmd: cat "${inputs.i}" > "${outputs.o}"
            inputs: {i: in put.txt}
            outputs: {o: out put.txt}
        """,
    )
    assert ws.run_json() == {"a": "ran"}
    assert ws.read("out put.txt") == "hello\n"


def test_param_in_cmd_is_still_a_dependency(ws: Workspace) -> None:
    """The lock records the cmd as written and the params it uses: quoting changes neither."""
    ws.write(
        "pipeline.yaml", "version: 1\nparams: {v: x}\nstages:\n  a:\n    cmd: echo ${params.v} > ${outputs.o}\n    outputs: {o: out.txt}\n"
    )
    assert ws.run_json() == {"a": "ran"}
    assert ws.run_json() == {"a": "skipped"}
    assert "param v changed" in ws.sluice("status", "--set", "v=y").out


@pytest.mark.parametrize("value", [*HOSTILE, "EOF", "'", '"', "\\", "\n"], ids=range(len(HOSTILE) + 5))
def test_splice_cmd_gives_bash_the_exact_value(tmp_path, value: str) -> None:
    import subprocess

    cmd = "printf '<%s>' ${params.v} \"${params.v}\" '${params.v}' x${params.v}y $'${params.v}' \"$(printf %s '${params.v}')\""
    got = splice_cmd(cmd, {"params.v": value}.__getitem__, keep=())
    out = subprocess.run(["bash", "-c", got], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    # $(…) drops trailing line breaks, as it does for any command's output
    assert out == f"<{value}>" * 3 + f"<x{value}y><{value}><{value.rstrip(chr(10))}>"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- item 7: one file on macOS and Windows


@pytest.mark.parametrize(("first", "second"), [("Models/m", "models/m"), ("caf\u00e9.txt", "cafe\u0301.txt"), ("out/A", "OUT/a/x")])
def test_outputs_equal_after_case_folding_or_normalisation_clash(ws: Workspace, first: str, second: str) -> None:
    ws.write(
        "pipeline.yaml", f"version: 1\nstages:\n  x: {{cmd: x, outputs: {{o: '{first}'}}}}\n  y: {{cmd: x, outputs: {{o: '{second}'}}}}\n"
    )
    res = ws.sluice("validate")
    assert res.code == 2, res.out
    if "/x" in second:
        assert f"stages.y.outputs.o: output '{second}' overlaps output '{first}' of stage 'x'" in res.out
    else:
        assert (
            f"stages.y.outputs.o: output '{second}' is the same file as output '{first}' of stage 'x' "
            "on case-insensitive or normalising filesystems (macOS, Windows)"
        ) in res.out


def test_a_directory_output_below_many_outputs_is_reported_once_per_stage(ws: Workspace) -> None:
    stages = "".join(f"  s{i}: {{cmd: x, outputs: {{o: d/f{i}}}}}\n" for i in range(3))
    ws.write("pipeline.yaml", "version: 1\nstages:\n" + stages + "  big: {cmd: x, outputs: {o: D}}\n")
    res = ws.sluice("validate")
    assert res.code == 2
    assert "stages.big.outputs.o: output 'D' overlaps output 'd/f0' of stage 's0'" in res.out


# ---------------------------------------------------------------- item 10: linear in fan-in (timed in benchmarks/)


def test_matrix_referring_to_a_matrix_picks_the_matching_instance(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {ks: [1, 2, 3]}
        stages:
          a: {cmd: "echo ${matrix.k} > ${outputs.o}", matrix: {k: "${params.ks}"}, outputs: {o: "a${matrix.k}.txt"}}
          b:
            cmd: "cat ${inputs.i} > ${outputs.o}"
            matrix: {k: "${params.ks}"}
            inputs: {i: "${stages.a.outputs.o}"}
            outputs: {o: "b${matrix.k}.txt"}
        """,
    )
    assert ws.run_json() == {f"{s}[k={k}]": "ran" for s in "ab" for k in (1, 2, 3)}
    assert ws.read("b2.txt") == "2\n"


# ---------------------------------------------------------------- item 12: every problem at once


def test_readme_example_reports_all_three_problems(ws: Workspace) -> None:
    ws.write(
        "broken.yaml",
        """\
        version: 1
        params: {model: {C: 1.0}}
        stages:
          train:
            cmd: python train.py > ${outputs.model}
            ouputs: {model: model.txt}
          report:
            cmd: python report.py --C ${params.model.c}
            needs: [trian]
        """,
    )
    res = ws.sluice("validate", "broken.yaml")
    assert res.code == 2
    assert [line for line in res.out.splitlines() if line.startswith("broken.yaml:")] == [
        "broken.yaml:6:5: stages.train.ouputs: unknown key 'ouputs' (did you mean 'outputs'?)",
        "broken.yaml:8:10: stages.report.cmd: 'params.model.c' is not defined (params.model has no 'c') (did you mean 'C'?)",
        "broken.yaml:9:13: stages.report.needs[0]: no stage named 'trian' (did you mean 'train'?)",
    ]


def test_references_to_a_schema_invalid_stage_are_not_reported_twice(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          a: {cmd: x, outputs: {o: a.txt}, retries: lots}
          b: {cmd: "cat ${inputs.i}", inputs: {i: "${stages.a.outputs.o}"}, needs: [a], outputs: {o: a.txt}}
          c: {cmd: "echo ${params.nope}"}
        """,
    )
    res = ws.sluice("validate")
    lines = [line for line in res.out.splitlines() if line.startswith("pipeline.yaml:")]
    assert len(lines) == 2, res.out
    assert "stages.a.retries: expected an integer" in lines[0]
    assert "stages.c.cmd: 'params.nope' is not defined" in lines[1]


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        ("echo ${params.a", "pipeline.yaml:4:12: stages.a.cmd: '${' is not closed; write $${ for a literal ${ passed to the shell"),
        (
            "echo ${HOME}",
            "pipeline.yaml:4:12: stages.a.cmd: unknown reference '${HOME}'; write $${HOME} for a literal ${…} passed to the shell",
        ),
    ],
)
def test_unclosed_and_shell_references_are_found_by_validate(ws: Workspace, cmd: str, message: str) -> None:
    ws.write("pipeline.yaml", "version: 1\nparams: {a: 1}\nstages:\n  a: {cmd: '" + cmd + "', desc: 'x ${params.a'}\n")
    res = ws.sluice("validate")
    assert res.code == 2
    assert message in res.out
    assert "stages.a.desc: '${' is not closed" in res.out


# ---------------------------------------------------------------- item 8: bounded work for any input


def test_spec_size_is_checked_before_parsing(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n  a: {cmd: x}\n" + "#" * 2_000_000 + "\n")
    res = ws.sluice("validate", env={"SLUICE_MAX_SPEC_BYTES": str(1024 * 1024)})
    assert res.code == 2
    assert "pipeline.yaml: the file is 2.0 MB, over the 1 MiB limit (SLUICE_MAX_SPEC_BYTES)" in res.out


def test_params_file_size_is_checked(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nparams: {a: 1}\nstages:\n  a: {cmd: 'echo ${params.a}'}\n")
    ws.write("p.yaml", "a: 2\n" + "#" * 5000 + "\n")
    res = ws.sluice("status", "--params", "p.yaml", env={"SLUICE_MAX_SPEC_BYTES": "4096"})
    assert res.code == 2
    assert "p.yaml: the file is 5,006 bytes, over the 4,096-byte limit (SLUICE_MAX_SPEC_BYTES)" in res.out + res.err


def test_yaml_depth_comes_from_limits(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nx: " + "[" * 20 + "]" * 20 + "\n")
    res = ws.sluice("validate", env={"SLUICE_MAX_YAML_DEPTH": "10"})
    assert "nested more than 10 levels deep" in res.out


def test_matrix_product_is_checked_before_expanding(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {big: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
        stages:
          a:
            cmd: echo ${matrix.x}${matrix.y}${matrix.z}
            matrix: {x: "${params.big}", y: "${params.big}", z: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
        """,
    )
    res = ws.sluice("validate", env={"SLUICE_MAX_MATRIX_INSTANCES": "999"})
    assert res.code == 2
    assert (
        "pipeline.yaml:6:13: stages.a.matrix: the matrix expands to 1,000 instances, over the 999 limit (SLUICE_MAX_MATRIX_INSTANCES)"
        in res.out
    )
    res = ws.sluice("validate", env={"SLUICE_MAX_STAGES": "500"})
    assert "the pipeline expands to 1,000 stages, over the 500 limit (SLUICE_MAX_STAGES)" in res.out


def test_interpolated_strings_are_bounded(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        "version: 1\nparams: {s: '" + "x" * 100 + "'}\nstages:\n  a:\n"
        "    cmd: echo ${params.s}${params.s}\n    env: {A: '${params.s}${params.s}'}\n",
    )
    res = ws.sluice("validate", env={"SLUICE_MAX_STRING_BYTES": "150"})
    assert res.code == 2
    assert (
        "pipeline.yaml:5:10: stages.a.cmd: the string is over the 150-byte limit (SLUICE_MAX_STRING_BYTES) after ${…} interpolation"
        in res.out
    )
    assert "stages.a.env.A: the string is over the 150-byte limit" in res.out


# ---------------------------------------------------------------- item 11 (part): NUL bytes and env names


@pytest.mark.parametrize(
    ("stage", "params", "message"),
    [
        (
            "{cmd: 'echo ${params.v}'}",
            '{v: "a\\0b"}',
            "pipeline.yaml:4:12: stages.a.cmd: a value holds a NUL byte, which no command, path or environment value can hold",
        ),
        ('{cmd: "echo a\\0b"}', "{}", "pipeline.yaml:4:12: stages.a.cmd: a value holds a NUL byte"),
        ("{cmd: x, outputs: {o: 'out${params.v}'}}", '{v: "a\\0b"}', "pipeline.yaml:4:28: stages.a.outputs.o: a value holds a NUL byte"),
        ('{cmd: x, inputs: {i: "in\\0"}}', "{}", "stages.a.inputs.i: a value holds a NUL byte"),
        ("{cmd: x, env: {A: '${params.v}'}}", '{v: "a\\0b"}', "stages.a.env.A: a value holds a NUL byte"),
        ("{cmd: x, env: {'A=B': 1}}", "{}", "stages.a.env.A=B: invalid name 'A=B': an environment variable name: not empty, no '=' or NUL"),
        ("{cmd: x, env: {'': 1}}", "{}", "invalid name '': an environment variable name: not empty, no '=' or NUL"),
    ],
)
def test_nul_bytes_and_bad_env_names_are_spec_errors(ws: Workspace, stage: str, params: str, message: str) -> None:
    ws.write("pipeline.yaml", f"version: 1\nparams: {params}\nstages:\n  a: {stage}\n")
    for command in ("validate", "run"):
        res = ws.sluice(command)
        assert res.code == 2, res.out + res.err
        assert "Traceback" not in res.out + res.err
        assert message in res.out + res.err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.C=0.5", "--set model.C=0.5: params.model is not defined in the pipeline (defined: seed, train)"),
        ("seed.x=1", "--set seed.x=1: params.seed is a number, not a mapping"),
    ],
)
def test_set_names_what_is_wrong_with_the_key(ws: Workspace, override: str, message: str) -> None:
    ws.write("pipeline.yaml", "version: 1\nparams: {seed: 1, train: {cv: 5}}\nstages:\n  a: {cmd: 'echo ${params.seed}'}\n")
    res = ws.sluice("status", "--set", override)
    assert res.code == 2
    assert message in res.err


def test_set_value_goes_through_the_guarded_loader(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml", "version: 1\nparams: {seed: 1}\nstages:\n  a: {cmd: 'echo ${params.seed} > ${outputs.o}', outputs: {o: o.txt}}\n"
    )
    res = ws.sluice("run", "--set", "seed=!!python/object:os.system x")
    assert res.code == 0, res.err
    assert ws.read("o.txt") == "!!python/object:os.system x\n"  # the tag is refused: the text itself
