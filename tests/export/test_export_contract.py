"""The contract every exporter keeps, run against each one in the catalog through the real CLI."""

from __future__ import annotations

import shlex

import pytest

from sluice.engine.export.catalog import EXPORTERS
from sluice.engine.export.protocol import MARKER
from tests.conftest import Workspace

TARGETS = sorted(EXPORTERS)


@pytest.mark.parametrize("target", TARGETS)
def test_the_same_pipeline_gives_the_same_bytes_from_anywhere(repo: Workspace, target: str) -> None:
    out = EXPORTERS[target].default_output
    res = repo.sluice("export", target, "-f", "ml/pipeline.yaml")
    assert res.code == 0, res.err
    first = repo.read(out)
    # From the pipeline's own folder with the default -f, the paths in the document are still the root's.
    again = Workspace(repo.root / "ml").sluice("export", target, "--check")
    assert again.code == 0, again.err
    (repo.root / out).unlink()
    res = Workspace(repo.root / "ml").sluice("export", target)
    assert res.code == 0, res.err
    assert repo.read(out) == first
    assert res.out.strip().endswith(f"{out} written")
    res = repo.sluice("export", target, "-f", "ml/pipeline.yaml")
    assert res.code == 0 and "is up to date" in res.out


@pytest.mark.parametrize("target", TARGETS)
def test_the_header_says_how_to_regenerate_and_that_command_does(repo: Workspace, target: str) -> None:
    res = repo.sluice("export", target, "-f", "ml/pipeline.yaml", "-o", "ci/generated.yml", "--python", "3.12")
    assert res.code == 0, res.err
    text = repo.read("ci/generated.yml")
    head = text.splitlines()[:6]
    assert MARKER in head[0] and "ml/pipeline.yaml" in head[0]
    command = next(line.lstrip("# ") for line in head if line.lstrip("# ").startswith("sluice export "))
    assert command == f"sluice export {target} -f ml/pipeline.yaml -o ci/generated.yml --python 3.12"
    (repo.root / "ci/generated.yml").unlink()
    res = repo.sluice(*shlex.split(command)[1:])
    assert res.code == 0, res.err
    assert repo.read("ci/generated.yml") == text


@pytest.mark.parametrize("target", TARGETS)
def test_check_fails_naming_the_stale_file_until_it_is_regenerated(repo: Workspace, target: str) -> None:
    out = EXPORTERS[target].default_output
    missing = repo.sluice("export", target, "-f", "ml/pipeline.yaml", "--check")
    assert missing.code == 1 and f"{out}: does not exist" in missing.err
    assert repo.sluice("export", target, "-f", "ml/pipeline.yaml").code == 0
    assert repo.sluice("export", "--check").code == 0
    # A pipeline change the document depends on (a new report output) makes it stale.
    repo.write("ml/pipeline.yaml", repo.read("ml/pipeline.yaml").replace("reports/validation.json", "reports/rules.json"))
    for args in (("export", "--check"), ("export", target, "-f", "ml/pipeline.yaml", "--check")):
        res = repo.sluice(*args)
        assert res.code == 1, res.out + res.err
        assert f"{out}: is stale; regenerate it with: sluice export {target} -f ml/pipeline.yaml -o {out}" in res.err
    assert repo.sluice("export", target, "-f", "ml/pipeline.yaml").code == 0
    assert repo.sluice("export", "--check").code == 0
    # A hand edit is stale too, and --check never rewrites the file.
    (repo.root / out).write_text(repo.read(out) + "# tweak\n")
    assert repo.sluice("export", "--check").code == 1
    assert repo.read(out).endswith("# tweak\n")
