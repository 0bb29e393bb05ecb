"""data.drift: figures equal scipy's, the corrections, the effect-size rule, and no false alarm on undrifted data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.stats.contingency import association
from sklearn.datasets import load_breast_cancer

from sluice.engine.plugin import StageFailed
from sluice.stages.data_drift import DEFAULTS, DriftStage, adjust, compare, subsample
from tests.stages.conftest import config_problems

PLUGIN = DriftStage()


def _compare(reference: pd.DataFrame, current: pd.DataFrame, **config):  # type: ignore[no-untyped-def]
    return {r.column: r for r in compare(reference, current, {**DEFAULTS, **config})}


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.normal(size=400), "y": rng.exponential(size=400), "c": rng.choice(list("abc"), 400)})
    current = pd.DataFrame(
        {"x": rng.normal(0.8, 1, 300), "y": rng.exponential(size=300), "c": rng.choice(list("abcd"), 300, p=[0.1, 0.2, 0.3, 0.4])}
    )
    return reference, current


def test_ks_and_chi_square_figures_equal_scipy(tables):
    reference, current = tables
    results = _compare(reference, current)
    for column in ("x", "y"):
        a, b = reference[column].to_numpy(), current[column].to_numpy()
        direct = stats.ks_2samp(a, b)
        assert (results[column].statistic, results[column].p_value) == (direct.statistic, direct.pvalue)
        assert results[column].effect == pytest.approx(stats.wasserstein_distance(a, b) / np.std(a), rel=1e-12)
    counts = pd.concat([reference["c"].value_counts(), current["c"].value_counts()], axis=1).fillna(0).sort_index()
    table = counts.to_numpy(dtype="int64")
    direct = stats.chi2_contingency(table, correction=False)
    assert (results["c"].statistic, results["c"].p_value) == (direct.statistic, direct.pvalue)
    assert results["c"].effect == association(table, method="cramer", correction=False)


def test_adjusted_p_values_equal_scipy_and_bonferroni(tables):
    reference, current = tables
    raw = [r.p_value for r in _compare(reference, current, correction="none").values()]
    bh = [r.p_value_adjusted for r in _compare(reference, current).values()]
    bonferroni = [r.p_value_adjusted for r in _compare(reference, current, correction="bonferroni").values()]
    assert bh == list(stats.false_discovery_control(np.array(raw), method="bh"))
    assert bonferroni == [min(p * 3, 1.0) for p in raw]
    assert [r.p_value_adjusted for r in _compare(reference, current, correction="none").values()] == raw


@settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=80),
    b=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=80),
)
def test_ks_equals_scipy_on_any_sample(a, b):
    result = _compare(pd.DataFrame({"v": a}), pd.DataFrame({"v": b}))["v"]
    direct = stats.ks_2samp(np.array(a), np.array(b))
    assert (result.statistic, result.p_value) == (direct.statistic, direct.pvalue)


@settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=60),
    b=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=60),
)
def test_wasserstein_equals_scipy_on_any_sample(a, b):
    from sluice.stages.data_drift import wasserstein_sorted

    assert wasserstein_sorted(np.sort(a), np.sort(b)) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-9)


def _random_halves(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[order[:half]], frame.iloc[order[half:]]


def test_random_halves_of_one_dataset_never_alarm_with_the_defaults():
    frame = load_breast_cancer(as_frame=True).frame
    for seed in range(20):
        reference, current = _random_halves(frame, seed)
        drifted = [r.column for r in _compare(reference, current, categorical=["target"]).values() if r.drifted]
        assert drifted == [], f"split {seed}: {drifted}"


def test_without_correction_or_effect_size_random_halves_do_alarm():
    """The counterpart that shows the test above can fail: 31 raw tests at 0.05 cry wolf."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 31)), columns=[f"f{i}" for i in range(31)])
    alarms = 0
    for seed in range(10):
        reference, current = _random_halves(frame, seed)
        results = _compare(reference, current, correction="none", min_effect={"wasserstein": 0.0})
        alarms += any(r.drifted for r in results.values())
        assert not any(r.drifted for r in _compare(reference, current).values())
    assert alarms >= 3


def test_shifted_numeric_and_categorical_columns_drift(tables):
    reference, current = tables
    results = _compare(reference, current)
    assert (results["x"].drifted, results["y"].drifted, results["c"].drifted) == (True, False, True)


