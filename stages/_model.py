"""The model directory contract `sklearn.train` writes and every model consumer reads.

<output>/model.joblib   the fitted sklearn Pipeline (preprocessing included); model.skops with format: skops
<output>/metadata.json  format 1: estimator, task, target, features, classes, hashes, versions…
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.engine.plugin import StageFailed
from sluice.stages._tables import is_numeric_kind, kind_of, read_json, require_columns, text_table

if TYPE_CHECKING:
    import pandas as pd

FORMAT = 1
MODEL_FILE = "model.joblib"
MODEL_FILES = {"joblib": MODEL_FILE, "skops": "model.skops"}  # by sklearn.train's `format`
METADATA_FILE = "metadata.json"
LIBRARIES = ("scikit-learn", "numpy", "pandas", "scipy", "joblib")


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a fitted sklearn Pipeline
    metadata: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.metadata["features"]]

    @property
    def task(self) -> str:
        return str(self.metadata["task"])

    def feature_frame(self, frame: pd.DataFrame, what: str) -> pd.DataFrame:
        """The feature columns in training order; missing ones, or ones of another kind, fail the stage."""
        import pandas as pd

        require_columns(frame, self.features, what)
        clashes = []
        for feature in self.metadata["features"]:
            try:
                trained = kind_of(pd.Series([], dtype=feature["dtype"]))
            except TypeError:  # a dtype this pandas cannot name: nothing to compare against
                continue
            given = kind_of(frame[feature["name"]])
            if is_numeric_kind(trained) != is_numeric_kind(given):
                clashes.append((feature["name"], f"{trained} ({feature['dtype']})", f"{given} ({frame[feature['name']].dtype})"))
        if clashes:
            raise StageFailed(
                f"{len(clashes)} feature column(s) of the {what} table differ in type from training",
                text_table(("column", "trained on", "given"), clashes),
            )
        return frame[self.features]


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    return {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


def load_model(directory: Path, anchor: Mapping[str, str] | None = None, expected_sha256: str | None = None) -> LoadedModel:
    """Reads a model directory, refusing one whose model file does not match its recorded hash.

    `anchor`: the engine's digests of the directory for this run (`input_anchor(ctx, "model")`),
    which the directory cannot rewrite; `expected_sha256`: a digest kept elsewhere (a baseline's).
    """
    metadata_path = directory / METADATA_FILE
    if not metadata_path.is_file():
        raise StageFailed(f"{directory} is not a model directory: it has no {METADATA_FILE}")
    metadata = read_json(metadata_path, "model metadata")
    if metadata.get("format") != FORMAT:
        raise StageFailed(f"{metadata_path}: unsupported model format {metadata.get('format')!r} (expected {FORMAT})")
    from sluice.stages.serving.model import ModelError, deserialize, read_verified

    # A joblib file is a pickle: the bytes loaded must be the very bytes whose hash was checked.
    try:
        _, data = read_verified(directory, expected_sha256, anchor)
        return LoadedModel(deserialize(metadata, data), metadata)
    except ModelError as exc:
        raise StageFailed(str(exc)) from None
