"""sklearn.train: fits preprocessing + estimator as one sklearn Pipeline, optionally searched, saved with metadata."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed, did_you_mean, write_json
from sluice.stages._model import FORMAT, METADATA_FILE, MODEL_FILES, library_versions
from sluice.stages._tables import input_path, kind_of, plain, read_table, require_columns, sha256_file, sole_output

if TYPE_CHECKING:
    import pandas as pd

STEP = "estimator"  # the estimator's step name in the Pipeline; search params are prefixed with it
NUMERIC_KINDS = ("int", "float")
CATEGORICAL_KINDS = ("string", "category", "bool")
# Importing a module runs its code, so `estimator:` may only name a class under these (plus the
# stage's `allow_modules`), judged from the text alone before anything is imported.
DEFAULT_MODULES = ("sklearn",)
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


class TrainStage(Plugin):
    name = "sklearn.train"
    version = "1"
    config_schema = schemas.load("stages/sklearn.train")
    inputs = (Port("train", desc="the training table"),)
    outputs = (Port("model", desc="the model directory", any_name=True),)

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        problem = estimator_problem(config.get("estimator"), allowed_modules(config))
        if problem is not None:
            yield problem
        target = config.get("target")
        if target in config.get("features", ()):
            yield ConfigProblem(f"the target '{target}' is also listed as a feature", ("features",))
        search = config.get("search", {})
        if search.get("kind") == "grid":
            for key, values in search.get("grid", {}).items():
                if not isinstance(values, list):
                    yield ConfigProblem("a grid search needs a list of values, not a distribution", ("search", "grid", key))
        if "n_iter" in search and search.get("kind") != "random":
            yield ConfigProblem("n_iter applies to a random search only", ("search", "n_iter"))

    def preflight(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        estimator_class, problem = import_estimator(config["estimator"], allowed_modules(config))
        if problem is not None:
            yield problem
            return
        assert estimator_class is not None  # import_estimator gives a class or a problem
        valid = sorted(estimator_class().get_params(deep=False))
        params = config.get("params", {})
        unknown = list(_unknown_params(params, valid, ("params",)))
        yield from unknown
        search = config.get("search", {})
        yield from _unknown_params({k: v for k, v in search.get("grid", {}).items() if "__" not in k}, valid, ("search", "grid"))
        if not unknown:
            yield from _invalid_values(estimator_class, params)
        yield from _task_problems(estimator_class, config.get("task", "auto"))
        if "scoring" in search:
            from sklearn.metrics import get_scorer_names

            if search["scoring"] not in get_scorer_names():
                hint = did_you_mean(search["scoring"], get_scorer_names())
                yield ConfigProblem(f"unknown scoring '{search['scoring']}'", ("search", "scoring"), hint)

    def run(self, ctx: StageContext) -> None:
        config = ctx.config
        problems = list(self.check(config)) or list(self.preflight(config))
        if problems:  # the engine checks too; this keeps a direct call from failing halfway
            lines = [f"with.{'.'.join(map(str, p.path))}: {p.message}" for p in problems]
            raise StageFailed(f"invalid sklearn.train config: {lines[0]}", "\n".join(lines[1:]))
        source = input_path(ctx, "train")
        frame = read_table(source, "training")
        target = config["target"]
        features = feature_columns(frame, config)
        require_columns(frame, [target, *features], "training")
        if frame[target].isna().any():
            raise StageFailed(f"target column '{target}' has {int(frame[target].isna().sum())} null value(s)")
        estimator_class, _ = import_estimator(config["estimator"], allowed_modules(config))
        assert estimator_class is not None  # preflight found no problem
        pipeline = build_pipeline(frame, features, estimator_class(**config.get("params", {})), config.get("preprocessing", {}))
        task = _task(estimator_class, config.get("task", "auto"))
        fitted, best_params, cv_score = fit(pipeline, frame[features], frame[target], config.get("search"))
        out = sole_output(ctx, "model")
        out.mkdir(parents=True, exist_ok=True)
        model_format = config.get("format", "joblib")
        model_file = MODEL_FILES[model_format]
        (out / model_file).write_bytes(serialize(fitted, model_format))
        versions = library_versions()
        if model_format == "skops":
            from importlib.metadata import version

            versions["skops"] = version("skops")
        write_json(
            out / METADATA_FILE,
            {
                "format": FORMAT,
                "estimator": config["estimator"],
                "task": task,
                "target": target,
                "features": [{"name": name, "dtype": str(frame[name].dtype)} for name in features],
                "classes": fitted.classes_.tolist() if task == "classification" else None,
                "model_file": model_file,
                "model_format": model_format,
                "model_hash": {"algorithm": "sha256", "value": sha256_file(out / model_file)},
                "data_hash": sha256_file(source),
                "library_versions": versions,
                "params": dict(config.get("params", {})),
                "best_params": best_params,
                "cv_score": cv_score,
            },
        )
        searched = f"; best {best_params} (cv score {cv_score:.4g})" if best_params is not None else ""
        ctx.log.info("trained %s on %d rows × %d features%s", config["estimator"], len(frame), len(features), searched)


def serialize(fitted: Any, model_format: str) -> bytes:
    """The model file's bytes. skops only when every type in it is one the serving loader trusts,
    so what is written here can always be loaded there without executing code."""
    if model_format == "joblib":
        import io

        import joblib

        buffer = io.BytesIO()
        joblib.dump(fitted, buffer)
        return buffer.getvalue()
    try:
        import skops.io as sio
    except ImportError:
        raise StageFailed("format: skops needs the skops package: pip install skops") from None
    from sluice.stages.serving.model import skops_untrusted

    data = sio.dumps(fitted)
    outside = skops_untrusted(data)
    if outside:
        raise StageFailed(
            f"format: skops cannot hold this model: it contains types outside the trusted list ({', '.join(outside)});"
            " use format: joblib (a pickle, trusted only by its digest)"
        )
    return bytes(data)


def allowed_modules(config: Mapping[str, Any]) -> tuple[str, ...]:
    return (*DEFAULT_MODULES, *config.get("allow_modules", ()))


def estimator_problem(path: Any, allowed: Sequence[str]) -> ConfigProblem | None:
    """Why `path` may not be imported, from its text alone; None when it may."""
    if not isinstance(path, str) or not _DOTTED.fullmatch(path):
        return ConfigProblem(f"{path!r} is not valid: a dotted import path such as sklearn.linear_model.LogisticRegression", ("estimator",))
    if any(path.startswith(f"{prefix}.") for prefix in allowed):
        return None
    head, _, rest = path.partition(".")
    guess = did_you_mean(head, [a.split(".")[0] for a in allowed])
    return ConfigProblem(
        f"'{path}' is not under an allowed module ({', '.join(allowed)}); list its package in allow_modules to use it",
        ("estimator",),
        f"{guess}.{rest}" if guess and guess != head else None,
    )


def import_estimator(path: str, allowed: Sequence[str] = DEFAULT_MODULES) -> tuple[type | None, ConfigProblem | None]:
    """The class at `path`, or a problem naming the closest importable path; imports only allowed paths."""
    refused = estimator_problem(path, allowed)
    if refused is not None:  # validate has said so already; checked again right before importing
        return None, refused
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for depth, attr in enumerate(parts[cut:], start=cut):
            if not hasattr(obj, attr):
                guess = did_you_mean(attr, _attribute_names(obj))
                hint = ".".join([*parts[:depth], guess, *parts[depth + 1 :]]) if guess else None
                owner = ".".join(parts[:depth])
                return None, ConfigProblem(f"cannot import '{path}': {owner} has no '{attr}'", ("estimator",), hint)
            obj = getattr(obj, attr)
        if not (isinstance(obj, type) and hasattr(obj, "fit") and hasattr(obj, "get_params")):
            return None, ConfigProblem(f"'{path}' is not a scikit-learn estimator class", ("estimator",))
        return obj, None
    guess = did_you_mean(parts[0], ("sklearn", "xgboost", "lightgbm", "catboost"))
    hint = ".".join([guess, *parts[1:]]) if guess else None
    return None, ConfigProblem(f"cannot import '{path}': no module named '{parts[0]}'", ("estimator",), hint)


def _attribute_names(obj: Any) -> list[str]:
    names = [n for n in dir(obj) if not n.startswith("_")]
    if hasattr(obj, "__path__"):  # a package: submodules are not attributes until imported
        import pkgutil

        names += [m.name for m in pkgutil.iter_modules(obj.__path__) if not m.name.startswith("_")]
    return names


def _unknown_params(params: Mapping[str, Any], valid: list[str], where: tuple[str, ...]) -> Iterable[ConfigProblem]:
    for key in params:
        if key not in valid:
            same_but_case = [v for v in valid if v.lower() == key.lower()]
            hint = same_but_case[0] if same_but_case else did_you_mean(key, valid)
            yield ConfigProblem(f"unknown estimator param '{key}'", (*where, key), hint)


def _invalid_values(estimator_class: type, params: Mapping[str, Any]) -> Iterable[ConfigProblem]:
    try:
        estimator = estimator_class(**params)
        validate = getattr(estimator, "_validate_params", None)  # sklearn ≥ 1.2: the checks fit() would do
        if validate is not None:
            validate()
    except (ValueError, TypeError) as exc:  # InvalidParameterError is a ValueError
        yield ConfigProblem(str(exc), ("params",))


def _task(estimator_class: type, task: str) -> str:
    from sklearn.base import is_classifier

    if task != "auto":
        return task
    return "classification" if is_classifier(estimator_class()) else "regression"


def _task_problems(estimator_class: type, task: str) -> Iterable[ConfigProblem]:
    from sklearn.base import is_classifier, is_regressor

    estimator = estimator_class()
    if task == "auto" and not (is_classifier(estimator) or is_regressor(estimator)):
        yield ConfigProblem("cannot tell whether the estimator classifies or regresses; set task", ("task",))
    elif task == "classification" and is_regressor(estimator):
        yield ConfigProblem("task is classification but the estimator is a regressor", ("task",))
    elif task == "regression" and is_classifier(estimator):
        yield ConfigProblem("task is regression but the estimator is a classifier", ("task",))


def feature_columns(frame: pd.DataFrame, config: Mapping[str, Any]) -> list[str]:
    if "features" in config:
        return list(config["features"])
    skipped = {config["target"], *config.get("exclude", ())}
    return [str(c) for c in frame.columns if c not in skipped]


def build_pipeline(frame: pd.DataFrame, features: list[str], estimator: Any, options: Mapping[str, Any]) -> Any:
    """Preprocessing by column kind, then the estimator; columns are selected by name, so order is free."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    kinds = {name: kind_of(frame[name]) for name in features}
    unusable = {name: kind for name, kind in kinds.items() if kind not in NUMERIC_KINDS + CATEGORICAL_KINDS}
    if unusable:
        listed = ", ".join(f"{n} ({k}, {frame[n].dtype})" for n, k in unusable.items())
        raise StageFailed(f"features must be numeric or categorical; these are not: {listed}")
    impute = options.get("impute", "none")
    numeric_steps = ([SimpleImputer(strategy=impute)] if impute != "none" else []) + (
        [StandardScaler()] if options.get("scale", False) else []
    )
    categorical_steps = ([SimpleImputer(strategy="most_frequent")] if impute != "none" else []) + (
        [OneHotEncoder(handle_unknown="ignore")] if options.get("one_hot", True) else []
    )
    groups = [
        ("numeric", numeric_steps, [n for n in features if kinds[n] in NUMERIC_KINDS]),
        ("categorical", categorical_steps, [n for n in features if kinds[n] in CATEGORICAL_KINDS]),
    ]
    transformers = [(label, make_pipeline(*steps) if steps else "passthrough", columns) for label, steps, columns in groups if columns]
    return Pipeline([("preprocess", ColumnTransformer(transformers)), (STEP, estimator)])