def test_effect_size_threshold_ignores_significant_but_tiny_shifts():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(size=200_000)})
    current = pd.DataFrame({"x": rng.normal(0.05, 1, 200_000)})
    result = _compare(reference, current, max_rows=None)["x"]
    assert result.p_value_adjusted < 1e-10 and result.effect < 0.1 and not result.drifted
    assert _compare(reference, current, max_rows=None, min_effect={"wasserstein": 0.01})["x"].drifted


def test_psi_is_reported_and_its_threshold_counts_as_drift(tables):
    reference, current = tables
    results = _compare(reference, current, psi={"bins": 5, "threshold": 0.0001}, alpha=1e-300)
    assert all(r.psi is not None and r.psi > 0 for r in results.values())
    assert results["x"].drifted and results["y"].drifted  # the p-value rule is off (alpha): PSI alone decided
    # 'd' is new in current: its reference bin is empty, so PSI there measures the floor, not the data
    assert results["c"].psi_gated is False and results["c"].psi_min_expected == 0 and not results["c"].drifted
    assert _compare(reference, current)["x"].psi is None


def test_numeric_codes_can_be_tested_as_categories():
    reference = pd.DataFrame({"code": [1, 2, 3] * 50})
    current = pd.DataFrame({"code": [1, 1, 1, 2, 3] * 30})
    assert _compare(reference, current, categorical=["code"])["code"].test == "chi2"
    assert _compare(reference, current)["code"].test == "ks"


def test_subsampling_is_deterministic_and_capped():
    frame = pd.DataFrame({"x": np.arange(10_000)})
    a, b = subsample(frame, 500, 3), subsample(frame, 500, 3)
    assert len(a) == 500 and a.equals(b) and a["x"].is_monotonic_increasing
    assert not a.equals(subsample(frame, 500, 4))
    assert subsample(frame, None, 0) is frame


def test_stage_fails_on_drift_with_a_table_and_report(harness, write_csv, tables):
    reference, current = tables
    ctx = harness.context(
        {}, {"reference": write_csv(reference, "ref.csv"), "current": write_csv(current, "cur.csv")}, {"report": "drift.json"}
    )
    with pytest.raises(StageFailed, match="2 of 3 columns drifted") as failure:
        PLUGIN.run(ctx)
    assert "x" in failure.value.details and "chi2" in failure.value.details
    report = json.loads(ctx.outputs["report"].read_text())
    assert report["drifted"] == ["x", "c"] and report["passed"] is False
    assert set(report["columns"][0]) >= {"test", "statistic", "p_value", "p_value_adjusted", "drifted"}


def test_share_and_fail_options(harness, write_csv, tables):
    reference, current = tables
    inputs = {"reference": write_csv(reference, "ref.parquet"), "current": write_csv(current, "cur.parquet")}
    out = harness.run(PLUGIN, {"max_drifted_share": 0.7}, inputs, {"report": "d.json"})
    assert json.loads(out["report"].read_text())["passed"] is True
    out = harness.run(PLUGIN, {"fail": False}, inputs, {"report": "d.json"})
    assert json.loads(out["report"].read_text())["drifted_share"] == pytest.approx(2 / 3)


def test_columns_and_exclude_choose_what_is_tested(tables):
    reference, current = tables
    assert list(_compare(reference, current, columns=["y", "x"])) == ["y", "x"]
    assert list(_compare(reference, current, exclude=["c"])) == ["x", "y"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"alpha": 1.5}, "greater than or equal to the maximum"),
        ({"correction": "holm"}, "is not one of"),
        ({"columns": ["a"], "exclude": ["a"]}, "both listed and excluded"),
        ({"min_effect": {"d": 0.1}}, "Additional properties"),
        ({"max_rows": 10}, "less than the minimum"),
        ({"columns": {"a": {"min_effekt": 0.2}}}, "'min_effekt' was unexpected"),
        ({"columns": {"a": {"min_effect": {"missing": 2}}}}, "greater than the maximum"),
        ({"min_effect": {"unseen": -0.1}}, "less than the minimum"),
    ],
)
def test_bad_config(config, message):
    problems = config_problems(PLUGIN, config)
    assert problems and any(message in p for p in problems), problems


def test_missing_column_in_current_is_named(tables):
    reference, current = tables
    with pytest.raises(StageFailed, match="current table lacks 1") as failure:
        _compare(reference, current.rename(columns={"y": "yy"}))
    assert "did you mean 'yy'" in failure.value.details


