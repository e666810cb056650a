"""Fit a model on a training set ``driftline features export`` wrote, and register it.

    uv run driftline features export --model examples/byom/loans-hgb.yaml --since 1h \
        -o train.parquet
    uv run python examples/byom/fit_and_register.py train.parquet --name loans-hgb

Plain scikit-learn (or LightGBM) on a pandas DataFrame: every column of the export
between its keys (event_id, entity_id, event_time) and its ``label`` is a feature.
The newest 20 % of the rows are held out to report an accuracy; the registered
model is then fitted on all of them.  ``register_model_sync`` checks the estimator
against the feature set, uploads it signed with its library versions and the
training set's lineage (the file, its rows, its event-time range), and points
``--promote`` at the new version; serving swaps it in within a second or two.

``--save model.joblib`` also writes the fitted estimator, for
``driftline models register … --artifact model.joblib``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import joblib
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.ensemble import HistGradientBoostingClassifier

from driftline.contracts.errors import DriftlineError
from driftline.registry_client import TrainedOn, register_model_sync


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fit a classifier on a `driftline features export` file and register it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("train", type=Path, help="the export (Parquet)")
    parser.add_argument("--name", default="loans-hgb", help="model name in the registry")
    parser.add_argument("--registry", default="127.0.0.1:50052", help="the registry's gRPC address")
    parser.add_argument("--featureset", default="loans", help="the feature set the export is of")
    parser.add_argument(
        "--estimator",
        choices=["hgb", "lightgbm"],
        default="hgb",
        help="scikit-learn's HistGradientBoostingClassifier or LightGBM's LGBMClassifier",
    )
    parser.add_argument(
        "--promote",
        choices=["champion", "challenger", "none"],
        default="champion",
        help="the alias to point at the new version",
    )
    parser.add_argument(
        "--save", type=Path, help="also write the fitted estimator here (joblib), for the CLI"
    )
    parser.add_argument(
        "--featuresets",
        type=Path,
        default=Path("examples/featuresets"),
        help="feature-set YAML directory: the estimator is checked against it before upload "
        "and the lineage records the feature set's version (skipped when absent)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("DRIFTLINE_REGISTRY__TOKEN"),
        help="the registry's token, if it has one (read from $DRIFTLINE_REGISTRY__TOKEN)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    train = pd.read_parquet(args.train)  # one row per labelled example, oldest event first
    if train.empty:
        sys.exit(f"{args.train} holds no examples: export a window that has labelled events")

    X = train.drop(columns=["event_id", "entity_id", "event_time", "label"])  # the features
    y = train["label"].astype(int)
    cut = int(len(train) * 0.8)  # hold out the newest 20 %
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0)  # as loans-hgb.yaml
    if args.estimator == "lightgbm":
        model = LGBMClassifier(n_estimators=100, n_jobs=1, verbose=-1, random_state=0)
    accuracy = model.fit(X[:cut], y[:cut]).score(X[cut:], y[cut:])
    model.fit(X, y)  # then learn from all of it

    registered = register_model_sync(
        args.registry,
        args.name,
        model,  # any fitted scikit-learn-API estimator or Pipeline
        featureset=args.featureset,
        task="binary",
        trained_on=TrainedOn(
            export=str(args.train),
            examples=len(train),
            event_time_from=train["event_time"].min().to_pydatetime(),
            event_time_to=train["event_time"].max().to_pydatetime(),
        ),
        metrics={"accuracy": accuracy},
        promote=None if args.promote == "none" else args.promote,
        featuresets=args.featuresets if args.featuresets.is_dir() else None,
        token=args.token,
    )

    print(f"fitted {type(model).__name__} on {len(train):,} examples of {X.shape[1]} "
          f"features; held-out accuracy {accuracy:.3f} (newest {len(train) - cut:,})")  # fmt: skip
    v = registered.version
    libraries = ", ".join(f"{k} {val}" for k, val in sorted(v.library_versions.items()))
    print(f"registered {v.name} v{v.version} ({v.framework}, {v.artifact_format}; {libraries})")
    if registered.alias is not None:
        was = f"v{registered.previous_version}" if registered.previous_version else "unset"
        print(f"{v.name}:{registered.alias} -> v{v.version} (was {was})")
    if args.save is not None:
        joblib.dump(model, args.save)
        print(f"saved the estimator to {args.save}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DriftlineError as exc:  # refused (INVALID_ARGUMENT names what is wrong) or unreachable
        sys.exit(f"fit_and_register: {exc.message}")
