"""The package as users get it: the sdist and wheel `python -m build` and `pip wheel .` make, and
that wheel installed with its `[ml,dag]` extras in a clean virtual environment, used from a folder
outside the repository, so missing package data or a stray top-level name cannot hide behind the
editable install.

Slow (two builds, a venv, the extras from the package index): `.ci/wheel-check` runs this file
once in CI with SLUICE_WHEEL_TEST=1; any other pytest run skips it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "pipelines" / "breast-cancer"
INSTALLED = ("engine", "stages", "schemas")  # repository folders that install as sluice.<name>
VERSION = re.search(r'__version__ = "([^"]+)"', (REPO / "sluice" / "__init__.py").read_text()).group(1)  # type: ignore[union-attr]

pytestmark = pytest.mark.skipif(
    os.environ.get("SLUICE_WHEEL_TEST") != "1",
    reason="builds the package and a venv (minutes): run by .ci/wheel-check, or set SLUICE_WHEEL_TEST=1",
)


def _run(argv: list[str | Path], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _source_files() -> set[str]:
    """What `git` would give a fresh clone: tracked and new files, ignored ones and deleted ones left out."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return {f for f in out.decode().split("\0") if f and os.path.lexists(REPO / f)}


def _package_files(files: set[str]) -> set[str]:
    """The files the wheel must hold, as paths inside it: sluice/ itself, and each installed folder under sluice/."""
    wanted = set()
    for f in files:
        top = f.partition("/")[0]
        if top in INSTALLED and f.endswith((".py", ".json")):
            wanted.add(f"sluice/{f}")
        elif top == "sluice" and not (REPO / f).is_symlink():
            wanted.add(f)
    return wanted


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel_from_sdist: Path  # what `python -m build` makes: a wheel built from the unpacked sdist
    wheel: Path  # what `pip wheel . --no-deps` makes from the checkout (the one installed below)
    files: frozenset[str]  # the checkout's files


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    # Built from a copy of what a clone would hold: no stale build/ or egg-info of this checkout gets in.
    files = _source_files()
    src = tmp_path_factory.mktemp("src")
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f, follow_symlinks=False)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out / "build", src], cwd=src, timeout=900)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", out / "pip", src], cwd=src, timeout=900)
    (sdist,) = (out / "build").glob("*.tar.gz")
    (from_sdist,) = (out / "build").glob("*.whl")
    (wheel,) = (out / "pip").glob("*.whl")
    return Dists(sdist, from_sdist, wheel, frozenset(files))


def _wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return [n for n in z.namelist() if not n.endswith("/")]


def _dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(f"sluice-{VERSION}.dist-info/{name}").decode()


