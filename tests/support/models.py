"""Real fitted models in the exact directory layout `sklearn.train` writes (metadata format 1)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

FEATURES = ["mean radius", "mean texture", "mean smoothness", "worst area", "worst concavity"]


def breast_cancer_frame():  # type: ignore[no-untyped-def]
    """A few breast-cancer columns (bundled with sklearn, no download) plus the target."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return frame[[*FEATURES, "target"]]


def write_model_dir(model_dir: Path, *, c: float = 1.0, seed: int = 0) -> Path:
    """Trains a scaler + logistic regression and writes model.joblib and metadata.json."""
    import joblib
    import numpy
    import pandas
    import scipy
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = breast_cancer_frame()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, random_state=seed, max_iter=500))
    model.fit(frame[FEATURES], frame["target"])
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    digest = hashlib.sha256((model_dir / "model.joblib").read_bytes()).hexdigest()
    metadata = {
        "format": 1,
        "estimator": "sklearn.linear_model.LogisticRegression",
        "task": "classification",
        "target": "target",
        "features": [{"name": n, "dtype": str(frame[n].dtype)} for n in FEATURES],
        "classes": [int(c) for c in model.classes_],
        "model_file": "model.joblib",
        "model_hash": {"algorithm": "sha256", "value": digest},
        "data_hash": "0" * 64,
        "library_versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": numpy.__version__,
            "pandas": pandas.__version__,
            "scipy": scipy.__version__,
            "joblib": joblib.__version__,
        },
        "params": {"C": c},
        "best_params": None,
        "cv_score": None,
    }
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return model_dir


def write_sample_table(path: Path, rows: int = 40) -> Path:
    frame = breast_cancer_frame().sample(n=rows, random_state=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
