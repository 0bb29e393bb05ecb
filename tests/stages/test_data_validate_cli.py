"""data.validate through the CLI: the issue-10 defects, each newer check kind passing and failing, the report."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from tests.conftest import Result, Workspace

HEADER = "version: 1\nstages:\n  validate:\n    uses: data.validate\n    with:\n"
FOOTER = "    inputs: {table: data/t.csv}\n    outputs: {report: reports/validation.json}\n"


def spec(with_block: str) -> str:
    return HEADER + textwrap.indent(textwrap.dedent(with_block).strip("\n") + "\n", "      ") + FOOTER


def stage(name: str, with_block: str) -> str:
    """One data.validate stage reading data/<name>.csv, its report in reports/<name>.json."""
    block = textwrap.indent(with_block.strip("\n") + "\n", "      ")
    return f"  {name}:\n    uses: data.validate\n    with:\n{block}    inputs: {{table: data/{name}.csv}}\n    outputs: {{report: reports/{name}.json}}\n"


def run_many(ws: Workspace, stages: dict[str, tuple[str, str]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every stage (name → with block, table) in one pipeline and one `sluice run`: name → (outcome, report)."""
    ws.write("pipeline.yaml", "version: 1\nstages:\n" + "".join(stage(name, block) for name, (block, _) in stages.items()))
    for name, (_, table) in stages.items():
        ws.write(f"data/{name}.csv", table)
    res = ws.sluice("run", "--json", "--jobs", "2")
    assert res.code in (0, 1), res.out + res.err
    outcomes = {k: v["outcome"] for k, v in res.json()["stages"].items()}
    return {name: (outcomes[name], json.loads(ws.read(f"reports/{name}.json"))) for name in stages}


def run(ws: Workspace, with_block: str, table: str) -> tuple[Result, dict[str, Any]]:
    ws.write("pipeline.yaml", spec(with_block))
    ws.write("data/t.csv", table)
    res = ws.sluice("run")
    assert res.code in (0, 1), res.out + res.err
    return res, json.loads(ws.read("reports/validation.json"))


def rule(report: dict[str, Any], column: str | None, name: str) -> dict[str, Any]:
    return next(r for r in report["rules"] if r["column"] == column and r["rule"] == name)


# ---- the defects of issue 10 item 8


def test_valid_dates_pass_dtype_datetime_and_unparsable_ones_are_shown_with_their_row(ws: Workspace) -> None:
    res, report = run(ws, "columns: {day: {dtype: datetime}}", "day\n2024-01-31\n2024-02-29\n2023-12-01\n")
    assert res.code == 0, res.out
    res, report = run(ws, "columns: {day: {dtype: datetime}}", "day\n2024-01-31\n2024-02-30\n2023-12-01\nsoon\n")
    assert res.code == 1
    day = rule(report, "day", "dtype")
    assert (day["failing"], day["checked"]) == (2, 4)
    assert day["failure_cases"] == [{"row": 1, "value": "2024-02-30"}, {"row": 3, "value": "soon"}]
    assert "row 1: '2024-02-30', row 3: 'soon'" in res.out


def test_one_stray_string_is_reported_with_its_value_and_row_and_the_rest_is_still_judged(ws: Workspace) -> None:
    res, report = run(ws, "columns: {age: {dtype: int, min: 18}}", "age\n31\n45\nunknown\n17\n")
    assert res.code == 1
    dtype = rule(report, "age", "dtype")
    assert (dtype["failing"], dtype["failure_cases"]) == (1, [{"row": 2, "value": "unknown"}])
    low = rule(report, "age", "min")
    assert (low["failing"], low["failure_cases"]) == (1, [{"row": 3, "value": 17}])
    assert "row 2: 'unknown'" in res.out and "row 3: 17" in res.out


def test_one_null_in_an_int_column_is_a_nullable_failure_not_a_dtype_one(ws: Workspace) -> None:
    res, report = run(ws, "columns: {age: {dtype: int, nullable: false}}", "name,age\nann,31\nbob,\ncid,45\n")
    assert res.code == 1
    assert rule(report, "age", "dtype")["passed"] is True  # the CSV reads 31,,45 as floats
    nulls = rule(report, "age", "nullable")
    assert (nulls["failing"], nulls["failure_cases"]) == (1, [{"row": 1, "value": None}])


def test_warn_on_a_column_never_lets_a_missing_column_pass(ws: Workspace) -> None:
    res, report = run(ws, "severity: warn\ncolumns: {email: {severity: warn, regex: '.+@.+'}}", "name\nann\n")
    assert res.code == 1, res.out
    assert (report["passed"], rule(report, "email", "required")["severity"]) == (False, "error")
    assert "column is absent" in res.out
    res, report = run(ws, "columns: {email: {required: {value: true, severity: warn}}}", "name\nann\n")
    assert res.code == 0 and report["warnings"] == 1  # said so explicitly, on the rule itself


