"""data.drift: per-column two-sample tests of a current table against a reference, corrected for multiple testing.

A column drifts only when its adjusted p-value is below alpha *and* its effect size reaches a
threshold: with a million rows every column is "significant", and thirty uncorrected tests at
0.05 raise a false alarm on most runs of undrifted data. The numeric effect is the Wasserstein-1
distance in units of the reference's spread, so a 0.2-sd shift measures 0.2 whatever the
column's shape; KS D did not (0.06 for a uniform column, 0.2 for a skewed one, 0.22 for a
negligible shift of an integer column, from its ties).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed
from sluice.stages._accepted import write_strict_json
from sluice.stages._tables import (
    input_path,
    is_numeric_kind,
    kind_of,
    read_table,
    require_columns,
    sole_output,
    text_table,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULTS: Mapping[str, Any] = {
    "alpha": 0.05,
    "correction": "bh",
    "max_drifted_share": 0.0,
    "fail": True,
    "max_rows": 200_000,
    "seed": 0,
}
# missing: change in the share of nulls (0.05 = 5 percentage points); unseen: share of current rows
# in categories the reference never had.
DEFAULT_EFFECT = {"wasserstein": 0.1, "cramers_v": 0.1, "missing": 0.05, "unseen": 0.05}
UNSEEN_LISTED = 10  # unseen categories named in the report
# IQR / 1.349 is the sd of a normal; the std stands unless a few extreme values inflate it past this.
ROBUST_SPREAD_RATIO = 3.0
PSI_FLOOR = 1e-6  # stands in for an empty bin so PSI stays finite, as most PSI implementations do
# Below ~10 expected rows a bin, sampling noise alone pushes PSI past the usual 0.2 (every undrifted
# split of 89-row halves did): PSI is then reported but does not decide.
PSI_MIN_PER_BIN = 10


@dataclass(frozen=True)
class MissingResult:
    """The share of nulls on each side, tested with a two-proportion (2×2 chi-square) test."""

    reference: float
    current: float
    p_value: float | None  # None when neither side has a null: nothing to test
    p_value_adjusted: float | None = None
    effect: float = 0.0  # current share − reference share
    threshold: float | None = None
    drifted: bool = False


@dataclass(frozen=True)
class UnseenResult:
    """Current rows whose category the reference never had (categorical columns only)."""

    share: float  # of the current table's non-null rows
    categories: tuple[str, ...]  # the most frequent of them, at most UNSEEN_LISTED
    threshold: float | None = None
    drifted: bool = False


@dataclass(frozen=True)
class ColumnResult:
    column: str
    test: str  # "ks" or "chi2"; "none" when a side has no values
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    effect: float | None  # Wasserstein-1 / reference spread, or Cramér's V
    effect_name: str  # the min_effect key that applies: "wasserstein" or "cramers_v"
    n_reference: int
    n_current: int
    effect_kind: str = ""  # how `effect` was measured: "wasserstein/std", "wasserstein/iqr", "cramers_v"
    threshold: float | None = None  # the smallest effect that counts as drift for this column
    psi: float | None = None
    psi_min_expected: float | None = None  # fewest rows expected in a bin, on either side
    psi_gated: bool | None = None  # whether PSI could decide (enough rows a bin); None without a threshold
    missing: MissingResult | None = None
    unseen: UnseenResult | None = None
    drifted: bool = False
    reasons: tuple[str, ...] = ()  # what drifted: "distribution", "psi", "missing", "unseen"
    note: str = ""


class DriftStage(Plugin):
    name = "data.drift"
    version = "2"
    config_schema = schemas.load("stages/data.drift")
    inputs = (Port("reference", desc="the table drift is measured against"), Port("current", desc="the new table"))
    outputs = (Port("report", desc="JSON report per column", any_name=True, keep_on_failure=True),)

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        listed = set(config.get("columns", ()))
        for column in config.get("exclude", ()):
            if column in listed:
                yield ConfigProblem(f"column '{column}' is both listed and excluded", ("exclude",))

    def run(self, ctx: StageContext) -> None:
        config = {**DEFAULTS, **ctx.config}
        reference = read_table(input_path(ctx, "reference"), "reference")
        current = read_table(input_path(ctx, "current"), "current")
        results = compare(reference, current, config)
        deprecated = (
            [
                (
                    "min_effect.ks is no longer used: numeric columns are judged by min_effect.wasserstein "
                    f"(Wasserstein-1 / reference spread, default {DEFAULT_EFFECT['wasserstein']})"
                )
            ]
            if "ks" in config.get("min_effect", {})
            else []
        )
        tested = [r for r in results if r.test != "none" or (r.missing and r.missing.p_value is not None)]
        drifted = [r for r in tested if r.drifted]
        share = len(drifted) / len(tested) if tested else 0.0
        failed = config["fail"] and share > config["max_drifted_share"]
        warnings = [
            f"column '{r.column}': PSI not gated, {r.psi_min_expected:.3g} rows expected in its smallest bin, "
            f"at least {PSI_MIN_PER_BIN} rows expected per bin are needed (use fewer bins or more rows)"
            for r in results
            if r.psi_gated is False
        ] + deprecated
        for warning in warnings:
            ctx.log.warning("%s", warning)
        write_strict_json(
            sole_output(ctx, "report"),
            {
                "alpha": config["alpha"],
                "correction": config["correction"],
                "columns": [asdict(r) for r in results],
                "tested": len(tested),
                "drifted": [r.column for r in drifted],
                "drifted_share": share,
                "passed": not failed,
                "rows": {"reference": len(reference), "current": len(current)},
                "warnings": warnings,
            },
        )
        summary = f"{len(drifted)} of {len(tested)} columns drifted (share {share:.3g}, allowed {config['max_drifted_share']})"
        if failed:
            raise StageFailed(summary, drift_table(drifted))
        ctx.log.info(summary)


def drift_table(results: Iterable[ColumnResult]) -> str:
    return text_table(
        ("column", "why", "test", "statistic", "adjusted", "effect", "psi", "missing", "unseen"),
        (
            (
                r.column,
                ",".join(r.reasons),
                r.test,
                r.statistic,
                r.p_value_adjusted,
                None if r.effect is None else f"{r.effect_name}={r.effect:.4g}",
                r.psi,
                r.missing and f"{r.missing.reference:.1%} -> {r.missing.current:.1%}",
                r.unseen and f"{r.unseen.share:.1%}",
            )
            for r in results
        ),
    )


def compare(reference: pd.DataFrame, current: pd.DataFrame, config: Mapping[str, Any]) -> list[ColumnResult]:
    """One result per compared column, in reference column order; `config` has DEFAULTS applied."""
    excluded = set(config.get("exclude", ()))
    chosen = config.get("columns")
    # A list chooses the columns; a map only sets options per column (every column is still compared).
    listed = list(chosen) if isinstance(chosen, list) and chosen else list(reference.columns)
    columns = [c for c in listed if c not in excluded]
    named = columns + [c for c in (chosen if isinstance(chosen, dict) else {}) if c not in columns]
    require_columns(reference, named, "reference")
    require_columns(current, named, "current")
    _check_kinds(reference, current, columns)
    reference = subsample(reference[columns], config["max_rows"], config["seed"])
    current = subsample(current[columns], config["max_rows"], config["seed"])
    categorical = set(config.get("categorical", ()))
    psi = config.get("psi")
    # Sorting dominates the KS test and numpy releases the GIL while sorting, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        raw = list(pool.map(lambda c: _test(str(c), reference[c], current[c], c in categorical, psi), columns))
    return _decide(raw, config)


def _check_kinds(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    clashes = []
    for column in columns:
        ref_kind, cur_kind = kind_of(reference[column]), kind_of(current[column])
        if is_numeric_kind(ref_kind) != is_numeric_kind(cur_kind):
            clashes.append((column, ref_kind, cur_kind))
    if clashes:
        raise StageFailed(
            f"{len(clashes)} column(s) changed type between reference and current",
            text_table(("column", "reference", "current"), clashes),
        )


def subsample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, the same ones for the same table and seed; row order kept."""
    import numpy as np

    if max_rows is None or len(frame) <= max_rows:
        return frame
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[rows]