def test_type_change_between_tables_fails_cleanly(tables):
    reference, current = tables
    with pytest.raises(StageFailed, match="changed type") as failure:
        _compare(reference, current.assign(x=current["x"].astype(str) + "cm"))
    assert "float" in failure.value.details and "string" in failure.value.details


def test_empty_current_table_fails_cleanly(harness, write_csv, tables):
    reference, _ = tables
    ctx = harness.context(
        {}, {"reference": write_csv(reference, "r.csv"), "current": write_csv(reference.iloc[:0], "c.csv")}, {"report": "d.json"}
    )
    with pytest.raises(StageFailed, match=r"current table .* has no rows"):
        PLUGIN.run(ctx)


def test_adjust_of_nothing():
    assert adjust([], "bh") == []


def test_psi_refuses_to_gate_on_bins_too_small_and_warns(harness, write_csv):
    """Halves of 89 rows in 10 bins hold ~9 rows a bin: PSI ≥ 0.2 then alarmed on every undrifted split."""
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(frame))[:178]
    reference, current = write_csv(frame.iloc[rows[:89]], "ref.csv"), write_csv(frame.iloc[rows[89:]], "cur.csv")
    ctx = harness.context({"psi": {"bins": 10, "threshold": 0.2}}, {"reference": reference, "current": current}, {"report": "drift.json"})
    PLUGIN.run(ctx)
    report = json.loads(ctx.outputs["report"].read_text())
    assert report["passed"] and report["drifted"] == []
    column = report["columns"][0]
    assert column["psi"] is not None and column["psi_gated"] is False
    assert any("PSI not gated" in w and "at least 10 rows expected per bin" in w for w in report["warnings"])


def test_psi_still_gates_with_enough_rows_per_bin(tables):
    reference, current = tables
    results = _compare(reference, current, psi={"bins": 5, "threshold": 0.0001}, alpha=1e-300)
    assert results["x"].psi_gated and results["x"].drifted


# --- effect size in the column's own units (issue 10 item 3) ---

SHAPES = {
    "normal": lambda rng, n: rng.normal(size=n),
    "uniform": lambda rng, n: rng.uniform(size=n),
    "t": lambda rng, n: rng.standard_t(3, size=n),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.5, rng.normal(-2, 0.5, n), rng.normal(2, 0.5, n)),
    "skewed": lambda rng, n: rng.exponential(size=n),
    "count": lambda rng, n: rng.poisson(3, size=n),
}


def _shifted_tables(n: int, shift_sd: float, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({name: draw(rng, n) for name, draw in SHAPES.items()})
    current = pd.DataFrame({name: draw(rng, n) for name, draw in SHAPES.items()})
    return reference, current + shift_sd * reference.std()


def test_a_0_2_sd_shift_drifts_whatever_the_column_shape():
    """KS D for a 0.2-sd shift ranges from ~0.06 (uniform) to ~0.2 (skewed): the old floor saw only some shapes."""
    reference, current = _shifted_tables(5_000, 0.2)
    results = _compare(reference, current)
    assert {c: r.drifted for c, r in results.items()} == dict.fromkeys(SHAPES, True)
    for r in results.values():
        assert 0.14 < r.effect < 0.3 and r.effect_kind.startswith("wasserstein") and r.threshold == 0.1


def test_no_change_and_negligible_shifts_do_not_drift():
    reference, current = _shifted_tables(5_000, 0.0)
    assert [c for c, r in _compare(reference, current).items() if r.drifted] == []
    reference, current = _shifted_tables(5_000, 0.05)
    assert [c for c, r in _compare(reference, current).items() if r.drifted] == []


def test_a_tiny_shift_of_an_integer_column_is_not_drift_though_ties_make_ks_large():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"visits": rng.poisson(3, 20_000)})
    current = pd.DataFrame({"visits": rng.poisson(3, 20_000) + 0.01 * reference["visits"].std()})
    result = _compare(reference, current)["visits"]
    assert result.statistic > 0.2 and result.p_value_adjusted < 1e-10  # D is the largest point mass
    assert result.effect < 0.02 and not result.drifted