def test_a_failure_names_the_rows(ws: Workspace) -> None:
    res, report = run(ws, "columns: {country: {allowed: [FR, DE]}}", "country\nFR\nXX\nDE\nYY\n")
    assert res.code == 1
    assert "row 1: 'XX', row 3: 'YY'" in res.out
    assert rule(report, "country", "allowed")["share"] == 0.5


# ---- each newer check kind: one table that passes, one that fails (with the failing rows)

KINDS = [
    ("exclusive bounds", "columns: {p: {exclusive_min: 0, exclusive_max: 1}}", "p\n0.5\n0.9\n", "p\n0.5\n0\n1\n", ("p", "exclusive_min"), [0]),
    ("forbidden", "columns: {c: {forbidden: [XX, '??']}}", "c\nFR\nDE\n", "c\nFR\n??\n", ("c", "forbidden"), ["??"]),
    ("min_length", "columns: {code: {min_length: 2}}", "code\nab\nabc\n", "code\nab\nx\n", ("code", "min_length"), ["x"]),
    ("max_length", "columns: {code: {max_length: 3}}", "code\nab\nabc\n", "code\nabcd\nab\n", ("code", "max_length"), ["abcd"]),
    ("regex", "columns: {id: {regex: '[a-z][0-9]+'}}", "id\na1\nb22\n", "id\na1\n1a\n", ("id", "regex"), ["1a"]),
    ("composite unique", "unique: [a, b]", "a,b\n1,x\n1,y\n2,x\n", "a,b\n1,x\n2,x\n1,x\n", (None, "unique"), [{"a": 1, "b": "x"}] * 2),
    ("compare", "compare: [{left: lo, op: '<=', right: hi}]", "lo,hi\n1,2\n3,3\n", "lo,hi\n1,2\n5,3\n", (None, "compare.0"), [{"lo": 5, "hi": 3}]),
    ("min_date", "columns: {d: {dtype: datetime, min_date: '2020-01-01'}}", "d\n2020-01-01\n2021-06-01\n", "d\n2021-06-01\n2019-12-31\n", ("d", "min_date"), ["2019-12-31T00:00:00"]),
    ("max_date", "columns: {d: {dtype: datetime, max_date: '2020-12-31'}}", "d\n2020-01-01\n", "d\n2020-01-01\n2021-01-01\n", ("d", "max_date"), ["2021-01-01T00:00:00"]),
    ("not_future", "columns: {d: {dtype: datetime, not_future: true}}", "d\n2020-01-01\n", "d\n2020-01-01\n2999-01-01\n", ("d", "not_future"), ["2999-01-01T00:00:00"]),
]  # fmt: skip


def test_each_check_kind_passes_good_data_and_names_the_failing_rows(ws: Workspace) -> None:
    stages = {}
    for i, (_, block, good, bad, _, _) in enumerate(KINDS):
        stages |= {f"good{i}": (block, good), f"bad{i}": (block, bad)}
    done = run_many(ws, stages)
    for i, (kind, _, _, _, where, values) in enumerate(KINDS):
        outcome, report = done[f"good{i}"]
        assert (outcome, rule(report, *where)["passed"]) == ("ran", True), kind
        outcome, report = done[f"bad{i}"]
        failed = rule(report, *where)
        assert (outcome, failed["passed"], failed["failing"]) == ("failed", False, len(values)), kind
        assert [c["value"] for c in failed["failure_cases"]] == values, kind


STATS = [
    ("{mean: {min: 2, max: 3}}", True),
    ("{mean: {max: 2}}", False),
    ("{median: {min: 2.5, max: 2.5}}", True),
    ("{std: {max: 1}}", False),
    ("{p95: {max: 4}}", True),
    ("{p0: {min: 2}}", False),
]


def test_aggregate_statistics_in_a_range(ws: Workspace) -> None:
    done = run_many(ws, {f"s{i}": (f"columns: {{x: {{stats: {stats}}}}}", "x\n1\n2\n3\n4\n") for i, (stats, _) in enumerate(STATS)})
    for i, (stats, passes) in enumerate(STATS):
        outcome, report = done[f"s{i}"]
        result = next(r for r in report["rules"] if r["rule"].startswith("stats."))
        assert (outcome == "ran", result["passed"]) == (passes, passes), stats
        assert result["note"].split()[0] == result["rule"].removeprefix("stats."), stats  # the value is shown


def test_mostly_tolerates_a_share_of_failing_values(ws: Workspace) -> None:
    table = "x\n" + "\n".join(["1"] * 98 + ["-1", "-2"]) + "\n"
    res, report = run(ws, "columns: {x: {min: {value: 0, mostly: 0.98}}}", table)
    assert res.code == 0, res.out
    low = rule(report, "x", "min")
    assert (low["passed"], low["failing"], low["share"], low["mostly"]) == (True, 2, 0.02, 0.98)
    res, report = run(ws, "columns: {x: {mostly: 0.99, min: 0}}", table)  # column-wide default
    assert res.code == 1 and rule(report, "x", "min")["share"] == 0.02


