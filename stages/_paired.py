"""model.gate's paired comparison: the accepted model and the candidate scored on the same test rows.

The per-row difference between two models on the same rows varies far less than either model's
score on its own (most rows both get right), so a paired bootstrap can tell a real drop from
noise where comparing the candidate's interval with a fixed baseline figure cannot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice.engine.plugin import StageFailed
from sluice.stages import _metrics

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Half the candidate's rows must also be baseline rows: fewer, and the comparison is about another test set.
MIN_SHARED = 0.5
# The power statement's contract (issue 10): a drop of DETECT_AT × the tolerance caught nine times in ten.
DETECT_AT = 3.0
Z_POWER = 1.2815515655446004  # the normal quantile of 0.9
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Rows:
    """One model's per-row predictions, as sklearn.evaluate writes them."""

    keys: np.ndarray | None  # row_key: a digest of the test row, so reordered rows still pair
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None
    scores: np.ndarray | None

    def take(self, index: np.ndarray) -> Rows:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Rows(pick(self.keys), self.y_true[index], self.y_pred[index], pick(self.proba), pick(self.scores))

    def value(self, metric: str, rows: np.ndarray | None, floor: float) -> np.ndarray:
        """The metric on each resample of `rows` (None: once, on every row)."""
        import numpy as np

        index = np.arange(len(self.y_true))[None, :] if rows is None else rows
        labels = list(range(self.proba.shape[1])) if self.proba is not None else []
        return _metrics.resampled(metric, self.y_true, self.y_pred, self.proba, labels, index, self.scores, floor)


def from_table(table: pd.DataFrame) -> Rows:
    if not {"y_true", "y_pred"} <= set(table.columns):
        raise StageFailed("the predictions table needs y_true and y_pred columns (as sklearn.evaluate writes them)")
    proba_columns = sorted((c for c in table.columns if str(c).startswith("proba_")), key=lambda c: int(str(c)[6:]))
    return Rows(
        table["row_key"].astype(str).to_numpy() if "row_key" in table.columns else None,
        table["y_true"].to_numpy(),
        table["y_pred"].to_numpy(),
        table[proba_columns].to_numpy(dtype=float) if proba_columns else None,
        table["score"].to_numpy(dtype=float) if "score" in table.columns else None,
    )


def align(baseline: Rows, candidate: Rows) -> tuple[Rows, Rows] | str:
    """Both models on their shared rows in one order, or why they cannot be paired."""
    import numpy as np

    if baseline.keys is None or candidate.keys is None:
        same = len(baseline.y_true) == len(candidate.y_true) and np.array_equal(baseline.y_true, candidate.y_true)
        return (baseline, candidate) if same else "the predictions carry no row_key and their rows differ"
    shared, b_index, c_index = np.intersect1d(baseline.keys, candidate.keys, return_indices=True)
    if len(shared) < MIN_SHARED * len(candidate.keys):
        return f"the test rows changed since the baseline was accepted ({len(shared)} of {len(candidate.keys)} rows in common)"
    b, c = baseline.take(b_index), candidate.take(c_index)
    if not np.array_equal(b.y_true, c.y_true):
        return "the same row keys carry different y_true values"
    return b, c


@dataclass(frozen=True)
class Paired:
    """One metric for both models on the same rows; `loss` is how much worse the candidate is."""

    rows: int
    baseline: float
    current: float
    loss: float
    bound: float | None  # the upper `confidence` bound of the loss, from the paired bootstrap
    margin: float | None  # bound − loss: how far noise alone can push the loss at this test-set size
    lower: float | None = None  # the lower `confidence` bound of the loss: above 0, the drop is credibly real
    sd: float | None = None  # the bootstrap standard deviation of the loss
    p_no_drop: float | None = None  # share of resamples with no loss (ties at 0 count half: mid-p): small, the drop is real


