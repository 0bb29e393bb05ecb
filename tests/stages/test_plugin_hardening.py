"""Built-in plugins under attack: config values that reach generated files, imports named by config,
declared inputs and outputs, and a plugin that crashes."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Workspace

# ---- item 2: values written into Dockerfiles, requirements and manifests


def _spec(uses: str, key: str, value: object, extra: str = "") -> str:
    """A one-stage spec whose `with:` holds `key: value` on line 6 (value as JSON, so YAML reads it back)."""
    ports = {
        "docker.build": "    inputs: {model: models/model}\n    outputs: {image: image.json}\n",
        "k8s.manifests": "    inputs: {image: image.json}\n    outputs: {manifests: manifests}\n",
    }[uses]
    return f"version: 1\nstages:\n  s:\n    uses: {uses}\n    with:\n      {key}: {json.dumps(value)}\n{extra}{ports}"


def _assert_rejected_at(ws: Workspace, text: str, path: str, needle: str, message: str) -> None:
    ws.write("pipeline.yaml", text)
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    line = 6
    col = text.splitlines()[line - 1].index(needle) + 1
    pattern = rf"pipeline\.yaml:{line}:{col}: {re.escape(path)}: .*(?:{message})"
    assert re.search(pattern, res.out + res.err, re.IGNORECASE), res.out + res.err
    assert "Traceback" not in res.err


HOSTILE_IMAGES = ["python:3.11-slim\nRUN touch /pwned", "python:3.11-slim\n", "python:3.11 AS x", "", "Upper:tag", "a@sha256:zz"]


@pytest.mark.parametrize("image", HOSTILE_IMAGES)
def test_docker_build_base_image_must_be_an_image_reference(ws: Workspace, image: str) -> None:
    _assert_rejected_at(
        ws, _spec("docker.build", "base_image", image), "stages.s.with.base_image", '"', "image reference|control character"
    )


@pytest.mark.parametrize("image", ["python:3.11-slim\nRUN id", "nginx\n"])
def test_k8s_manifests_image_must_be_an_image_reference(ws: Workspace, image: str) -> None:
    _assert_rejected_at(ws, _spec("k8s.manifests", "image", image), "stages.s.with.image", '"', "image reference|control character")


HOSTILE_REQUIREMENTS = [
    "-r /etc/shadow",
    "--index-url http://evil.example/simple",
    "-e git+https://evil.example/x.git",
    "file:///etc/passwd",
    "https://evil.example/x.whl",
    "pkg @ https://evil.example/x.whl",
    "./local/path",
    "numpy>=1.0\n-r /etc/shadow",
    "numpy>=1.0\n",
    "numpy --hash=sha256:00",
    "numpy==1.*.2",
]


@pytest.mark.parametrize("line", HOSTILE_REQUIREMENTS)
def test_extra_requirements_must_be_pep508_specifiers(ws: Workspace, line: str) -> None:
    text = _spec("docker.build", "extra_requirements", ["xgboost>=2", line])
    # the second element: its opening quote is the second `", "` boundary on the line
    ws.write("pipeline.yaml", text)
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    col = text.splitlines()[5].index(json.dumps(line)) + 1
    assert re.search(
        rf"pipeline\.yaml:6:{col}: stages\.s\.with\.extra_requirements\[1\]: .*(PEP 508|requirement|control character)", res.out
    ), res.out
    assert "xgboost" not in res.out.split("extra_requirements[1]")[0].splitlines()[-1]


@pytest.mark.parametrize("good", ["scikit-learn==1.5.2", "xgboost[scikit-learn]>=2,<3", 'tomli; python_version < "3.11"', "Requests~=2.31"])
def test_extra_requirements_accepts_pep508(ws: Workspace, good: str) -> None:
    ws.write("pipeline.yaml", _spec("docker.build", "extra_requirements", [good]))
    res = ws.sluice("validate")
    assert res.code == 0, res.out + res.err


@pytest.mark.parametrize(
    ("labels", "path", "needle"),
    [
        ({"a\nRUN touch /pwned": "v"}, "stages.s.with.labels.a\nRUN touch /pwned", '"a'),
        ({"Com.Example": "v"}, "stages.s.with.labels.Com.Example", '"Com'),
        ({"com.example key": "v"}, "stages.s.with.labels.com.example key", '"com'),
        ({"com.example": "line\nRUN touch /pwned"}, "stages.s.with.labels.com.example", '"line'),
    ],
)
def test_docker_build_labels_are_checked(ws: Workspace, labels: dict[str, str], path: str, needle: str) -> None:
    text = _spec("docker.build", "labels", labels)
    ws.write("pipeline.yaml", text)
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    col = text.splitlines()[5].index(needle) + 1
    assert f"pipeline.yaml:6:{col}: " in res.out, res.out
    assert "label" in res.out or "control character" in res.out, res.out


@pytest.mark.parametrize(
    ("labels", "needle"),
    [({"team name": "x"}, '"team'), ({"team": "has space"}, '"has'), ({"team": "x" * 64}, '"xx'), ({"a/b/c": "x"}, '"a/b')],
)
def test_k8s_manifests_labels_follow_kubernetes_syntax(ws: Workspace, labels: dict[str, str], needle: str) -> None:
    text = _spec("k8s.manifests", "labels", labels)
    ws.write("pipeline.yaml", text)
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    col = text.splitlines()[5].index(needle) + 1
    assert f"pipeline.yaml:6:{col}: stages.s.with.labels" in res.out, res.out


@pytest.mark.parametrize("key", ["network_mode", "repository", "version"])
def test_docker_build_other_strings_carry_no_newline(ws: Workspace, key: str) -> None:
    value = {"network_mode": "host\n", "repository": "acme/model\n", "version": "1.0\n"}[key]
    _assert_rejected_at(ws, _spec("docker.build", key, value), f"stages.s.with.{key}", '"', "control character|not valid")


def test_dockerfile_quotes_labels_and_stays_one_instruction_per_line() -> None:
    from sluice.stages.docker_build import dockerfile

    labels = {"org.example.title": 'My "best" model', "org.example.note": "costs $5 \\ more", "org.example.e": "é"}
    cfg = {"port": 8000, "wheelhouse": False, "base_image": "registry.example.com:5000/team/python:3.11-slim"}
    text = dockerfile(cfg, "3.11", labels)
    label_lines = [line for line in text.splitlines() if line.startswith("LABEL")]
    assert label_lines == ['LABEL "org.example.e"="é" "org.example.note"="costs \\$5 \\\\ more" "org.example.title"="My \\"best\\" model"']
    assert "FROM registry.example.com:5000/team/python:3.11-slim AS deps" in text
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert set(instructions) <= {"FROM", "RUN", "COPY", "ENV", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL"}


@pytest.mark.parametrize(
    ("cfg", "python", "labels"),
    [
        ({"base_image": "python:3.11\nRUN id"}, "3.11", {}),
        ({"base_image": "python:3.11"}, '3.11"\nRUN id #', {}),
        ({"base_image": "python:3.11"}, "3.11", {"a\nRUN id": "x"}),
    ],
)
def test_dockerfile_writer_refuses_what_validation_would(cfg: dict, python: str, labels: dict) -> None:
    from sluice.engine.plugin import StageFailed
    from sluice.stages.docker_build import dockerfile

    with pytest.raises(StageFailed):
        dockerfile({"port": 8000, "wheelhouse": False, **cfg}, python, labels)


def test_pinned_requirements_refuse_tampered_metadata() -> None:
    from sluice.engine.plugin import StageFailed
    from sluice.stages.docker_build import pinned_requirements

    assert pinned_requirements({"library_versions": {"numpy": "1.26.4"}}, ["xgboost>=2"])[0] == "numpy==1.26.4"
    with pytest.raises(StageFailed, match="numpy"):
        pinned_requirements({"library_versions": {"numpy": "1.26.4\n-r /etc/shadow"}}, [])
    with pytest.raises(StageFailed, match="requirement"):
        pinned_requirements({"library_versions": {}}, ["-r /etc/shadow"])


def test_build_context_refuses_a_model_file_outside_the_model_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from sluice.engine.plugin import StageFailed
    from sluice.stages.docker_build import write_context

    (tmp_path / "secret").write_text("outside")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "metadata.json").write_text("{}")
    meta = SimpleNamespace(model_file="../secret")
    cfg = {"port": 8000, "wheelhouse": False, "base_image": "python:3.11-slim"}
    with pytest.raises(StageFailed, match="model file"):
        write_context(tmp_path / "ctx", model_dir, meta, ["numpy==1.26.4"], cfg, "3.11", {})
    assert not (tmp_path / "ctx" / "secret").exists()


# ---- item 3: `estimator:` names a class under an allowed module prefix; nothing else is imported

SIDE_EFFECT = (
    "import pathlib\npathlib.Path('IMPORTED-{name}').write_text('imported')\n"
    "class Est:\n    def fit(self, X, y): return self\n    def get_params(self, deep=True): return {{}}\n"
)


def _train_spec(estimator: str, allow: list[str] | None = None) -> str:
    allow_line = f"      allow_modules: {json.dumps(allow)}\n" if allow is not None else ""
    return (
        "version: 1\nstages:\n  train:\n    uses: sklearn.train\n    with:\n"
        f"      estimator: {json.dumps(estimator)}\n      target: y\n{allow_line}"
        "    inputs: {train: train.csv}\n    outputs: {model: model}\n"
    )


def _evil_workspace(ws: Workspace) -> None:
    for name in ("evilmod", "sklearn_evil"):
        ws.write(f"{name}.py", SIDE_EFFECT.format(name=name))
    ws.write("train.csv", "x,y\n1,0\n2,1\n3,0\n4,1\n")


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        ("this.Anything", "not under an allowed module"),
        ("os.system", "not under an allowed module"),
        ("evilmod.Est", "not under an allowed module"),
        ("sklearn_evil.Est", "not under an allowed module"),
        ("sklearn.../../x", "not valid"),
        ("sklearn", "not valid"),
    ],
)
def test_estimator_outside_the_allowed_modules_is_rejected_and_never_imported(ws: Workspace, estimator: str, message: str) -> None:
    _evil_workspace(ws)
    text = _train_spec(estimator)
    ws.write("pipeline.yaml", text)
    col = text.splitlines()[5].index('"') + 1
    for command in ("validate", "run"):
        res = ws.sluice(command)
        assert res.code == 2, res.out + res.err
        assert f"pipeline.yaml:6:{col}: stages.train.with.estimator: " in res.out + res.err, res.out + res.err
        assert message in res.out + res.err
        assert "Traceback" not in res.err
    assert sorted(p.name for p in ws.root.glob("IMPORTED-*")) == []
    assert "Zen of Python" not in res.out + res.err


def test_allow_modules_admits_a_project_prefix_without_importing_at_validate(ws: Workspace) -> None:
    _evil_workspace(ws)
    ws.write("pipeline.yaml", _train_spec("evilmod.Est", ["xgboost", "evilmod"]))
    res = ws.sluice("validate")
    assert res.code == 0, res.out + res.err
    assert not (ws.root / "IMPORTED-evilmod").exists()
    ws.write("pipeline.yaml", _train_spec("evilmod_two.Est", ["evilmod"]))
    res = ws.sluice("validate")
    assert res.code == 2 and "not under an allowed module" in res.out, res.out + res.err
    assert "evilmod" in res.out  # the message lists the allowed prefixes


def test_run_rechecks_the_estimator_before_importing(harness, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sluice.engine.plugin import StageFailed
    from sluice.stages.sklearn_train import TrainStage, import_estimator

    (tmp_path / "evilmod.py").write_text(SIDE_EFFECT.format(name="evilmod"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ctx = harness.context({"estimator": "evilmod.Est", "target": "y"}, {"train": tmp_path / "t.csv"}, {"model": "model"})
    with pytest.raises(StageFailed, match="not under an allowed module"):
        TrainStage().run(ctx)
    cls, problem = import_estimator("evilmod.Est")
    assert cls is None and problem is not None
    assert not (tmp_path / "IMPORTED-evilmod").exists()


# ---- item 13: plugins declare the inputs and outputs they read and write


def test_split_with_a_misnamed_input_fails_validate_with_both_problems(ws: Workspace) -> None:
    ws.write("t.csv", "a,b\n1,2\n3,4\n5,6\n7,8\n")
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          split:
            uses: data.split
            inputs:
              data: t.csv
            outputs: {train: a.csv, test: b.csv}
        """,
    )
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    assert "pipeline.yaml:6:7: stages.split.inputs.data: data.split reads no input 'data' (did you mean 'table'?)" in res.out
    assert "pipeline.yaml:6:7: stages.split.inputs: data.split needs input 'table'" in res.out
    res = ws.sluice("run")
    assert res.code == 2 and not (ws.root / "a.csv").exists()