def test_failure_cases_are_bounded(ws: Workspace) -> None:
    table = "x\n" + "\n".join(str(-i) for i in range(1, 51)) + "\n"
    _, report = run(ws, "failure_cases: 3\ncolumns: {x: {min: 0}}", table)
    low = rule(report, "x", "min")
    assert low["failing"] == 50 and low["failure_cases"] == [{"row": i, "value": -(i + 1)} for i in range(3)]


# ---- custom checks by import path: only under allow_modules, never imported by `sluice validate`

CHECKS_MODULE = """\
import pathlib
pathlib.Path("IMPORTED").write_text("imported")

def positive(series):
    return series > 0

def totals_add_up(frame):
    return frame["a"] + frame["b"] == frame["total"]
"""


def test_custom_checks_run_only_from_allowed_modules_and_validate_never_imports_them(ws: Workspace) -> None:
    ws.write("projchecks.py", CHECKS_MODULE)
    ws.write("data/t.csv", "a,b,total\n1,2,3\n-1,2,5\n")
    refused = "columns: {a: {checks: [projchecks.positive]}}"
    ws.write("pipeline.yaml", spec(refused))
    for command in ("validate", "run"):
        res = ws.sluice(command)
        assert res.code == 2, res.out + res.err
        assert (
            "pipeline.yaml:6:30: stages.validate.with.columns.a.checks[0]: 'projchecks.positive' is not under a module" in res.out + res.err
        )
    assert not (ws.root / "IMPORTED").exists()
    allowed = "allow_modules: [projchecks]\ncolumns: {a: {checks: [projchecks.positive]}}\nchecks: [projchecks.totals_add_up]"
    ws.write("pipeline.yaml", spec(allowed))
    assert ws.sluice("validate").code == 0
    assert not (ws.root / "IMPORTED").exists()
    res = ws.sluice("run")
    assert res.code == 1, res.out + res.err
    report = json.loads(ws.read("reports/validation.json"))
    assert rule(report, "a", "checks.0")["failure_cases"] == [{"row": 1, "value": -1}]
    assert [c["row"] for c in rule(report, None, "checks.0")["failure_cases"]] == [1]
    assert (ws.root / "IMPORTED").exists()


BAD_CONFIG = [
    ("columns: {d: {dtype: datetime, min_date: 'last week'}}", "with.columns.d.min_date", 48, "not an ISO 8601 date"),
    ("columns: {d: {min_date: '2020-01-01'}}", "with.columns.d.min_date", 31, "needs `dtype: datetime`"),
    ("columns: {x: {stats: {mean: {min: 3, max: 1}}}}", "with.columns.x.stats.mean.min", 41, "min 3 is greater than max 1"),
    ("columns: {x: {stats: {p101: {max: 1}}}}", "with.columns.x.stats.p101", 29, "invalid name 'p101'"),
    ("columns: {x: {min_length: 5, max_length: 2}}", "with.columns.x.min_length", 33, "min_length 5 is greater than max_length 2"),
    ("compare: [{left: a, op: '=<', right: b}]", "with.compare[0].op", 31, "'=<' is not one of"),
    ("compare: [{left: a, op: '<', right: a}]", "with.compare[0].right", 43, "with itself"),
    ("unique: [a]", "with.unique", 15, "is not valid"),
    ("columns: {x: {max_null_fraction: {value: 0.1, mostly: 0.9}}}", "with.columns.x.max_null_fraction", 40, "is not valid"),
]


def test_bad_config_of_the_newer_keys_is_a_validate_error_with_its_position(ws: Workspace) -> None:
    ws.write("pipeline.yaml", "version: 1\nstages:\n" + "".join(stage(f"s{i}", block) for i, (block, *_) in enumerate(BAD_CONFIG)))
    res = ws.sluice("validate")
    assert res.code == 2, res.out + res.err
    for i, (_, where, column, message) in enumerate(BAD_CONFIG):
        line = 6 + 6 * i
        found = [x for x in res.out.splitlines() if x.startswith(f"pipeline.yaml:{line}:{column}: stages.s{i}.{where}: ")]
        assert found and message in found[0], (where, res.out)
    assert f"{len(BAD_CONFIG)} problems found" in res.out


PROBE = "import json, sys\nfrom sluice.engine.cli import main\nmain(['validate'])\nprint(json.dumps(sorted(sys.modules)))\n"


def test_validate_imports_neither_pandas_nor_pandera(ws: Workspace) -> None:
    import subprocess
    import sys

    ws.write(
        "pipeline.yaml",
        spec("allow_modules: [m]\nunique: [a, b]\ncolumns: {d: {dtype: datetime, not_future: true, stats: {p99: {max: 1}}}}"),
    )
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ws.root, capture_output=True, text=True, check=True)
    modules = {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}
    assert modules.isdisjoint({"pandas", "pandera", "numpy"}), modules & {"pandas", "pandera", "numpy"}
