"""Exports scikit-learn's bundled breast-cancer data (no network) as two CSV tables.

`current` is the data this pipeline trains on; `reference` is a held-back, stratified half that
stands in for last month's data, so `data.drift` has something real to compare against.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--current", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    # Labels as words, so the model, its metadata and every report speak the domain's language.
    frame["diagnosis"] = frame.pop("target").map(dict(enumerate(bunch.target_names)))
    reference, current = train_test_split(frame, test_size=0.5, random_state=args.seed, stratify=frame["diagnosis"])
    for path, table in ((args.current, current), (args.reference, reference)):
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


if __name__ == "__main__":
    main()