def test_a_wider_spread_drifts_in_a_normal_column():
    rng = np.random.default_rng(6)
    reference = pd.DataFrame({"x": rng.normal(size=5_000)})
    current = pd.DataFrame({"x": rng.normal(0, 1.5, 5_000)})
    result = _compare(reference, current)["x"]
    assert result.drifted and result.effect == pytest.approx(0.4, abs=0.05)


def test_effect_is_wasserstein_over_the_reference_spread_robust_under_outliers():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=3_000), rng.normal(0.3, 1, 3_000)
    result = _compare(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}))["x"]
    assert (
        result.effect == pytest.approx(stats.wasserstein_distance(a, b) / np.std(a), rel=1e-12) and result.effect_kind == "wasserstein/std"
    )
    # a few huge values make the std meaningless: the spread is then IQR / 1.349
    a[:5] = 1e6
    result = _compare(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}))["x"]
    q1, q3 = np.percentile(a, [25, 75])
    assert result.effect_kind == "wasserstein/iqr"
    assert result.effect == pytest.approx(stats.wasserstein_distance(a, b) / ((q3 - q1) / 1.349), rel=1e-12)


def test_per_column_thresholds_override_the_defaults():
    reference, current = _shifted_tables(5_000, 0.2)
    results = _compare(reference, current, columns={"normal": {"min_effect": 0.5}, "uniform": {"min_effect": {"wasserstein": 0.3}}})
    assert list(results) == list(SHAPES)  # a map sets options; it does not choose columns
    assert (results["normal"].drifted, results["normal"].threshold) == (False, 0.5)
    assert (results["uniform"].drifted, results["uniform"].threshold) == (False, 0.3)
    assert results["skewed"].drifted


def test_per_column_options_for_a_column_the_tables_lack_are_named():
    reference, current = _shifted_tables(500, 0.0)
    with pytest.raises(StageFailed, match="reference table lacks 1") as failure:
        _compare(reference, current, columns={"normall": {"min_effect": 0.5}})
    assert "did you mean 'normal'" in failure.value.details


def test_the_old_ks_floor_is_accepted_and_reported_as_unused(harness, write_csv, tables):
    reference, current = tables
    ctx = harness.context(
        {"min_effect": {"ks": 0.1, "cramers_v": 0.1}},
        {"reference": write_csv(reference, "r.csv"), "current": write_csv(current, "c.csv")},
        {"report": "d.json"},
    )
    with pytest.raises(StageFailed):
        PLUGIN.run(ctx)
    report = json.loads(ctx.outputs["report"].read_text())
    assert any("min_effect.ks is no longer used" in w for w in report["warnings"])
    assert report["columns"][0]["effect_kind"] == "wasserstein/std" and report["columns"][0]["threshold"] == 0.1


# --- missing values and unseen categories (issue 10 item 4) ---


def _with_missing(values: np.ndarray, share: float, seed: int) -> np.ndarray:
    out = values.astype(float).copy()
    out[np.random.default_rng(seed).random(len(out)) < share] = np.nan
    return out


def test_a_jump_in_missing_values_drifts_though_the_values_left_do_not():
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"x": rng.normal(size=5_000), "y": rng.normal(size=5_000)})
    current = pd.DataFrame({"x": _with_missing(rng.normal(size=5_000), 0.3, 1), "y": rng.normal(size=5_000)})
    results = _compare(reference, current)
    x = results["x"]
    assert x.drifted and x.reasons == ("missing",) and not results["y"].drifted
    assert (x.missing.reference, x.missing.threshold) == (0.0, 0.05) and x.missing.effect == pytest.approx(0.3, abs=0.02)
    assert x.missing.p_value_adjusted < 1e-10 and x.missing.drifted
    assert results["y"].missing.p_value is None  # no nulls on either side: nothing to test


def test_a_small_or_no_change_in_missing_values_does_not_drift():
    rng = np.random.default_rng(12)
    n = 50_000
    reference = pd.DataFrame({"small": _with_missing(rng.normal(size=n), 0.02, 1), "same": _with_missing(rng.normal(size=n), 0.1, 2)})
    current = pd.DataFrame({"small": _with_missing(rng.normal(size=n), 0.04, 3), "same": _with_missing(rng.normal(size=n), 0.1, 4)})
    results = _compare(reference, current)
    assert results["small"].missing.p_value_adjusted < 1e-10 and not results["small"].drifted  # significant, under 5 pp
    assert not results["same"].drifted and results["same"].missing.p_value_adjusted > 0.05
    assert _compare(reference, current, min_effect={"missing": 0.01})["small"].reasons == ("missing",)
    assert _compare(reference, current, columns={"small": {"min_effect": {"missing": 0.01}}})["small"].drifted


