"""`sluice dag` in the terminal and as JSON: levels, fan-in/fan-out, matrix groups, states."""

from __future__ import annotations

from tests.conftest import Workspace
from tests.dag.conftest import STATES


def test_text_view_shows_levels_fan_in_and_out_and_folds_matrix(ws: Workspace) -> None:
    ws.write("pipeline.yaml", STATES)
    res = ws.sluice("dag")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == "states: 7 stages, 5 edges, 3 levels"
    assert lines[1] == "level 0"
    train = next(line for line in lines if line.strip().startswith("train "))
    assert "← prepare (clean.csv)" in train and train.endswith("→ evaluate")
    evaluate = next(line for line in lines if "evaluate" in line and "×" in line)
    assert evaluate.strip().startswith("evaluate ×3 [fold: 0, 1, 2]  util.copy  ← train (model.txt)")
    assert "\x1b[" not in res.out  # no colour codes when not writing to a terminal


def test_text_status_has_each_state_and_reason(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--status", "--set", "model.C=0.5")
    assert res.code == 0, res.err
    out = res.out
    assert "✓ up to date" in out  # prepare
    assert "● param model.C changed 1.0 → 0.5" in out  # train
    assert "✗ failed in the last run: command exited with code 3" in out  # broken
    assert "○ never run" in out  # after_broken
    assert "evaluate[fold=1]: upstream train will re-run" in out


def test_json_status(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--format", "json", "--status", "--set", "model.C=0.5")
    assert res.code == 0, res.err
    data = res.json()
    state = {n["id"]: n["state"] for n in data["nodes"]}
    assert state == {
        "prepare": "up-to-date",
        "broken": "failed",
        "train": "stale",
        "after_broken": "never-run",
        "evaluate[fold=0]": "stale",
        "evaluate[fold=1]": "stale",
        "evaluate[fold=2]": "stale",
    }
    train = next(n for n in data["nodes"] if n["id"] == "train")
    assert train["reasons"][0] == "param model.C changed 1.0 → 0.5"
    assert {n["group"] for n in data["nodes"] if n["stage"] == "evaluate"} == {"evaluate"}
    assert {"from": "prepare", "to": "train", "artifact": "data/clean.csv"} in data["edges"]
    assert [n["level"] for n in data["nodes"] if n["id"].startswith("evaluate")] == [2, 2, 2]


def test_without_status_nodes_have_no_state(ws: Workspace) -> None:
    ws.write("pipeline.yaml", STATES)
    data = ws.sluice("dag", "--format", "json").json()
    assert all("state" not in n for n in data["nodes"])


def test_output_file(ws: Workspace) -> None:
    ws.write("pipeline.yaml", STATES)
    res = ws.sluice("dag", "--format", "json", "-o", "graph.json")
    assert res.code == 0 and res.out == ""
    assert '"name": "states"' in ws.read("graph.json")


def test_unknown_format_is_a_usage_error(ws: Workspace) -> None:
    ws.write("pipeline.yaml", STATES)
    res = ws.sluice("dag", "--format", "pdf")
    assert res.code == 2 and "invalid choice: 'pdf'" in res.err
