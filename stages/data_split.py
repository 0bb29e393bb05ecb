"""data.split: a train/test split with sklearn's train_test_split semantics, written as two tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sluice import schemas
from sluice.engine.plugin import ConfigProblem, Plugin, Port, StageContext, StageFailed
from sluice.stages._tables import input_path, output_path, read_table, require_columns, write_table


class SplitStage(Plugin):
    name = "data.split"
    version = "1"
    config_schema = schemas.load("stages/data.split")
    inputs = (Port("table", desc="the table to split"),)
    outputs = (Port("train", desc="the training rows"), Port("test", desc="the held-out rows"))

    def check(self, config: Mapping[str, Any]) -> Iterable[ConfigProblem]:
        if "stratify" in config and config.get("shuffle") is False:
            yield ConfigProblem("stratify needs shuffle: true", ("stratify",))

    def run(self, ctx: StageContext) -> None:
        from sklearn.model_selection import train_test_split

        config = ctx.config
        frame = read_table(input_path(ctx, "table"), "input")
        stratify = config.get("stratify")
        if stratify is not None:
            require_columns(frame, [stratify], "input")
            if frame[stratify].isna().any():
                raise StageFailed(f"stratify column '{stratify}' has {int(frame[stratify].isna().sum())} null value(s)")
        try:
            train, test = train_test_split(
                frame,
                test_size=config.get("test_size", 0.25),
                random_state=config.get("random_state", 0),
                shuffle=config.get("shuffle", True),
                stratify=frame[stratify] if stratify is not None else None,
            )
        except ValueError as exc:  # too few rows, or a class with a single member under stratify
            raise StageFailed(f"cannot split {len(frame)} rows: {exc}") from None
        write_table(output_path(ctx, "train"), train)
        write_table(output_path(ctx, "test"), test)
        ctx.log.info("split %d rows into %d train and %d test", len(frame), len(train), len(test))
