"""model.gate: per-metric rules against a baseline; on pass the metrics become the last accepted ones.

When the accepted model's per-row predictions are kept (they are, from the first accepted run
on), both models are compared on the same test rows. With `bootstrap` the drop rules follow
`decision`: `regression` (default) fails a drop that exceeds the tolerance and that a paired
bootstrap shows is credibly above 0, so an equally good model fails at most 1 − confidence of
the time; `non_inferiority` fails unless the upper confidence bound of the loss is within the
tolerance, a certification that needs a large test set. The report says what this test set can
tell from noise. Without kept predictions the gate falls back to the unpaired rule and says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, did_you_mean
from sluice.stages import _metrics, _paired
from sluice.stages._accepted import read_accepted, write_accepted, write_strict_json
from sluice.stages._tables import input_anchor, input_path, read_json, read_table, sha256_file, sole_output, text_table, write_table

BOOTSTRAP_DEFAULTS = {"resamples": 1000, "seed": 0, "confidence": 0.95}
DECISIONS = ("regression", "non_inferiority")
RELATIVE_RULES = ("max_drop", "max_drop_pct")
# log_loss on kept predictions floors each row's probability for its true class: a forest's hard 0
# would cost −log(eps) = 36 nats, and one such row on 143 moves log_loss by 0.25, model unchanged.
LOG_LOSS_FLOOR = 1e-3
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
    inputs = (
        Port("metrics", desc="JSON metrics from sklearn.evaluate"),
        Port("baseline", required=False, desc="JSON metrics to compare with (baseline: file)"),
        Port("predictions", required=False, desc="per-row predictions (bootstrap, paired comparison)"),
        Port("model", required=False, desc="the model directory the report names"),
    )
    outputs = (Port("report", desc="JSON verdict per rule", any_name=True, keep_on_failure=True),)

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
        baseline, source, accepted = _baseline(ctx)
        bootstrap = {**BOOTSTRAP_DEFAULTS, **config["bootstrap"]} if "bootstrap" in config else None
        decision = str(config.get("decision", DECISIONS[0]))
        candidate = (
            _paired.from_table(read_table(input_path(ctx, "predictions"), "predictions"))
            if bootstrap or "predictions" in ctx.inputs
            else None
        )
        pairs, why = _pairs(ctx, source, accepted, candidate)
        floor = float(config.get("log_loss_floor", LOG_LOSS_FLOOR))
        intervals = _intervals(candidate, config, bootstrap) if bootstrap and candidate is not None and pairs is None else {}
        verdicts: list[Verdict] = []
        power: dict[str, dict[str, Any]] = {}
        for metric, rules in config["rules"].items():
            if metric in undefined:
                verdicts += undefined_verdicts(metric, rules, baseline.get(metric), undefined[metric])
                continue
            greater_is_better = rules.get("greater_is_better", metric not in _metrics.LOWER_IS_BETTER)
            paired = _paired.compare(metric, greater_is_better, *pairs, bootstrap, floor) if pairs and metric in _metrics.ALL else None
            if paired is not None:
                verdicts += judge_paired(metric, rules, current[metric], paired, bootstrap, floor, decision)
                limit = _absolute_limit(rules, paired.baseline)
                if paired.margin is not None and limit is not None and bootstrap:
                    power[metric] = _paired.paired_power(metric, paired, limit, bootstrap["confidence"], decision)
                continue
            found = judge(
                metric,
                rules,
                current[metric],
                baseline.get(metric),
                intervals.get(metric),
                config.get("require_baseline", False),
                strict=decision == "non_inferiority",
            )
            if bootstrap and metric in intervals:
                found = [replace(v, note=f"{v.note}; unpaired: {why}") if v.rule in RELATIVE_RULES else v for v in found]
                limit = _absolute_limit(rules, baseline.get(metric))
                low, high = intervals[metric]
                if limit is not None and candidate is not None:
                    margin = (high - current[metric]) if greater_is_better else (current[metric] - low)
                    power[metric] = _paired.unpaired_power(metric, len(candidate.y_true), limit, margin, bootstrap["confidence"])
            verdicts += found
        failed = [v for v in verdicts if v.verdict == "fail"]
        identity = _model_identity(ctx)
        write_strict_json(
            sole_output(ctx, "report"),
            {
                "passed": not failed,
                "model": identity,
                "baseline_source": source,
                "baseline": baseline,
                "current": {**current, **dict.fromkeys(undefined)},
                "undefined": undefined,
                "bootstrap": {**bootstrap, "intervals": intervals} if bootstrap else None,
                "decision": decision if bootstrap else "point estimate",
                "comparison": {
                    "paired": pairs is not None,
                    "rows": len(pairs[0].y_true) if pairs else None,
                    "baseline_model": (accepted or {}).get("model") if pairs else None,
                    "why": why,
                },
                "power": power,
                "verdicts": [asdict(v) for v in verdicts],
            },
        )
        details = verdict_table(verdicts) + "".join(f"\n{p['message']}" for p in power.values() if not p["enough"])
        if failed:
            raise StageFailed(f"model gate failed: {len(failed)} of {len(verdicts)} rule(s) broken", details)
        if config.get("accept", True):
            _accept(ctx, current, candidate, identity)
        ctx.log.info("model gate passed (%d rules, baseline: %s)\n%s", len(verdicts), source, details)


def verdict_table(verdicts: Iterable[Verdict]) -> str:
    return text_table(
        ("metric", "baseline", "current", "rule", "judged on", "verdict"),
        (
            (v.metric, v.baseline, v.current, f"{v.rule} {v.limit:g}", v.judged, v.verdict.upper() + (f" ({v.note})" if v.note else ""))
            for v in verdicts
        ),
    )


def undefined_verdicts(metric: str, rules: Mapping[str, Any], baseline: float | None, reason: str) -> list[Verdict]:
    """A metric with no value on this test set fails every rule: the gate cannot tell it is no worse."""
    return [
        Verdict(metric, rule, float(rules[rule]), baseline, None, None, "fail", f"undefined: {reason}")
        for rule in ("min", "max", *RELATIVE_RULES)
        if rule in rules
    ]


def judge_paired(
    metric: str,
    rules: Mapping[str, Any],
    current: float,
    paired: _paired.Paired,
    bootstrap: Mapping[str, Any] | None,
    floor: float,
    decision: str = DECISIONS[0],
) -> list[Verdict]:
    """Drop rules on the loss of the candidate against the accepted model on the same rows.

    Without a bootstrap the observed loss must be within the tolerance. With one, `regression`
    fails a loss over the tolerance whose lower confidence bound is above 0 (a drop the test set
    cannot tell from noise passes); `non_inferiority` fails unless the upper bound is within it.
    """
    out = list(judge(metric, {k: v for k, v in rules.items() if k in ("min", "max", "greater_is_better")}, current, None, None, False))
    suffix = f", paired on {paired.rows} rows" + (f", probabilities floored at {floor:g}" if metric == "log_loss" else "")
    for rule in RELATIVE_RULES:
        if rule not in rules:
            continue
        limit = _absolute_limit({rule: rules[rule]}, paired.baseline)
        assert limit is not None  # a paired comparison always has a baseline value
        judged, ok, how = _paired_rule(paired, limit, bootstrap, decision)
        out.append(Verdict(metric, rule, float(rules[rule]), paired.baseline, paired.current, judged, _verdict(ok), how + suffix))
    return out


def _paired_rule(paired: _paired.Paired, limit: float, bootstrap: Mapping[str, Any] | None, decision: str) -> tuple[float, bool, str]:
    """The value judged, whether the rule passes, and how it was decided."""
    if paired.bound is None or bootstrap is None:
        return paired.loss, paired.loss <= limit + TOLERANCE, f"loss {paired.loss:.4g}"
    if decision == "non_inferiority":
        how = f"upper {bootstrap['confidence']:.0%} bound of the loss {paired.bound:.4g}, observed {paired.loss:.4g}"
        return paired.bound, paired.bound <= limit + TOLERANCE, how
    alpha = 1.0 - bootstrap["confidence"]
    chance = paired.p_no_drop if paired.p_no_drop is not None else 1.0
    if paired.loss <= limit + TOLERANCE:
        return paired.loss, True, f"loss {paired.loss:.4g} within the tolerance"
    if chance > alpha:
        return paired.loss, True, f"loss {paired.loss:.4g} over the tolerance but within noise: P(no drop) {chance:.3g} > {alpha:.3g}"
    return paired.loss, False, f"loss {paired.loss:.4g} over the tolerance and credibly a drop: P(no drop) {chance:.3g} ≤ {alpha:.3g}"


def _absolute_limit(rules: Mapping[str, Any], baseline: float | None) -> float | None:
    """The first drop rule's tolerance in the metric's units (max_drop_pct is a share of the baseline)."""
    if "max_drop" in rules:
        return float(rules["max_drop"])
    if "max_drop_pct" in rules and baseline is not None:
        return float(rules["max_drop_pct"]) / 100.0 * abs(baseline)
    return None


def judge(
    metric: str,
    rules: Mapping[str, Any],
    current: float,
    baseline: float | None,
    interval: tuple[float, float] | None,
    require_baseline: bool,
    strict: bool = False,
) -> list[Verdict]:
    """One verdict per rule of one metric.

    With an interval, drop rules are judged at its end kindest to the current model (a drop must
    survive it to count), or with `strict` (non-inferiority) at its unkindest end.
    """
    greater_is_better = rules.get("greater_is_better", metric not in _metrics.LOWER_IS_BETTER)
    kind = greater_is_better != strict
    judged = (interval[1] if kind else interval[0]) if interval else current
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
        worsening = (baseline - judged) if greater_is_better else (judged - baseline)
        if rule == "max_drop_pct":
            worsening = 100.0 * worsening / abs(baseline) if baseline else (float("inf") if worsening > 0 else 0.0)
        unit = "%" if rule == "max_drop_pct" else ""
        note = f"worse by {worsening:.4g}{unit}" if worsening > 0 else f"better by {-worsening:.4g}{unit}"
        out.append(Verdict(metric, rule, limit, baseline, current, judged, _verdict(worsening <= limit + TOLERANCE), note))
    return out


def _model_identity(ctx: StageContext) -> dict[str, str] | None:
    """The verified sha256 of the optional `model` input, so k8s.deploy can tell which model passed."""
    if "model" not in ctx.inputs:
        return None
    from sluice.stages.serving.model import ModelError, read_verified

    try:
        metadata, _ = read_verified(input_path(ctx, "model"), anchor=input_anchor(ctx, "model"))
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
    reasons = data.get("undefined")
    reasons = reasons if isinstance(reasons, dict) else {}
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


def _baseline(ctx: StageContext) -> tuple[dict[str, float], str, dict[str, Any] | None]:
    """The baseline metrics, where they came from, and the accepted record when that is the source."""
    choice = ctx.config.get("baseline", "auto")
    if choice == "file" or (choice == "auto" and "baseline" in ctx.inputs):
        return _read_metrics(input_path(ctx, "baseline"), "baseline")[0], "file", None
    accepted = read_accepted(ctx)
    if accepted is None:
        return {}, "none (nothing accepted yet)", None
    return {k: float(v) for k, v in accepted["metrics"].items() if isinstance(v, int | float)}, "last accepted", accepted


def _pairs(
    ctx: StageContext, source: str, accepted: Mapping[str, Any] | None, candidate: _paired.Rows | None
) -> tuple[tuple[_paired.Rows, _paired.Rows] | None, str]:
    """The accepted model's and the candidate's predictions on their shared rows, or why there are none."""
    if candidate is None:
        return None, "no predictions input: the gate compares metric values only"
    if source == "file":
        return None, "the baseline is a metrics file, with no per-row predictions of the baseline model"
    if accepted is None:
        return None, "nothing accepted yet: this run's predictions become the baseline if it passes"
    kept = ctx.state_dir / str(accepted.get("predictions", ""))
    if not accepted.get("predictions") or not kept.is_file():
        return None, "the accepted record keeps no per-row predictions (it was accepted without them)"
    aligned = _paired.align(_paired.from_table(read_table(kept, "accepted predictions")), candidate)
    return (None, aligned) if isinstance(aligned, str) else (aligned, "")


def _accept(ctx: StageContext, metrics: Mapping[str, float], candidate: _paired.Rows | None, identity: Mapping[str, str] | None) -> None:
    """Record the metrics and keep this model's per-row predictions, named by its digest, for the next paired comparison."""
    record: dict[str, Any] = {"metrics": dict(metrics), "stage": ctx.stage, "pipeline": ctx.pipeline}
    if candidate is not None:
        path = input_path(ctx, "predictions")
        digest = identity["sha256"] if identity else sha256_file(path)
        name = f"predictions-{digest[:16]}.parquet"
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        for old in ctx.state_dir.glob("predictions-*.parquet"):
            old.unlink()
        write_table(ctx.state_dir / name, read_table(path, "predictions"))
        record.update(model=digest, predictions=name)
    write_accepted(ctx, record)


def _intervals(candidate: _paired.Rows, config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Unpaired fallback: bootstrap confidence intervals of each gated metric of the candidate alone."""
    import numpy as np

    n = len(candidate.y_true)
    rows = np.random.default_rng(options["seed"]).integers(0, n, size=(options["resamples"], n))
    tail = (1.0 - options["confidence"]) / 2.0
    out = {}
    for metric in config["rules"]:
        if metric in _metrics.ALL:
            values = candidate.value(metric, rows, _metrics.LOG_LOSS_EPS)
            values = values[~np.isnan(values)]
            if len(values):
                low, high = np.quantile(values, [tail, 1.0 - tail])
                out[metric] = (float(low), float(high))
    return out