def test_sdist_holds_every_source_file_once_and_no_symlink(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as tar:
        members = tar.getmembers()
    prefix = f"sluice-{VERSION}/"
    links = [m.name for m in members if m.issym() or m.islnk()]
    assert not links, f"the sdist holds links (an unpacker may refuse them, or copy a folder twice): {links}"
    names = [m.name.removeprefix(prefix) for m in members if m.isfile()]
    twice = [n for n, k in Counter(names).items() if k > 1]
    assert not twice, twice
    assert not [n for n in names if n.startswith(tuple(f"sluice/{d}/" for d in INSTALLED))], "sluice/'s symlinked folders were copied in"
    wanted = {f for f in dists.files if f.partition("/")[0] in (*INSTALLED, "sluice") and not (REPO / f).is_symlink()}
    assert wanted - set(names) == set(), "source files missing from the sdist"
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= set(names)
    assert not [n for n in names if n.startswith("tests/")], "the sdist ships tests without the conftest and data they need"


@pytest.mark.parametrize("which", ["wheel", "wheel_from_sdist"])
def test_wheel_holds_every_module_under_one_namespace(dists: Dists, which: str) -> None:
    wheel = getattr(dists, which)
    names = _wheel_names(wheel)
    assert not [n for n, k in Counter(names).items() if k > 1]
    payload = {n for n in names if not n.startswith(f"sluice-{VERSION}.dist-info/")}
    expected = _package_files(set(dists.files))
    assert expected - payload == set(), f"{wheel.name} lacks these files"
    assert payload - expected == set(), f"{wheel.name} holds files the checkout has not"
    assert {"sluice/py.typed", "sluice/schemas/pipeline.schema.json", "sluice/engine/dag/html.py"} <= payload
    assert _dist_info(wheel, "top_level.txt").split() == ["sluice"]
    assert f"sluice-{VERSION}.dist-info/licenses/LICENSE" in names


def test_sdist_rebuilds_the_same_wheel(dists: Dists) -> None:
    assert sorted(_wheel_names(dists.wheel_from_sdist)) == sorted(_wheel_names(dists.wheel))


def test_entry_points_name_modules_inside_sluice(dists: Dists) -> None:
    eps = configparser.ConfigParser(delimiters=("=",))
    eps.optionxform = str  # type: ignore[assignment,method-assign]  # names such as "data.drift" keep their case
    eps.read_string(_dist_info(dists.wheel, "entry_points.txt"))
    assert eps["console_scripts"]["sluice"].strip() == "sluice.engine.cli:run"
    payload = set(_wheel_names(dists.wheel))
    targets = {name: value.strip() for section in eps.sections() for name, value in eps[section].items()}
    assert len(targets) >= 14, targets  # the command, 12 built-in stages, `serve`
    for name, target in targets.items():
        module = target.partition(":")[0]
        assert module.startswith("sluice."), f"{name} = {target}"
        path = module.replace(".", "/")
        assert f"{path}.py" in payload or f"{path}/__init__.py" in payload, f"{name} = {target}: no such module in the wheel"


def test_metadata_passes_twine_check_strict(dists: Dists) -> None:
    res = _run([sys.executable, "-m", "twine", "check", "--strict", dists.sdist, dists.wheel_from_sdist, dists.wheel], cwd=REPO)
    assert res.stdout.count("PASSED") == 3, res.stdout
    meta = _dist_info(dists.wheel, "METADATA")
    for field in ("License-Expression: Apache-2.0", "License-File: LICENSE", "Description-Content-Type: text/markdown"):
        assert field in meta
    for field in ("Author-email:", "Maintainer-email:", "Keywords:", "Project-URL: Repository,", "Classifier: Typing :: Typed"):
        assert field in meta


# ---- the wheel installed in a clean venv, used from outside the repository


@dataclass(frozen=True)
class Installed:
    bin: Path
    env: dict[str, str]
    home: Path  # a folder outside the repository to work in

    def run(self, *argv: str | Path, cwd: Path | None = None, code: int = 0) -> subprocess.CompletedProcess[str]:
        argv_s = [str(a) for a in argv]
        exe = self.bin / argv_s[0]
        proc = subprocess.run(
            [str(exe), *argv_s[1:]], cwd=cwd or self.home, capture_output=True, text=True, timeout=300, env=self.env, check=False
        )
        assert proc.returncode == code, (
            f"{' '.join(argv_s)} exited {proc.returncode}, not {code}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
        return proc


@pytest.fixture(scope="module")
def installed(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("venv")
    assert REPO not in root.parents
    venv.create(root / "venv", with_pip=True, clear=True)
    bin_dir = root / "venv" / "bin"
    # Nothing of this checkout or of the outer environment may leak in: that is what the test is for.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["VIRTUAL_ENV"] = str(root / "venv")
    home = root / "work"
    home.mkdir()
    _run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{dists.wheel}[ml,dag]"],
        cwd=home,
        env=env,
        timeout=1800,
    )
    return Installed(bin_dir, env, home)


def test_installed_command_and_module_entry_points(installed: Installed) -> None:
    assert installed.run("sluice", "--version").stdout.strip() == f"sluice {VERSION}"
    assert installed.run("python", "-m", "sluice", "--version").stdout.strip() == f"sluice {VERSION}"
    assert installed.run("python", "-m", "sluice.engine", "--version").stdout.strip() == f"sluice {VERSION}"


def test_installed_package_is_imported_from_the_venv_and_has_no_top_level_engine(installed: Installed) -> None:
    where = installed.run("python", "-c", "import sluice, sluice.engine.plugin, sluice.schemas; print(sluice.engine.plugin.__file__)")
    assert "/site-packages/sluice/engine/plugin.py" in where.stdout and str(REPO) not in where.stdout, where.stdout
    for name in INSTALLED:
        res = installed.run("python", "-c", f"import {name}", code=1)
        assert f"ModuleNotFoundError: No module named '{name}'" in res.stderr


def test_installed_validate_of_the_example(installed: Installed) -> None:
    example = installed.home / "example"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns(".sluice", "data", "reports", "models", "sluice.lock"))
    res = installed.run("sluice", "validate", cwd=example)
    assert "problem" not in res.stdout + res.stderr
    schema = json.loads(installed.run("sluice", "schema", cwd=example).stdout)  # the schemas are package data
    assert "sklearn.train" in json.dumps(schema)


def test_installed_dag_html_is_a_complete_page(installed: Installed) -> None:
    example = installed.home / "dag-example"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns(".sluice", "data", "reports", "models", "sluice.lock"))
    installed.run("sluice", "dag", "--format", "html", "-o", "dag.html", cwd=example)
    page = (example / "dag.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</body></html>")
    assert "<svg" in page and "</svg>" in page and "<style>" in page
    data = json.loads(re.search(r'<script type="application/json" id="dag-data">(.*?)</script>', page, re.DOTALL).group(1))  # type: ignore[union-attr]
    stages = {n["stage"] for n in data["nodes"]}
    assert {"export", "train", "gate", "smoke"} <= stages
    for stage in stages:
        assert f">{stage}<" in page, f"stage {stage} is not drawn"


def test_installed_run_of_a_cmd_and_plugin_pipeline(installed: Installed) -> None:
    ws = installed.home / "run"
    ws.mkdir()
    (ws / "pipeline.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            params: {word: wheel}
            stages:
              make:
                cmd: echo ${params.word} > ${outputs.text}
                outputs: {text: out/text.txt}
              count:
                cmd: wc -c < ${inputs.text} > ${outputs.n}
                inputs: {text: "${stages.make.outputs.text}"}
                outputs: {n: out/n.txt}
              copy:
                uses: util.copy
                inputs: {text: "${stages.make.outputs.text}"}
                outputs: {text: out/copy.txt}
            """
        )
    )
    installed.run("sluice", "run", "-j", "1", cwd=ws)
    assert (ws / "out" / "text.txt").read_text() == "wheel\n"
    assert (ws / "out" / "n.txt").read_text().strip() == "6"
    assert (ws / "out" / "copy.txt").read_text() == "wheel\n"
    again = json.loads(installed.run("sluice", "run", "--json", cwd=ws).stdout)
    assert {s["outcome"] for s in again["stages"].values()} == {"skipped"}