def test_unknown_and_missing_outputs_are_reported(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          split:
            uses: data.split
            inputs: {table: t.csv}
            outputs: {train: a.csv, tset: b.csv}
        """,
    )
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    assert "pipeline.yaml:6:29: stages.split.outputs.tset: data.split writes no output 'tset' (did you mean 'test'?)" in res.out
    assert "pipeline.yaml:6:14: stages.split.outputs: data.split needs output 'test'" in res.out


def test_optional_ports_and_a_sole_output_of_any_name_pass(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          validate:
            uses: data.validate
            inputs: {table: t.csv}
            outputs: {checks: reports/v.json}
          evaluate:
            uses: sklearn.evaluate
            inputs: {model: m, test: t.csv}
            outputs: {metrics: reports/m.json}
          missing_input_section:
            uses: model.benchmark
            outputs: {report: r.json}
        """,
    )
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    assert res.out.count("needs input") == 2, res.out
    assert "stages.missing_input_section.inputs: model.benchmark needs input 'model'" in res.out
    assert "stages.validate" not in res.out and "stages.evaluate" not in res.out


def test_every_builtin_plugin_declares_its_ports() -> None:
    from sluice.engine.registry import Registry

    registry = Registry.discover()
    undeclared = [n for n in registry.names() if registry.load(n).inputs is None or registry.load(n).outputs is None]
    assert undeclared == ["util.copy"]  # its names come from `pairs`, so any are allowed


