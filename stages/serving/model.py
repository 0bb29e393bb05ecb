"""A trained model directory: its metadata, the hash check that guards loading, and record validation.

Standalone on purpose (no `engine` imports): `docker.build` copies this package into the image.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.json"
SUPPORTED_FORMAT = 1
MODEL_FORMATS = ("joblib", "skops")
_ZIP_MAGIC = b"PK\x03\x04"
# Types beyond skops's defaults that sluice reviewed: each is rebuilt from plain arrays and
# numbers by skops's own loaders, with no import of a module named in the file and no code run.
SKOPS_TRUSTED = (
    "numpy.dtype",  # a dtype from its string name; every fitted estimator keeps some (feature_names_in_)
    "sklearn.tree._tree.Tree",  # decision trees and forests: node arrays
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # HistGradientBoosting: node arrays
)


class ModelError(Exception):
    """The model directory cannot be served: missing files, bad metadata, or a hash mismatch."""


class ModelIntegrityError(ModelError):
    """The model file's bytes are not the ones its metadata recorded: never load (unpickle) them."""


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str

    @property
    def kind(self) -> str:
        """What JSON values this feature accepts: number, integer, bool or string."""
        d = self.dtype.lower()
        if d.startswith("bool"):
            return "bool"
        if d.startswith(("int", "uint", "Int", "UInt")):
            return "integer"
        if d.startswith(("float", "Float", "double")):
            return "number"
        return "string"


@dataclass(frozen=True)
class Metadata:
    raw: Mapping[str, Any]
    features: tuple[Feature, ...]
    task: str
    classes: tuple[Any, ...] | None
    model_file: str
    model_hash: str  # sha256 hex of model_file

    @property
    def version(self) -> str:
        """The short content hash that names this model in metrics, image tags and labels."""
        return self.model_hash[:12]


