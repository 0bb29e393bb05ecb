"""model.gate: per-metric rules against a baseline; on pass the metrics become the last accepted ones.

With `bootstrap`, a drop counts as a regression only when it is significant: the test rows are
resampled (seeded, so the verdict is reproducible) and the rule must fail even at the end of
the confidence interval most favourable to the current model. A small test set then cannot
fail a build on noise alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import schemas
from engine.plugin import ConfigProblem, Plugin, StageContext, StageFailed, did_you_mean
from stages import _metrics
from stages._accepted import read_accepted, write_accepted, write_strict_json
from stages._tables import input_path, read_json, read_table, sole_output, text_table

BOOTSTRAP_DEFAULTS = {"resamples": 1000, "seed": 0, "confidence": 0.95}
RELATIVE_RULES = ("max_drop", "max_drop_pct")
# Metrics are floats: 0.95 - 0.93 is 0.020000000000000018, which must not break `max_drop: 0.02`.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Verdict:
    metric: str
    rule: str
    limit: float
    baseline: float | None
    current: float | None  # None: undefined on this test set (see note)
    judged: float | None  # the value the rule was applied to: current, or a bootstrap interval bound
    verdict: str  # "pass", "fail" or "skip"
    note: str = ""


class GateStage(Plugin):
    name = "model.gate"
    version = "1"
    config_schema = schemas.load("stages/model.gate")

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        for metric, rules in config.get("rules", {}).items():
            if metric not in _metrics.ALL and "greater_is_better" not in rules:
                yield ConfigProblem(
                    f"'{metric}' is not a built-in metric, so its direction is unknown: set greater_is_better",
                    ("rules", metric),
                    did_you_mean(metric, _metrics.ALL),
                )
            if "min" in rules and "max" in rules and rules["min"] > rules["max"]:
                yield ConfigProblem(f"min {rules['min']} is greater than max {rules['max']}", ("rules", metric, "min"))

    def run(self, ctx: StageContext) -> None:
        config = ctx.config
        current, undefined = _read_metrics(input_path(ctx, "metrics"), "metrics")
        missing = [m for m in config["rules"] if m not in current and m not in undefined]
        if missing:
            hints = {m: did_you_mean(m, current) for m in missing}
            raise StageFailed(
                f"metric(s) {', '.join(missing)} not in the metrics input",
                "\n".join(f"  {m}" + (f" (did you mean '{h}'?)" if h else "") for m, h in hints.items())
                + f"\navailable: {', '.join(sorted(current))}",
            )
        baseline, source = _baseline(ctx)
        intervals = _intervals(ctx, config) if "bootstrap" in config else {}
        verdicts = [
            v
            for metric, rules in config["rules"].items()
            for v in (
                undefined_verdicts(metric, rules, baseline.get(metric), undefined[metric])
                if metric in undefined
                else judge(metric, rules, current[metric], baseline.get(metric), intervals.get(metric), config.get("require_baseline", False))
            )
        ]
        failed = [v for v in verdicts if v.verdict == "fail"]
        write_strict_json(
            sole_output(ctx, "report"),
            {
                "passed": not failed,
                "model": _model_identity(ctx),
                "baseline_source": source,
                "baseline": baseline,
                "current": {**current, **dict.fromkeys(undefined)},
                "undefined": undefined,
                "bootstrap": {**BOOTSTRAP_DEFAULTS, **config["bootstrap"], "intervals": intervals} if intervals else None,
                "verdicts": [asdict(v) for v in verdicts],
            },
        )
        if failed:
            raise StageFailed(f"model gate failed: {len(failed)} of {len(verdicts)} rule(s) broken", verdict_table(verdicts))
        if config.get("accept", True):
            write_accepted(ctx, {"metrics": current, "stage": ctx.stage, "pipeline": ctx.pipeline})
        ctx.log.info("model gate passed (%d rules, baseline: %s)\n%s", len(verdicts), source, verdict_table(verdicts))


def verdict_table(verdicts: Iterable[Verdict]) -> str:
    return text_table(
        ("metric", "baseline", "current", "rule", "judged on", "verdict"),
        ((v.metric, v.baseline, v.current, f"{v.rule} {v.limit:g}", v.judged, v.verdict.upper() + (f" ({v.note})" if v.note else "")) for v in verdicts),
    )


def undefined_verdicts(metric: str, rules: Mapping[str, Any], baseline: float | None, reason: str) -> list[Verdict]:
    """A metric with no value on this test set fails every rule: the gate cannot tell it is no worse."""
    return [
        Verdict(metric, rule, float(rules[rule]), baseline, None, None, "fail", f"undefined: {reason}")
        for rule in ("min", "max", *RELATIVE_RULES)
        if rule in rules
    ]


def judge(
    metric: str,
    rules: Mapping[str, Any],
    current: float,
    baseline: float | None,
    interval: tuple[float, float] | None,
    require_baseline: bool,
) -> list[Verdict]:
    """One verdict per rule of one metric."""
    greater_is_better = rules.get("greater_is_better", metric not in _metrics.LOWER_IS_BETTER)
    # The end of the interval kindest to the current model: a drop must survive it to count.
    favourable = (interval[1] if greater_is_better else interval[0]) if interval else current
    out = []
    for rule in ("min", "max", *RELATIVE_RULES):
        if rule not in rules:
            continue
        limit = float(rules[rule])
        if rule == "min":
            out.append(Verdict(metric, rule, limit, baseline, current, current, _verdict(current >= limit - TOLERANCE)))
            continue
        if rule == "max":
            out.append(Verdict(metric, rule, limit, baseline, current, current, _verdict(current <= limit + TOLERANCE)))
            continue
        if baseline is None:
            verdict = "fail" if require_baseline else "skip"
            out.append(Verdict(metric, rule, limit, None, current, current, verdict, "no baseline value"))
            continue
        worsening = (baseline - favourable) if greater_is_better else (favourable - baseline)
        if rule == "max_drop_pct":
            worsening = 100.0 * worsening / abs(baseline) if baseline else (float("inf") if worsening > 0 else 0.0)
        unit = "%" if rule == "max_drop_pct" else ""
        note = f"worse by {worsening:.4g}{unit}" if worsening > 0 else f"better by {-worsening:.4g}{unit}"
        out.append(Verdict(metric, rule, limit, baseline, current, favourable, _verdict(worsening <= limit + TOLERANCE), note))
    return out


def _model_identity(ctx: StageContext) -> dict[str, str] | None:
    """The verified sha256 of the optional `model` input, so k8s.deploy can tell which model passed."""
    if "model" not in ctx.inputs:
        return None
    from stages.serving.model import ModelError, read_verified

    try:
        metadata, _ = read_verified(input_path(ctx, "model"))
    except ModelError as exc:
        raise StageFailed(str(exc)) from exc
    return {"sha256": metadata.model_hash, "version": metadata.version}


def _verdict(ok: bool) -> str:
    return "pass" if ok else "fail"


def _read_metrics(path: Path, what: str) -> tuple[dict[str, float], dict[str, str]]:
    """Metric values, and the metrics the file marks undefined (null, or NaN from older files) with why."""
    data = read_json(path, f"{what} file")
    if not isinstance(data, dict):
        raise StageFailed(f"{what} file {path} must hold a mapping of metric name to number")
    reasons = data.get("undefined") if isinstance(data.get("undefined"), dict) else {}
    values, undefined = {}, {}
    for key, value in data.items():
        if isinstance(value, bool) or key == "undefined":
            continue
        if value is None:
            undefined[key] = str(reasons.get(key, "null in the metrics file"))
        elif isinstance(value, int | float):
            if math.isfinite(value):
                values[key] = float(value)
            else:
                undefined[key] = str(reasons.get(key, "not a number in the metrics file"))
    return values, undefined


def _baseline(ctx: StageContext) -> tuple[dict[str, float], str]:
    """The baseline metrics and where they came from."""
    choice = ctx.config.get("baseline", "auto")
    if choice == "file" or (choice == "auto" and "baseline" in ctx.inputs):
        return _read_metrics(input_path(ctx, "baseline"), "baseline")[0], "file"
    accepted = read_accepted(ctx)
    if accepted is None:
        return {}, "none (nothing accepted yet)"
    return {k: float(v) for k, v in accepted["metrics"].items()}, "last accepted"


def _intervals(ctx: StageContext, config: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Bootstrap confidence intervals of each gated metric, from the per-row predictions."""
    import numpy as np

    options = {**BOOTSTRAP_DEFAULTS, **config["bootstrap"]}
    table = read_table(input_path(ctx, "predictions"), "predictions")
    if not {"y_true", "y_pred"} <= set(table.columns):
        raise StageFailed("the predictions table needs y_true and y_pred columns (as sklearn.evaluate writes them)")
    y_true, y_pred = table["y_true"].to_numpy(), table["y_pred"].to_numpy()
    proba_columns = sorted((c for c in table.columns if str(c).startswith("proba_")), key=lambda c: int(str(c)[6:]))
    proba = table[proba_columns].to_numpy() if proba_columns else None
    labels = list(range(len(proba_columns)))
    rows = np.random.default_rng(options["seed"]).integers(0, len(table), size=(options["resamples"], len(table)))
    tail = (1.0 - options["confidence"]) / 2.0
    out = {}
    for metric in config["rules"]:
        if metric in _metrics.ALL:
            values = _metrics.resampled(metric, y_true, y_pred, proba, labels, rows)
            values = values[~np.isnan(values)]
            if len(values):
                low, high = np.quantile(values, [tail, 1.0 - tail])
                out[metric] = (float(low), float(high))
    return out