def test_registry_checks_the_declaration_shape() -> None:
    from sluice.engine.plugin import Plugin, Port
    from sluice.engine.registry import PluginLoadError, _check_contract

    class Bad(Plugin):
        name = "x.bad"
        version = "1"
        inputs = (Port("a"), Port("a"))

    class Worse(Plugin):
        name = "x.worse"
        version = "1"
        outputs = ("report",)  # type: ignore[assignment]

    with pytest.raises(PluginLoadError, match="declares input 'a' twice"):
        _check_contract("x.bad", Bad)
    with pytest.raises(PluginLoadError, match=r"outputs must be a tuple of engine\.plugin\.Port"):
        _check_contract("x.worse", Worse)


def test_a_third_party_plugin_without_declarations_accepts_any_names(ws: Workspace) -> None:
    ws.write("t.txt", "x")
    ws.write(
        "pipeline.yaml", "version: 1\nstages:\n  c:\n    uses: util.copy\n    inputs: {anything: t.txt}\n    outputs: {anything: u.txt}\n"
    )
    assert ws.sluice("validate").code == 0


# ---- item 11 (plugin part): a plugin that crashes fails its stage with one paragraph, no traceback

CRASHING = """\
import os
from sluice.engine.plugin import Plugin, Port

if os.environ.get("SLUICE_STAGE") and os.environ.get("BREAK_IMPORT"):
    raise ImportError("no module named 'acme_native'")


class Boom(Plugin):
    name = "acme.boom"
    version = "1"
    inputs = ()
    outputs = (Port("out"),)

    def run(self, ctx):
        raise ValueError("the threshold must be positive,\\nnot -1")
"""


