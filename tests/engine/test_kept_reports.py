"""A failing plugin stage keeps its report outputs in place, unrecorded: not cached, not in the lock."""

from __future__ import annotations

import json
from pathlib import Path

from sluice.engine.errors import Location
from sluice.engine.execute import Executor
from sluice.engine.fingerprint import HashCache
from sluice.engine.model import StageSpec
from sluice.engine.plugin import Plugin, Port
from tests.conftest import Workspace

PIPELINE = """\
version: 1
stages:
  validate:
    uses: data.validate
    with:
      columns:
        age: {min: 18}
    inputs: {table: data/people.csv}
    outputs: {report: reports/validation.json}
  after:
    cmd: cp ${inputs.r} ${outputs.o}
    inputs: {r: "${stages.validate.outputs.report}"}
    outputs: {o: reports/copy.json}
"""
GOOD = "name,age\nann,31\nbob,45\n"
BAD = "name,age\nann,31\nkid,17\n"


def setup(ws: Workspace, table: str) -> None:
    ws.write("pipeline.yaml", PIPELINE)
    ws.write("data/people.csv", table)


def run_entries(ws: Workspace, stage: str) -> list[str]:
    """Run entries the cache holds for `stage`, whatever its fingerprint."""
    found = []
    for path in ws.root.glob(".sluice/**/runs/??/*/*.json"):
        if json.loads(path.read_text()).get("stage") == stage:
            found.append(str(path))
    return found


def test_a_failing_validate_keeps_its_report_and_names_it(ws: Workspace) -> None:
    setup(ws, BAD)
    res = ws.sluice("run")
    assert res.code == 1, res.out + res.err
    report = json.loads(ws.read("reports/validation.json"))
    assert report["passed"] is False
    assert any(r["rule"] == "min" and not r["passed"] for r in report["rules"])
    assert "report kept: reports/validation.json" in res.out
    assert "1 validation rule(s) failed" in res.out
    assert not (ws.root / "reports/copy.json").exists()  # downstream did not run
    assert run_entries(ws, "validate") == []
    status = ws.sluice("status")
    assert "validate: will run" in status.out, status.out


def test_run_json_lists_the_kept_report(ws: Workspace) -> None:
    setup(ws, BAD)
    res = ws.sluice("run", "--json")
    assert res.code == 1, res.err
    stage = res.json()["stages"]["validate"]
    assert stage["outcome"] == "failed"
    assert stage["kept"] == ["reports/validation.json"]
    assert res.json()["stages"]["after"].get("kept", []) == []


def test_fixing_the_data_runs_the_stage_then_it_is_up_to_date(ws: Workspace) -> None:
    setup(ws, BAD)
    assert ws.sluice("run").code == 1
    ws.write("data/people.csv", GOOD)
    assert ws.run_json() == {"validate": "ran", "after": "ran"}
    assert json.loads(ws.read("reports/validation.json"))["passed"] is True
    assert "Everything is up to date" in ws.sluice("status").out
    assert ws.run_json() == {"validate": "skipped", "after": "skipped"}


def test_after_a_success_a_failure_keeps_this_runs_report_and_the_lock_does_not_claim_it(ws: Workspace) -> None:
    setup(ws, GOOD)
    assert ws.run_json() == {"validate": "ran", "after": "ran"}
    ws.write("data/people.csv", BAD)
    assert ws.run_json() == {"validate": "failed", "after": "not-run"}
    assert json.loads(ws.read("reports/validation.json"))["passed"] is False  # this run's, not the old one
    assert len(run_entries(ws, "validate")) == 1  # only the passing run's
    status = ws.sluice("status", "--json").json()["stages"]
    assert status["validate"]["stale"] is True
    # Back to the data that passed: the cached passing report comes back; the failed one is not trusted.
    ws.write("data/people.csv", GOOD)
    assert ws.run_json()["validate"] in ("restored", "ran")
    assert json.loads(ws.read("reports/validation.json"))["passed"] is True
    assert "Everything is up to date" in ws.sluice("status").out


