"""End to end through the CLI: runs, skips, reruns exactly what changed, restores from cache."""

from __future__ import annotations

import json
import shutil

from tests.conftest import Workspace

PIPELINE = """\
version: 1
name: demo
params:
  seed: 42
  model: {C: 1.0}
stages:
  prepare:
    cmd: cp ${inputs.raw} ${outputs.clean}
    inputs: {raw: data/raw.csv}
    outputs: {clean: data/clean.csv}
  train:
    cmd: (echo "C=${params.model.C}"; cat ${inputs.train}) > ${outputs.model}
    inputs:
      train: ${stages.prepare.outputs.clean}
    outputs: {model: models/model.txt}
  evaluate:
    uses: util.copy
    inputs: {m: "${stages.train.outputs.model}"}
    outputs: {m: reports/model-copy.txt}
  other:
    cmd: echo seed ${params.seed} > ${outputs.o}
    outputs: {o: other.txt}
"""


def setup(ws: Workspace) -> None:
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("data/raw.csv", "a,b\n1,2\n")


def test_first_run_then_noop(ws: Workspace) -> None:
    setup(ws)
    assert ws.run_json() == {"prepare": "ran", "train": "ran", "evaluate": "ran", "other": "ran"}
    assert ws.read("reports/model-copy.txt") == "C=1.0\na,b\n1,2\n"
    assert set(ws.run_json().values()) == {"skipped"}
    lock = ws.read("sluice.lock")
    assert "hash: blake3" in lock and "fingerprint:" in lock