def _third_party(ws: Workspace) -> dict[str, str]:
    """acme.boom installed the way a package installs it: a dist-info with an entry point."""
    ws.write("site/acme_boom.py", CRASHING)
    ws.write("site/acme_boom-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: acme-boom\nVersion: 0.1\n")
    ws.write("site/acme_boom-0.1.dist-info/entry_points.txt", "[sluice.stages]\nacme.boom = acme_boom:Boom\n")
    ws.write("pipeline.yaml", "version: 1\nstages:\n  crash:\n    uses: acme.boom\n    outputs: {out: out.txt}\n")
    return {"PYTHONPATH": str(ws.root / "site")}


def test_a_plugin_raising_fails_its_stage_with_one_paragraph(ws: Workspace) -> None:
    env = _third_party(ws)
    assert ws.sluice("validate", env=env).code == 0
    res = ws.sluice("run", env=env)
    assert res.code == 1, res.out + res.err
    text = res.out + res.err
    assert "Traceback" not in text and 'File "' not in text, text
    match = re.search(r"crash failed: acme\.boom raised ValueError: the threshold must be positive, not -1; traceback in (\S+)", text)
    assert match, text
    assert "Traceback (most recent call last)" in (ws.root / match.group(1)).read_text()
    assert "raise ValueError" in (ws.root / match.group(1)).read_text()
    assert not (ws.root / "out.txt").exists()


def test_a_plugin_that_fails_to_import_in_the_stage_process_fails_cleanly(ws: Workspace) -> None:
    env = {**_third_party(ws), "BREAK_IMPORT": "1"}
    res = ws.sluice("run", env=env)
    assert res.code == 1, res.out + res.err
    text = res.out + res.err
    assert "Traceback" not in text, text
    match = re.search(
        r"crash failed: plugin 'acme\.boom' failed to import \(acme_boom:Boom\): no module named 'acme_native'; traceback in (\S+)", text
    )
    assert match, text
    assert "ImportError" in (ws.root / match.group(1)).read_text()