def test_a_failing_cmd_stage_keeps_nothing(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          check:
            cmd: "echo passed=false > ${outputs.report}; exit 1"
            outputs: {report: reports/check.json}
        """,
    )
    res = ws.sluice("run", "--json")
    assert res.code == 1
    assert res.json()["stages"]["check"].get("kept", []) == []
    assert not (ws.root / "reports/check.json").exists()


GATE = """\
version: 1
stages:
  gate:
    uses: model.gate
    with:
      rules: {accuracy: {max_drop: 0.01}}
    inputs: {metrics: metrics.json, baseline: baseline.json}
    outputs: {report: reports/gate.json}
"""


def test_a_failing_gate_keeps_its_verdicts_and_accepts_nothing(ws: Workspace) -> None:
    ws.write("pipeline.yaml", GATE)
    ws.write("baseline.json", '{"accuracy": 0.93}')
    ws.write("metrics.json", '{"accuracy": 0.90}')
    res = ws.sluice("run")
    assert res.code == 1, res.out + res.err
    assert "report kept: reports/gate.json" in res.out
    report = json.loads(ws.read("reports/gate.json"))
    assert report["passed"] is False
    assert [v["verdict"] for v in report["verdicts"]] == ["fail"]
    assert not list(ws.root.glob(".sluice/**/accepted.json"))  # the failure is not the new baseline
    assert "gate: will run" in ws.sluice("status").out
    ws.write("metrics.json", '{"accuracy": 0.93}')
    assert ws.run_json() == {"gate": "ran"}
    assert json.loads(ws.read("reports/gate.json"))["passed"] is True
    assert ws.run_json() == {"gate": "skipped"}


def test_a_stage_missing_an_output_moves_none_of_them(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          two:
            cmd: echo a > ${outputs.a}
            outputs: {a: out/a.txt, b: out/b.txt}
        """,
    )
    res = ws.sluice("run")
    assert res.code == 1
    assert "did not write its output out/b.txt" in res.out
    assert not (ws.root / "out/a.txt").exists()


def test_a_retry_does_not_count_what_the_failed_attempt_left_at_the_final_path(ws: Workspace) -> None:
    ws.write(
        "pipeline.yaml",
        """\
        version: 1
        stages:
          flaky:
            cmd: "if [ -f tried ]; then exit 0; fi; touch tried; echo stale > out.txt; exit 1"
            outputs: {o: out.txt}
            retries: 1
        """,
    )
    res = ws.sluice("run")
    assert res.code == 1, res.out
    assert "did not write its output out.txt" in res.out
    assert not (ws.root / "out.txt").exists()


class _Report(Plugin):
    name = "test.report"
    version = "1"
    outputs = (Port("report", any_name=True, keep_on_failure=True),)


class _Two(Plugin):
    name = "test.two"
    version = "1"
    outputs = (Port("data"), Port("summary", required=False, keep_on_failure=True))


def test_kept_on_failure_maps_ports_to_the_stage_output_names() -> None:
    assert _Report.kept_on_failure(["verdict"]) == frozenset({"verdict"})  # the sole any-name port
    assert _Two.kept_on_failure(["data", "summary"]) == frozenset({"summary"})
    assert _Two.kept_on_failure(["data"]) == frozenset()
    assert Plugin.kept_on_failure(["x"]) == frozenset()  # undeclared outputs: nothing kept


def test_a_lock_entry_naming_the_kept_bytes_is_dropped(tmp_path: Path) -> None:
    """A failure that wrote the very bytes an earlier success did must not leave the stage up to date."""
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/r.json").write_text("{}\n")
    hashes = HashCache(tmp_path / "h.db", tmp_path)
    same = hashes.digest("reports/r.json")
    assert same is not None
    stage = StageSpec("s", "s", Location("p.yaml"), uses="test.report", outputs={"report": "reports/r.json"})

    def executor(recorded_hash: str) -> Executor:
        lock = {"s": {"fingerprint": "f", "outputs": {"report": {"path": "reports/r.json", "hash": recorded_hash}}}}
        return Executor(None, None, None, None, hashes, None, "run", None, 1, lock)  # type: ignore[arg-type]

    claims = executor(same.value)
    claims._disown(stage, ("reports/r.json",))
    assert "s" not in claims.lock_stages
    other = executor("0" * 64)
    other._disown(stage, ("reports/r.json",))
    assert "s" in other.lock_stages