def test_param_change_reruns_exactly_downstream_and_change_back_restores(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    status = ws.sluice("status", "--set", "model.C=0.5")
    assert status.code == 0
    assert "train: will run: param model.C changed 1.0 → 0.5" in status.out
    assert "evaluate: will run: upstream train will re-run" in status.out
    assert "prepare" not in status.out and "other" not in status.out
    assert ws.run_json("--set", "model.C=0.5") == {"prepare": "skipped", "train": "ran", "evaluate": "ran", "other": "skipped"}
    assert ws.read("models/model.txt").startswith("C=0.5")
    # Back to 1.0: nothing runs, both stages come back from the cache.
    assert ws.run_json() == {"prepare": "skipped", "train": "restored", "evaluate": "restored", "other": "skipped"}
    assert ws.read("reports/model-copy.txt").startswith("C=1.0")


def test_input_change_reruns_the_chain(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    ws.write("data/raw.csv", "a,b\n3,4\n")
    status = ws.sluice("status", "--json").json()["stages"]
    assert status["prepare"]["reasons"][0] == "input data/raw.csv changed"
    assert status["other"]["stale"] is False
    assert ws.run_json() == {"prepare": "ran", "train": "ran", "evaluate": "ran", "other": "skipped"}


def test_cmd_and_config_changes_are_named(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    ws.write(
        "pipeline.yaml",
        PIPELINE.replace("echo seed", "echo the seed").replace(
            "outputs: {m: reports/model-copy.txt}", "outputs: {m: reports/model-copy.txt}\n    with: {pairs: {m: m}}"
        ),
    )
    status = ws.sluice("status").out
    assert "other: will run: command changed" in status
    assert "evaluate: will run: config (with:) changed" in status
    assert ws.run_json() == {"prepare": "skipped", "train": "skipped", "evaluate": "ran", "other": "ran"}


def test_identical_upstream_output_cuts_off_downstream(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    # A new command that writes the same bytes: train re-runs, evaluate sees no change.
    ws.write("pipeline.yaml", PIPELINE.replace('(echo "C=${params.model.C}";', '(echo "C=${params.model.C}" ;'))
    assert ws.run_json() == {"prepare": "skipped", "train": "ran", "evaluate": "skipped", "other": "skipped"}


def test_deleted_or_edited_output_is_restored(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    (ws.root / "models/model.txt").unlink()
    ws.write("reports/model-copy.txt", "tampered\n")
    status = ws.sluice("status").out
    assert "output models/model.txt is missing" in status
    assert "output reports/model-copy.txt changed on disk" in status
    assert ws.run_json() == {"prepare": "skipped", "train": "restored", "evaluate": "restored", "other": "skipped"}
    assert ws.read("reports/model-copy.txt").startswith("C=1.0")


def test_selected_stages_run_with_their_upstream_only(ws: Workspace) -> None:
    setup(ws)
    assert ws.run_json("train") == {"prepare": "ran", "train": "ran", "evaluate": "skipped", "other": "skipped"}
    assert ws.sluice("status", "--json").json()["stages"]["evaluate"]["reasons"] == ["never run"]
    res = ws.sluice("run", "trian")
    assert res.code == 2 and "no stage named 'trian'" in res.err and "did you mean 'train'" in res.err


def test_force_and_dry_run(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    dry = ws.sluice("run", "--dry-run", "--force", "other")
    assert dry.code == 0 and "other: will run: forced (--force)" in dry.out
    assert ws.run_json("--force", "other")["other"] == "ran"


def test_matrix_needs_and_cache_false(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        params: {folds: [0, 1, 2]}
        stages:
          base:
            cmd: echo base > ${outputs.o}
            outputs: {o: base.txt}
          report:
            cmd: echo fold ${matrix.fold} of ${matrix.model} > ${outputs.r}
            needs: [base]
            matrix: {fold: "${params.folds}", model: [lr, svm]}
            outputs: {r: "reports/${matrix.model}-${matrix.fold}.txt"}
          always:
            cmd: date +%s%N >> ${outputs.log}
            outputs: {log: always.log}
            cache: false
        """,
    )
    first = ws.run_json()
    assert sorted(first) == sorted(["base", "always"] + [f"report[fold={f},model={m}]" for f in (0, 1, 2) for m in ("lr", "svm")])
    assert ws.read("reports/svm-2.txt") == "fold 2 of svm\n"
    second = ws.run_json()
    assert second.pop("always") == "ran"
    assert set(second.values()) == {"skipped"}


def test_parallel_jobs_overlap(ws: Workspace) -> None:
    # Two independent stages that each wait for the other's marker can only finish if run at once.
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          a:
            cmd: >-
              touch a.started; for i in $(seq 100); do [ -e b.started ] && break; sleep 0.1; done;
              [ -e b.started ] && echo ok > ${outputs.o}
            outputs: {o: a.txt}
          b:
            cmd: >-
              touch b.started; for i in $(seq 100); do [ -e a.started ] && break; sleep 0.1; done;
              [ -e a.started ] && echo ok > ${outputs.o}
            outputs: {o: b.txt}
        """,
    )
    assert ws.run_json("--jobs", "2") == {"a": "ran", "b": "ran"}


def test_failed_stage_stops_dependents_but_not_other_branches(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          bad:
            cmd: 'echo "reading the data"; echo "boom: no such column" >&2; exit 3'
            outputs: {o: bad.txt}
          after:
            cmd: cat ${inputs.i} > ${outputs.o}
            inputs: {i: "${stages.bad.outputs.o}"}
            outputs: {o: after.txt}
          independent:
            cmd: echo fine > ${outputs.o}
            outputs: {o: fine.txt}
        """,
    )
    res = ws.sluice("run", "--jobs", "1")
    assert res.code == 1
    assert "bad failed" in res.out and "boom: no such column" in res.out
    assert "Traceback" not in res.out + res.err
    data = ws.sluice("run", "--json").json()
    assert {k: v["outcome"] for k, v in data["stages"].items()} == {"bad": "failed", "after": "not-run", "independent": "skipped"}
    assert "exited with code 3" in data["stages"]["bad"]["error"]
    assert "boom" in data["stages"]["bad"]["log_tail"]
    assert (ws.root / data["stages"]["bad"]["log"]).exists()


def test_retries_then_success(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          flaky:
            cmd: if [ -e tried ]; then echo ok > ${outputs.o}; else touch tried; exit 1; fi
            outputs: {o: out.txt}
            retries: 1
        """,
    )
    data = ws.sluice("run", "--json").json()["stages"]["flaky"]
    assert data["outcome"] == "ran" and data["attempts"] == 2


def test_timeout(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          slow: {cmd: sleep 30, timeout: 0.5s}
        """,
    )
    data = ws.sluice("run", "--json").json()["stages"]["slow"]
    assert data["outcome"] == "failed" and "timed out after 0.5s" in data["error"]


def test_stage_that_forgets_an_output_fails(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          lazy: {cmd: "true", outputs: {o: never.txt}}
        """,
    )
    data = ws.sluice("run", "--json").json()["stages"]["lazy"]
    assert data["outcome"] == "failed" and "did not write its output never.txt" in data["error"]
    assert "lazy" not in ws.read("sluice.lock")


def test_shared_cache_dir_restores_in_a_second_workspace(ws: Workspace, tmp_path_factory) -> None:
    cache = tmp_path_factory.mktemp("shared-cache")
    setup(ws)
    assert set(ws.run_json("--cache-dir", str(cache)).values()) == {"ran"}
    other = Workspace(tmp_path_factory.mktemp("clone"))
    setup(other)
    outcomes = other.run_json("--cache-dir", str(cache))
    assert outcomes == {"prepare": "restored", "train": "restored", "evaluate": "restored", "other": "restored"}
    assert json.dumps(other.read("models/model.txt")) == json.dumps(ws.read("models/model.txt"))


def test_python_dash_m_engine_and_dag(ws: Workspace) -> None:
    setup(ws)
    dag = ws.sluice("dag", "--format", "json")
    assert dag.code == 0
    data = dag.json()
    assert {n["id"] for n in data["nodes"]} == {"prepare", "train", "evaluate", "other"}
    assert {"from": "prepare", "to": "train", "artifact": "data/clean.csv"} in data["edges"]


def test_hand_edited_lock_file_wins_over_its_cached_copy(ws: Workspace) -> None:
    setup(ws)
    ws.run_json()
    assert (ws.root / ".sluice/lock.json").exists()
    lines = ws.read("sluice.lock").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "other:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = next((i for i in range(start + 1, len(lines)) if len(lines[i]) - len(lines[i].lstrip()) <= indent), len(lines))
    ws.write("sluice.lock", "".join(lines[:start] + lines[end:]))  # drop the `other` entry by hand
    status = ws.sluice("status", "--json").json()["stages"]
    assert status["other"] == {"decision": "skip", "stale": False, "reasons": ["never run", "outputs already match the cache"]}
    assert not status["train"]["stale"]
    assert ws.run_json()["other"] == "skipped"
    assert "  other:\n" in ws.read("sluice.lock")  # recorded again


def test_matrix_stages_with_file_and_folder_outputs_restore_all_of_them_and_leave_no_staging(ws: Workspace) -> None:
    # Stage ids hold '/' and '=' (matrix values), each stage has a file and a folder output: each is
    # staged on its own in the run's staging folder, then moved into place.
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          make:
            cmd: >-
              echo "${matrix.model}" > ${outputs.summary} && mkdir -p ${outputs.plots}/sub &&
              echo "a ${matrix.model}" > ${outputs.plots}/a.txt && echo "b ${matrix.model}" > ${outputs.plots}/sub/b.txt
            matrix: {model: [lr/l1, lr/l2, svm]}
            outputs: {summary: "out/${matrix.model}/summary.txt", plots: "out/${matrix.model}/plots"}
        """,
    )
    first = ws.run_json()
    assert set(first.values()) == {"ran"} and len(first) == 3
    files = {p.relative_to(ws.root).as_posix(): p.read_text() for p in sorted((ws.root / "out").rglob("*")) if p.is_file()}
    assert len(files) == 9 and files["out/lr/l2/plots/sub/b.txt"] == "b lr/l2\n"
    shutil.rmtree(ws.root / "out")
    assert set(ws.run_json().values()) == {"restored"}
    again = {p.relative_to(ws.root).as_posix(): p.read_text() for p in sorted((ws.root / "out").rglob("*")) if p.is_file()}
    assert again == files
    assert list((ws.root / ".sluice" / "tmp").rglob("*")) == []