def _test(column: str, ref: pd.Series, cur: pd.Series, force_categorical: bool, psi: Mapping[str, Any] | None) -> ColumnResult:
    from scipy import stats
    from scipy.stats.contingency import association

    missing = missing_test(int(ref.isna().sum()), len(ref), int(cur.isna().sum()), len(cur))
    ref, cur = ref.dropna(), cur.dropna()
    numeric = is_numeric_kind(kind_of(ref)) and not force_categorical
    effect_name = "wasserstein" if numeric else "cramers_v"
    if ref.empty or cur.empty:
        return ColumnResult(
            column, "none", None, None, None, None, effect_name, len(ref), len(cur), missing=missing, note="no non-null values on one side"
        )
    unseen = None
    if numeric:
        import numpy as np

        # Sorted once: KS sorts again cheaply, and Wasserstein reads the sorted values directly.
        a, b = np.sort(ref.to_numpy(dtype=float)), np.sort(cur.to_numpy(dtype=float))
        result = stats.ks_2samp(a, b)
        statistic, p_value = float(result.statistic), float(result.pvalue)
        effect, effect_kind = wasserstein_effect(a, b)
        index = _psi_numeric(a, b, psi["bins"] if psi and "bins" in psi else 10) if psi else None
    else:
        table = contingency(ref, cur)
        if table.shape[0] < 2:  # one category on both sides: nothing can differ
            statistic, p_value, effect, effect_kind = 0.0, 1.0, 0.0, "cramers_v"
        else:
            chi2 = stats.chi2_contingency(table, correction=False)
            statistic, p_value = float(chi2.statistic), float(chi2.pvalue)
            effect = float(association(table, method="cramer", correction=False))
        effect_kind = "cramers_v"
        unseen = unseen_categories(ref, cur)
        index = _psi_from_counts(table[:, 0], table[:, 1]) if psi else None
    psi_value, min_expected = index if index is not None else (None, None)
    return ColumnResult(
        column,
        "ks" if numeric else "chi2",
        statistic,
        p_value,
        None,
        effect,
        effect_name,
        len(ref),
        len(cur),
        effect_kind,
        psi=psi_value,
        psi_min_expected=min_expected,
        missing=missing,
        unseen=unseen,
    )


