"""Real fitted models of every framework, trained on the ``loans`` fields, for registration tests.

Shared by the unit tests of the registry's checks and the integration tests against the
running registry (``from unit.registry.fitted_models import …``).
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from river.datasets import synth

ROOT = Path(__file__).resolve().parents[3]
FEATURESETS = ROOT / "examples" / "featuresets"
FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
PYTHON_CLASS = "support.custom_model.ThresholdModel"

SHOPS = """\
name: shops
version: 1
entity: shop
fields:
  amount: {type: float, min: 0}
  city: {type: string}
  items: {type: int, min: 0}
label: {type: binary}
aggregations:
  - {field: city, fn: last, window: 1h}
"""


def write_featuresets(directory: Path) -> Path:
    """``loans`` (the example) and ``shops`` (with a string field ``city``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "loans.yaml").write_text((FEATURESETS / "loans.yaml").read_text())
    (directory / "shops.yaml").write_text(SHOPS)
    return directory


@functools.cache
def loans_xy(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Agrawal rows in :data:`FEATURES` order and their 0/1 labels."""
    rows, ys = [], []
    for x, y in synth.Agrawal(seed=11).take(n):
        rows.append([float(x[f]) for f in FEATURES])
        ys.append(int(y))
    return np.array(rows), np.array(ys)


def loans_frame() -> pd.DataFrame:
    x, _ = loans_xy()
    return pd.DataFrame(x, columns=FEATURES)


def spec(name: str, framework: str, **extra: Any) -> dict[str, Any]:
    """A model spec of a ``loans`` binary model trained elsewhere."""
    return {"name": name, "featureset": "loans", "task": "binary", "framework": framework, **extra}


def sklearn_logistic() -> Any:
    """An array-fitted scaler + logistic regression pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = loans_xy()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


def sklearn_frame() -> Any:
    """A HistGradientBoostingClassifier fitted on a DataFrame of five of the columns."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    _, y = loans_xy()
    frame = loans_frame()[["salary", "age", "loan", "hvalue", "elevel"]]
    return HistGradientBoostingClassifier(max_iter=20).fit(frame, y)


def lightgbm_model() -> Any:
    from lightgbm import LGBMClassifier

    _, y = loans_xy()
    return LGBMClassifier(n_estimators=20, verbose=-1).fit(loans_frame(), y)


def xgboost_model() -> Any:
    from xgboost import XGBClassifier

    x, y = loans_xy()
    return XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)


def pickled(model: Any) -> bytes:
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def joblibbed(model: Any, path: Path) -> bytes:
    import joblib

    joblib.dump(model, path)
    return path.read_bytes()


def onnx_matrix(columns: int = len(FEATURES)) -> bytes:
    """A logistic regression over ``columns`` of the features, converted by skl2onnx."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = loans_xy()
    model = LogisticRegression(max_iter=500).fit(x[:, :columns] / 1e5, y)
    proto = to_onnx(model, x[:1, :columns].astype(np.float32), options={"zipmap": False})
    return bytes(proto.SerializeToString())


def onnx_per_feature(inputs: dict[str, int], dims: list[Any] | None = None) -> bytes:
    """A graph with one input per name (element type by ``onnx.TensorProto`` code) that
    adds the inputs (cast to float) into one output."""
    from onnx import TensorProto, checker, helper

    nodes, casted = [], []
    for name in inputs:
        out = f"{name}_f"
        nodes.append(helper.make_node("Cast", [name], [out], to=TensorProto.FLOAT))
        casted.append(out)
    nodes.append(helper.make_node("Sum", casted, ["score"]))
    graph = helper.make_graph(
        nodes,
        "per_feature",
        [helper.make_tensor_value_info(n, e, dims or ["N", 1]) for n, e in inputs.items()],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, dims or ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    return bytes(model.SerializeToString())


def python_artifact() -> bytes:
    from support.custom_model import ThresholdModel

    return ThresholdModel.artifact("salary", 75_000.0, 10_000.0)