def compare(metric: str, greater_is_better: bool, b: Rows, c: Rows, bootstrap: Mapping[str, Any] | None, floor: float) -> Paired | None:
    """None when the metric is undefined on these rows."""
    import numpy as np

    baseline, current = float(b.value(metric, None, floor)[0]), float(c.value(metric, None, floor)[0])
    if not (math.isfinite(baseline) and math.isfinite(current)):
        return None
    sign = 1.0 if greater_is_better else -1.0
    loss = sign * (baseline - current)
    if bootstrap is None:
        return Paired(len(b.y_true), baseline, current, loss, None, None)
    # The same resampled rows for both models: the difference is paired row by row.
    rows = np.random.default_rng(bootstrap["seed"]).integers(0, len(b.y_true), size=(bootstrap["resamples"], len(b.y_true)))
    losses = sign * (b.value(metric, rows, floor) - c.value(metric, rows, floor))
    losses = losses[~np.isnan(losses)]
    if not len(losses):
        return Paired(len(b.y_true), baseline, current, loss, None, None)
    bound = max(float(np.quantile(losses, bootstrap["confidence"])), loss)
    lower = min(float(np.quantile(losses, 1.0 - bootstrap["confidence"])), loss)
    # Mid-p: accuracy's paired loss is a count over few discordant rows, and many resamples land
    # exactly on 0; counting them whole makes the test conservative (90 % detection at 3× the
    # tolerance on 143 rows instead of 96 %, same false alarms; see docs/stages.md).
    ties = np.abs(losses) <= TOLERANCE
    p_no_drop = float(np.mean((losses < 0) & ~ties) + 0.5 * np.mean(ties))
    return Paired(len(b.y_true), baseline, current, loss, bound, bound - loss, lower, float(np.std(losses)), p_no_drop)


def paired_power(metric: str, paired: Paired, limit: float, confidence: float, decision: str) -> dict[str, Any]:
    """What this test set can decide about a drop of `limit`, under `decision`, in a sentence a user can act on.

    Normal approximation around the bootstrap's standard deviation of the loss: a statement about
    the gate's error rates at this size, not the decision itself (the decision uses the bootstrap).
    """
    from statistics import NormalDist

    sd, margin, rows = paired.sd or 0.0, paired.margin or 0.0, paired.rows
    z = NormalDist().inv_cdf(confidence)
    noise = z * sd  # the smallest observed loss that is credibly above 0
    if decision == "regression":
        threshold = max(limit, noise)
        false_alarm = _exceeds(threshold, sd)
        detectable = threshold + Z_POWER * sd
        enough = detectable <= DETECT_AT * limit + TOLERANCE
        needed = math.ceil(rows * (noise / limit) ** 2) if limit > 0 and noise > limit else None
        caught = f"it catches a drop of {detectable:.3g} nine times in ten, and fails an equally good model {false_alarm:.0%} of the time"
        if enough:
            message = f"with {rows} rows the gate fails a drop in {metric} above {threshold:.3g} that is credibly above 0; " + caught
        else:
            message = (
                f"with {rows} rows a drop of {limit:g} in {metric} cannot be told from noise: only a drop above {noise:.3g} is "
                f"credibly a drop, so smaller regressions pass; "
                + caught
                + (f"; about {needed} test rows would be needed" if needed else "")
            )
    else:
        false_alarm = _exceeds(limit - margin, sd)
        detectable = max(limit - margin + Z_POWER * sd, 0.0)
        enough = false_alarm <= 1.0 - confidence + TOLERANCE
        needed = math.ceil(rows * ((margin + noise) / limit) ** 2) if limit > 0 else None
        if margin >= limit:
            message = (
                f"with {rows} rows a drop of {limit:g} in {metric} cannot be told from noise: the upper {confidence:.0%} bound "
                f"sits {margin:.3g} above the observed loss, so even a model exactly as good as the baseline fails"
            )
        elif not enough:
            message = (
                f"with {rows} rows non-inferiority within {limit:g} in {metric} cannot be certified reliably: "
                f"an equally good model fails about {false_alarm:.0%} of the time"
            )
        else:
            message = (
                f"with {rows} rows the gate fails a loss of {limit:g} in {metric} and passes a model whose observed loss "
                f"is under {limit - margin:.3g}; an equally good model fails about {false_alarm:.0%} of the time"
            )
        if not enough and needed:
            message += f"; about {needed} test rows would be needed"
    return {
        "rows": rows,
        "tolerance": limit,
        "margin": margin,
        "enough": enough,
        "message": message,
        "decision": decision,
        "sd": sd,
        "detectable": detectable,
        "false_alarm": false_alarm,
    }


def _exceeds(threshold: float, sd: float) -> float:
    """P(observed loss > threshold) for an equally good model whose loss varies with this sd."""
    from statistics import NormalDist

    if sd <= 0.0:
        return 0.0 if threshold >= 0.0 else 1.0
    return 1.0 - NormalDist().cdf(threshold / sd)


def unpaired_power(metric: str, rows: int, limit: float, margin: float, confidence: float) -> dict[str, Any]:
    """Unpaired: the candidate's own interval hides regressions up to `margin`."""
    message = (
        f"unpaired: with {rows} rows a drop of up to {margin:.3g} in {metric} is within the candidate's own "
        f"{confidence:.0%} interval, so regressions that small pass unnoticed"
    )
    if margin >= limit:
        message += f"; a drop of {limit:g} cannot be told from noise"
    return {"rows": rows, "tolerance": limit, "margin": margin, "enough": margin < limit, "message": message}
