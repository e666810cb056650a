"""The point-in-time export: replay, join, check and select as training does, then tabulate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from driftline.contracts.errors import InvalidArgumentError
from driftline.settings import KafkaSettings, PlatformSettings, load_settings
from driftline.specs import (
    FeatureSetCatalog,
    FeatureSetSpec,
    ModelSpec,
    load_featuresets,
    load_model_spec,
    load_model_specs,
)
from driftline.training.label_join import JoinedExample
from driftline.training.replay import KafkaReplay, ReplayProgress
from driftline.training.retrain import LabelChecker, ReplayPlan, check_window, select_window

__all__ = [
    "KEY_COLUMNS",
    "LABEL_COLUMN",
    "ExportError",
    "TrainingSet",
    "examples_frame",
    "load_training_set",
    "read_training_set",
    "resolve_model",
    "training_set",
    "write_table",
]

KEY_COLUMNS: tuple[str, ...] = ("event_id", "entity_id", "event_time")
"""The columns every row starts with."""
LABEL_COLUMN = "label"
"""The last column: the example's label."""


class ExportError(InvalidArgumentError):
    """The export was asked for something that cannot be exported (the message says why)."""


@dataclass
class TrainingSet:
    """An exported training set: the table and what it was made from."""

    frame: pd.DataFrame
    examples: list[JoinedExample[Any]]
    """The joined examples behind the rows, in row order."""
    featureset: str
    features: list[str]
    model: ModelSpec | None
    left_out: int
    """Joined examples whose label is not of the label type (training leaves them out too)."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def resolve_model(model: str | Path | ModelSpec | None, models_dir: Path) -> ModelSpec | None:
    """A model spec: given, read from a YAML path, or found by name in ``models_dir``.

    Raises :class:`ExportError` naming the models there when the name is unknown, and
    :class:`~driftline.specs.SpecError` (with file and line) for an invalid spec (so
    does :func:`training_set` for an invalid feature set).
    """
    if model is None or isinstance(model, ModelSpec):
        return model
    path = Path(model)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ExportError(f"model spec {path} not found")
        return load_model_spec(path)
    name = str(model)
    specs = load_model_specs(models_dir) if models_dir.is_dir() else {}
    spec = specs.get(name)
    if spec is None:
        known = ", ".join(sorted(specs)) or "none"
        raise ExportError(
            f"no model spec named {name!r} in {models_dir} (there: {known}); pass the spec's "
            "YAML path instead of a name, or set training.models_dir"
        )
    return spec


def _columns(
    examples: Sequence[JoinedExample[Any]],
    model: ModelSpec | None,
    featureset: FeatureSetSpec | None,
) -> list[str]:
    if model is not None:
        names = model.feature_names(featureset)
        if names is not None:
            return names
    if featureset is not None:
        return featureset.feature_names
    # No declaration to go by: every feature any vector carries, in first-seen order.
    return list(dict.fromkeys(k for ex in examples for k in ex.vector.values))


def examples_frame(examples: Sequence[JoinedExample[Any]], features: Sequence[str]) -> pd.DataFrame:
    """The table of ``examples``: key columns, ``features`` (missing → None/NaN), label."""
    clash = {LABEL_COLUMN, *KEY_COLUMNS} & set(features)
    if clash:
        raise ExportError(
            f"feature(s) {', '.join(sorted(clash))} clash with the export's own columns "
            f"({', '.join((*KEY_COLUMNS, LABEL_COLUMN))})"
        )
    data: dict[str, Any] = {
        "event_id": [ex.event_id for ex in examples],
        "entity_id": [ex.vector.entity_id for ex in examples],
        "event_time": pd.to_datetime([ex.event_time for ex in examples], utc=True),
    }
    for name in features:
        data[name] = [ex.vector.values.get(name) for ex in examples]
    data[LABEL_COLUMN] = [ex.label.label for ex in examples]
    return pd.DataFrame(data, columns=[*KEY_COLUMNS, *features, LABEL_COLUMN])


async def read_training_set(
    kafka: KafkaSettings,
    featureset: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: ModelSpec | None = None,
    featuresets: FeatureSetCatalog | None = None,
    progress: ReplayProgress | None = None,
) -> TrainingSet:
    """The labelled examples of ``featureset`` with an event time in ``[since, until)``.

    Reads both logs up to their end when called (``since`` seeks by record time;
    without it, from the start of the logs).  With ``model``, the columns are the
    model's features and its task decides the label check when the feature set
    declares no label type; ``featureset`` defaults to the model's.
    """
    if featureset is None:
        if model is None:
            raise ExportError("name a feature set (or a model, whose feature set is used)")
        featureset = model.featureset
    if model is not None and model.featureset != featureset:
        raise ExportError(
            f"model {model.name} reads feature set {model.featureset}, not {featureset}"
        )
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and until <= since:
        raise ExportError(f"--until ({until.isoformat()}) is not after --since "
                          f"({since.isoformat()})")  # fmt: skip
    declared = featuresets.get(featureset) if featuresets is not None else None
    if model is not None and declared is not None:
        model.check_featureset(declared)
    plan = ReplayPlan(
        since_event_time=since,
        since_offsets={},
        tail_records=None,
        keep_examples=None,
        keep_seconds=None,
    )
    check = LabelChecker(
        model.task if model is not None else None,
        declared.label if declared is not None else None,
    )
    left_out = 0

    def rejected(_: JoinedExample[Any], __: Exception) -> None:
        nonlocal left_out
        left_out += 1

    replay = KafkaReplay(kafka, name="driftline-export", progress=progress)
    examples = select_window(check_window(await replay(plan), featureset, check, rejected), plan)
    if until is not None:
        examples = [ex for ex in examples if ex.event_time < until]
    features = _columns(examples, model, declared)
    frame = examples_frame(examples, features)
    return TrainingSet(frame, examples, featureset, features, model, left_out)


def training_set(
    featureset: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | Path | ModelSpec | None = None,
    settings: PlatformSettings | None = None,
    progress: ReplayProgress | None = None,
) -> pd.DataFrame:
    """The point-in-time training set as a DataFrame (see the package docstring).

    ``model`` is a spec, a spec's YAML path, or a name in ``training.models_dir``;
    ``settings`` default to Driftline's (``DRIFTLINE_CONFIG`` / ``DRIFTLINE_*``), whose
    ``kafka`` section says where the logs are and ``training.featuresets_dir`` where
    the feature sets are declared.  Blocks (it runs its own event loop): from async
    code, await :func:`read_training_set` instead.
    """
    return load_training_set(
        settings or load_settings(),
        featureset,
        since=since,
        until=until,
        model=model,
        progress=progress,
    ).frame


def load_training_set(
    settings: PlatformSettings,
    featureset: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | Path | ModelSpec | None = None,
    progress: ReplayProgress | None = None,
) -> TrainingSet:
    """:func:`read_training_set` with what ``settings`` say: the logs of its ``kafka``
    section, ``model`` resolved in ``training.models_dir`` and the feature sets of
    ``training.featuresets_dir``.  Blocks (it runs its own event loop); what
    :func:`training_set` and ``driftline features export`` share."""
    spec = resolve_model(model, settings.training.models_dir)
    directory = settings.training.featuresets_dir
    catalog = load_featuresets(directory) if directory.is_dir() else None
    return asyncio.run(
        read_training_set(
            settings.kafka,
            featureset,
            since=since,
            until=until,
            model=spec,
            featuresets=catalog,
            progress=progress,
        )
    )


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path``: Parquet, or CSV when the name ends in ``.csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