def read_metadata(model_dir: Path, anchor: Mapping[str, str] | None = None) -> Metadata:
    """`anchor`: see `read_verified`; the metadata bytes parsed are the ones checked against it."""
    path = model_dir / METADATA_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model directory: {METADATA_FILE} is missing")
    try:
        raw = json.loads(check_anchor(path, path.read_bytes(), METADATA_FILE, anchor))
        if raw.get("format") != SUPPORTED_FORMAT:
            raise ModelError(f"{path}: unsupported model format {raw.get('format')!r}")
        hash_info = raw["model_hash"]
        if hash_info.get("algorithm") != "sha256":
            raise ModelError(f"{path}: unsupported hash algorithm {hash_info.get('algorithm')!r}")
        features = tuple(Feature(str(f["name"]), str(f["dtype"])) for f in raw["features"])
        classes = raw.get("classes")
        return Metadata(
            raw=raw,
            features=features,
            task=str(raw["task"]),
            classes=tuple(classes) if classes is not None else None,
            model_file=str(raw.get("model_file", "model.joblib")),
            model_hash=str(hash_info["value"]).lower(),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: malformed metadata ({exc!r})") from exc


@dataclass(frozen=True)
class LoadedModel:
    metadata: Metadata
    estimator: Any  # a fitted sklearn Pipeline

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Predictions for validated records, as plain JSON-able Python values."""
        return to_python(self.estimator.predict(self.frame(records)))

    def frame(self, records: Sequence[Mapping[str, Any]]) -> Any:
        import pandas as pd

        names = [f.name for f in self.metadata.features]
        columns = getattr(records, "columns", None)  # records.Rows: already one list or array per feature
        if columns is not None:
            return pd.DataFrame({n: columns[n] for n in names}, columns=names)
        return pd.DataFrame([[r.get(n) for n in names] for r in records], columns=names)


def load_model(model_dir: Path, expected_sha256: str | None = None, anchor: Mapping[str, str] | None = None) -> LoadedModel:
    """Reads the model bytes once, checks them, then loads exactly those bytes."""
    metadata, data = read_verified(model_dir, expected_sha256, anchor)
    return LoadedModel(metadata, deserialize(metadata.raw, data))


def deserialize(raw: Mapping[str, Any], data: bytes) -> Any:
    """The estimator in verified bytes: skops (data only, types checked) or joblib (a pickle: code)."""
    declared = str(raw.get("model_format", "joblib"))
    if declared not in MODEL_FORMATS:
        raise ModelError(f"{METADATA_FILE}: unknown model_format {declared!r} (expected one of: {', '.join(MODEL_FORMATS)})")
    # The bytes decide too: a pickle under a skops name (or the reverse) is refused, never tried.
    if (declared == "skops") != data.startswith(_ZIP_MAGIC):
        found = "a zip archive (skops)" if data.startswith(_ZIP_MAGIC) else "not a skops archive"
        raise ModelIntegrityError(f"{METADATA_FILE} declares model_format {declared!r}, but the model file is {found}")
    if declared == "skops":
        return skops_loads(data)
    import joblib

    return joblib.load(io.BytesIO(data))


def skops_untrusted(data: bytes) -> list[str]:
    """Types in a skops file that neither skops's defaults nor SKOPS_TRUSTED trust."""
    import skops.io as sio

    return sorted(set(sio.get_untrusted_types(data=data)) - set(SKOPS_TRUSTED))


def skops_loads(data: bytes) -> Any:
    """skops's own defaults plus the reviewed SKOPS_TRUSTED, never `trusted=True`: any other type is refused."""
    try:
        import skops.io as sio
    except ImportError:
        raise ModelError("the model is in skops format, but skops is not installed (pip install skops)") from None
    outside = skops_untrusted(data)
    if outside:
        raise ModelIntegrityError(f"refusing to load the skops model: it holds types outside the trusted list: {', '.join(outside)}")
    return sio.loads(data, trusted=[t for t in sio.get_untrusted_types(data=data) if t in SKOPS_TRUSTED])


def read_verified(model_dir: Path, expected_sha256: str | None = None, anchor: Mapping[str, str] | None = None) -> tuple[Metadata, bytes]:
    """The metadata and the model file's bytes, read once and checked against the recorded sha256.

    `metadata.json` sits beside the model, so whoever can rewrite the model can rewrite its hash
    too: `expected_sha256` comes from somewhere the model directory cannot change (an image
    label, a lock file, the command line), and then it, not the metadata, decides. `anchor`
    (a pipeline stage's `ctx.input_digests` for the model input: path inside the directory →
    BLAKE3) is what the engine hashed when it decided to run the stage; checked first.
    """
    metadata = read_metadata(model_dir, anchor)
    model_path = confined(model_dir, metadata.model_file)
    try:
        data = check_anchor(model_path, model_path.read_bytes(), Path(metadata.model_file).as_posix(), anchor)
    except (FileNotFoundError, IsADirectoryError):
        raise ModelError(f"model file {model_path} is missing") from None
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise ModelIntegrityError(
            f"refusing to serve {model_path}: sha256 is {actual}, but the expected digest is {expected_sha256.lower()}"
        )
    if actual != metadata.model_hash:
        raise ModelIntegrityError(
            f"refusing to serve {model_path}: sha256 is {actual}, but {METADATA_FILE} records "
            f"{metadata.model_hash} (it does not match the sha256 recorded in {METADATA_FILE})"
        )
    return metadata, data


def check_anchor(path: Path, data: bytes, rel: str, anchor: Mapping[str, str] | None) -> bytes:
    """`data` (read from `path`, `rel` inside the model directory) if `anchor` vouches for it; no anchor vouches for all."""
    if not anchor:
        return data
    import blake3  # only on the pipeline side: the image's server is anchored by --expect-sha256

    want = anchor.get(rel)
    if want is None:
        raise ModelIntegrityError(f"refusing to load {path}: it was not in the model directory when sluice hashed it for this run")
    actual = blake3.blake3(data).hexdigest()
    if actual != want:
        raise ModelIntegrityError(
            f"refusing to load {path}: it changed since sluice hashed it for this run (BLAKE3 {actual}, hashed {want})"
        )
    return data


def confined(model_dir: Path, name: str) -> Path:
    """`model_file` as a path inside the model directory; absolute paths, `..` and symlinks out are refused."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ModelIntegrityError(f"{model_dir / METADATA_FILE}: model_file {name!r} must be a file name inside the model directory")
    path = model_dir / relative
    root = model_dir.resolve()
    if not path.resolve().is_relative_to(root):
        raise ModelIntegrityError(f"{model_dir / METADATA_FILE}: model_file {name!r} leads outside the model directory")
    return path


def to_python(values: Any) -> list[Any]:
    """numpy scalars → int/float/str/bool so they serialise as JSON and compare exactly."""
    if getattr(values, "dtype", None) is not None and values.dtype.kind in "biufU":
        return list(values.tolist())  # one C loop; the same Python scalars .item() gives
    return [v.item() if hasattr(v, "item") else v for v in list(values)]