def fit(pipeline: Any, X: pd.DataFrame, y: pd.Series, search: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any] | None, float | None]:
    """The fitted pipeline, and with a search its best params (unprefixed) and mean CV score."""
    try:
        if not search:
            return pipeline.fit(X, y), None, None
        searcher = _searcher(pipeline, search)
        searcher.fit(X, y)
    except (ValueError, TypeError) as exc:  # NaNs without impute, text in a regression target, too few rows per fold
        raise StageFailed(f"training failed: {exc}") from None
    best = {key.removeprefix(f"{STEP}__"): plain(value) for key, value in searcher.best_params_.items()}
    return searcher.best_estimator_, best, float(searcher.best_score_)


def _searcher(pipeline: Any, search: Mapping[str, Any]) -> Any:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    space = {key if "__" in key else f"{STEP}__{key}": _space(value) for key, value in search["grid"].items()}
    common = {"cv": search.get("cv", 5), "scoring": search.get("scoring"), "n_jobs": search.get("n_jobs", 1), "error_score": "raise"}
    if search["kind"] == "grid":
        return GridSearchCV(pipeline, space, **common)
    return RandomizedSearchCV(pipeline, space, n_iter=search.get("n_iter", 10), random_state=search.get("random_state", 0), **common)


def _space(value: Any) -> Any:
    if isinstance(value, list):
        return value
    from scipy import stats

    low, high = value["low"], value["high"]
    if value["distribution"] == "uniform":
        return stats.uniform(low, high - low)
    if value["distribution"] == "loguniform":
        return stats.loguniform(low, high)
    return stats.randint(int(low), int(high))