def test_missing_rate_tests_join_the_multiple_testing_correction():
    rng = np.random.default_rng(13)
    reference = pd.DataFrame({"x": _with_missing(rng.normal(size=400), 0.1, 1), "y": rng.normal(size=400)})
    current = pd.DataFrame({"x": _with_missing(rng.normal(size=400), 0.15, 2), "y": rng.normal(size=400)})
    raw = _compare(reference, current, correction="none")
    bonferroni = _compare(reference, current, correction="bonferroni")
    assert bonferroni["x"].missing.p_value_adjusted == min(raw["x"].missing.p_value * 3, 1.0)
    assert bonferroni["y"].p_value_adjusted == min(raw["y"].p_value * 3, 1.0)
    table = np.array(
        [[np.isnan(reference["x"]).sum(), reference["x"].notna().sum()], [np.isnan(current["x"]).sum(), current["x"].notna().sum()]]
    )
    assert raw["x"].missing.p_value == stats.chi2_contingency(table, correction=False).pvalue


def test_categories_unseen_in_the_reference_drift_past_their_floor():
    rng = np.random.default_rng(14)
    reference = pd.DataFrame({"c": rng.choice(list("abcdefghij"), 5_000)})
    current = pd.DataFrame(
        {"c": np.where(rng.random(5_000) < 0.08, rng.choice(["new1", "new2"], 5_000), rng.choice(list("abcdefghij"), 5_000))}
    )
    result = _compare(reference, current)["c"]
    assert result.drifted and "unseen" in result.reasons
    assert result.unseen.share == pytest.approx(0.08, abs=0.015) and result.unseen.categories == ("new1", "new2")
    assert not _compare(reference, current, min_effect={"unseen": 0.2, "cramers_v": 0.9})["c"].drifted
    same = _compare(reference, pd.DataFrame({"c": rng.choice(list("abcdefghij"), 5_000)}))["c"]
    assert (same.drifted, same.unseen.share, same.unseen.categories) == (False, 0.0, ())


def test_an_all_null_current_column_drifts_on_its_missing_rate(tables):
    reference, current = tables
    result = _compare(reference, current.assign(y=np.nan))["y"]
    assert result.test == "none" and result.p_value_adjusted is None
    assert result.drifted and result.reasons == ("missing",) and result.missing.current == 1.0


def test_the_report_and_failure_name_the_missing_jump(harness, write_csv):
    rng = np.random.default_rng(15)
    reference = pd.DataFrame({"x": rng.normal(size=2_000), "c": rng.choice(list("ab"), 2_000)})
    current = pd.DataFrame({"x": _with_missing(rng.normal(size=2_000), 0.3, 1), "c": rng.choice(list("ab"), 2_000)})
    ctx = harness.context({}, {"reference": write_csv(reference, "r.csv"), "current": write_csv(current, "c.csv")}, {"report": "d.json"})
    with pytest.raises(StageFailed, match="1 of 2 columns drifted") as failure:
        PLUGIN.run(ctx)
    assert "missing" in failure.value.details and "0.0% -> 29.4%" in failure.value.details
    column = json.loads(ctx.outputs["report"].read_text())["columns"][0]
    assert column["reasons"] == ["missing"] and column["missing"]["drifted"] and column["unseen"] is None
    assert set(column["missing"]) == {"reference", "current", "p_value", "p_value_adjusted", "effect", "threshold", "drifted"}


def test_gates_bench_drift_trials_fast_version():
    """benchmarks/gates_bench.py's drift trials, 3 seeded trials at 20,000 rows: every change seen, no wolf cried."""
    from benchmarks.gates_bench import CHANGES, drift_trials
    from sluice.stages import data_drift

    rates = {scenario: rate for (_, scenario), rate in drift_trials(3, 20_000, {"data.drift": data_drift}).items()}
    assert {c: rates[c] for c in CHANGES} == {**dict.fromkeys(CHANGES, 1.0), "+0.01 sd, integer (negligible)": 0.0}
    assert rates["no change, synthetic 20,000 rows"] == 0.0
    assert sum(rate for scenario, rate in rates.items() if scenario.endswith("halves")) <= 1 / 3