def missing_test(ref_missing: int, ref_rows: int, cur_missing: int, cur_rows: int) -> MissingResult:
    """Two-proportion test of the null shares (the pooled z-test, as a 2×2 chi-square without continuity correction)."""
    from scipy import stats

    ref_share, cur_share = ref_missing / ref_rows, cur_missing / cur_rows
    nulls, values = ref_missing + cur_missing, ref_rows + cur_rows - ref_missing - cur_missing
    if nulls == 0:
        return MissingResult(ref_share, cur_share, None, effect=0.0)
    if values == 0:  # all null on both sides: the share cannot differ
        return MissingResult(ref_share, cur_share, 1.0, effect=0.0)
    table = [[ref_missing, ref_rows - ref_missing], [cur_missing, cur_rows - cur_missing]]
    p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
    return MissingResult(ref_share, cur_share, p_value, effect=cur_share - ref_share)


def unseen_categories(ref: pd.Series, cur: pd.Series) -> UnseenResult:
    cur_text = cur.astype(str)
    new = cur_text[~cur_text.isin(set(ref.astype(str)))]
    top = new.value_counts().index[:UNSEEN_LISTED]
    return UnseenResult(len(new) / len(cur_text), tuple(sorted(str(c) for c in top)))


def wasserstein_effect(ref: np.ndarray, cur: np.ndarray) -> tuple[float, str]:
    """Wasserstein-1 distance in units of the reference's spread, and which spread; both arrays sorted.

    W1 of a pure location shift is the shift itself, so a shift of k reference sds measures k in
    any shape; ties cost nothing (unlike KS D, which jumps by a whole point mass).
    """
    import numpy as np

    distance = wasserstein_sorted(ref, cur)
    q1, q3 = np.percentile(ref, [25, 75])
    robust, std = float(q3 - q1) / 1.349, float(np.std(ref))
    if robust > 0 and std > ROBUST_SPREAD_RATIO * robust:
        return distance / robust, "wasserstein/iqr"
    if std > 0:
        return distance / std, "wasserstein/std"
    # A constant reference: measured against the current's spread, or in the column's own units.
    spread = float(np.std(cur))
    return (distance / spread, "wasserstein/current_std") if spread > 0 else (distance, "wasserstein/units")


def wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """W1 of two sorted samples: the area between their ECDFs (scipy's definition, without its argsort)."""
    import numpy as np

    if len(a) == len(b):  # the quantile functions are step functions on the same grid
        return float(np.mean(np.abs(a - b)))
    values = np.sort(np.concatenate([a, b]), kind="stable")  # a merge of two sorted runs
    between = values[:-1]
    gap = np.searchsorted(a, between, side="right") / len(a) - np.searchsorted(b, between, side="right") / len(b)
    return float(np.sum(np.abs(gap) * np.diff(values)))


def contingency(ref: pd.Series, cur: pd.Series) -> np.ndarray:
    """Categories × (reference count, current count), categories in sorted text order."""
    import pandas as pd

    counts = pd.concat([ref.astype(str).value_counts(), cur.astype(str).value_counts()], axis=1).fillna(0)
    return counts.sort_index().to_numpy(dtype="int64")


def _psi_numeric(ref: np.ndarray, cur: np.ndarray, bins: int) -> tuple[float, float]:
    import numpy as np

    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    return _psi_from_counts(ref_counts, cur_counts)


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """PSI, and the fewest rows a bin holds in the reference or is expected to hold in the current table."""
    import numpy as np

    share = ref_counts / ref_counts.sum()
    r = np.maximum(share, PSI_FLOOR)
    c = np.maximum(cur_counts / cur_counts.sum(), PSI_FLOOR)
    min_expected = float(min(ref_counts.min(), (share * cur_counts.sum()).min()))
    return float(np.sum((c - r) * np.log(c / r))), min_expected


def adjust(p_values: list[float], correction: str) -> list[float]:
    """P-values corrected for testing them together: BH (false discovery rate), Bonferroni, or as they are."""
    import numpy as np
    from scipy import stats

    if not p_values or correction == "none":
        return list(p_values)
    ps = np.asarray(p_values, dtype=float)
    if correction == "bonferroni":
        return [float(p) for p in np.minimum(ps * len(ps), 1.0)]
    return [float(p) for p in stats.false_discovery_control(ps, method="bh")]


def _decide(raw: list[ColumnResult], config: Mapping[str, Any]) -> list[ColumnResult]:
    # The missing-rate tests join the distribution tests in one family, so the correction bounds
    # false alarms over every verdict the report gives.
    family = [((r.column, "distribution"), r.p_value) for r in raw if r.p_value is not None]
    family += [((r.column, "missing"), r.missing.p_value) for r in raw if r.missing and r.missing.p_value is not None]
    adjusted = dict(zip((key for key, _ in family), adjust([p for _, p in family], config["correction"]), strict=True))
    effects = {**DEFAULT_EFFECT, **config.get("min_effect", {})}
    chosen = config.get("columns")
    per_column: Mapping[str, Any] = chosen if isinstance(chosen, dict) else {}
    psi_threshold = (config.get("psi") or {}).get("threshold")
    alpha = config["alpha"]
    out = []
    for r in raw:
        floors = column_thresholds(effects, per_column.get(r.column, {}))
        missing = r.missing and _missing_verdict(r.missing, adjusted.get((r.column, "missing")), floors["missing"], alpha)
        p_adj = adjusted.get((r.column, "distribution"))
        threshold, significant, unstable, gated, unseen = None, False, False, None, r.unseen
        if p_adj is not None:
            threshold = floors[r.effect_name]
            significant = p_adj < alpha and r.effect is not None and r.effect >= threshold
            if psi_threshold is not None and r.psi is not None and r.psi_min_expected is not None:
                gated = r.psi_min_expected >= PSI_MIN_PER_BIN
                unstable = gated and r.psi >= psi_threshold
            if unseen is not None:
                unseen = replace(unseen, threshold=floors["unseen"], drifted=p_adj < alpha and unseen.share >= floors["unseen"])
        verdicts = {
            "distribution": significant,
            "psi": unstable,
            "missing": bool(missing and missing.drifted),
            "unseen": bool(unseen and unseen.drifted),
        }
        reasons = tuple(name for name, hit in verdicts.items() if hit)
        out.append(
            replace(
                r,
                p_value_adjusted=p_adj,
                threshold=threshold,
                psi_gated=gated,
                missing=missing,
                unseen=unseen,
                drifted=bool(reasons),
                reasons=reasons,
            )
        )
    return out


def _missing_verdict(missing: MissingResult, p_adj: float | None, floor: float, alpha: float) -> MissingResult:
    drifted = p_adj is not None and p_adj < alpha and abs(missing.effect) >= floor
    return replace(missing, p_value_adjusted=p_adj, threshold=floor, drifted=drifted)


def column_thresholds(effects: Mapping[str, float], options: Mapping[str, Any]) -> dict[str, float]:
    """The stage's floors with a column's own: `min_effect` is a map, or a number for its distribution effect."""
    own = options.get("min_effect", {})
    if isinstance(own, dict):
        return {**effects, **own}
    return {**effects, "wasserstein": own, "cramers_v": own}
