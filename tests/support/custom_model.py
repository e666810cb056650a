"""A user's own model class, as the ``python`` runtime loads it by import path.

Its artifact is JSON: a threshold on one feature (a stand-in for weights a team
would ship). Importable as ``support.custom_model.ThresholdModel`` from tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np


class ThresholdModel:
    """Class 1 when ``feature`` is above ``threshold``, with a logistic probability."""

    classes_ = [0, 1]

    def __init__(self, feature: str, threshold: float, scale: float) -> None:
        self.feature = feature
        self.threshold = threshold
        self.scale = scale

    @classmethod
    def load(cls, artifact: bytes, spec: Mapping[str, Any]) -> ThresholdModel:
        doc = json.loads(artifact)
        return cls(doc["feature"], float(doc["threshold"]), float(doc["scale"]))

    def predict_proba(self, frame: Any) -> np.ndarray:
        x = frame[self.feature].to_numpy(dtype=np.float64)
        p1 = 1.0 / (1.0 + np.exp(-(x - self.threshold) / self.scale))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, frame: Any) -> np.ndarray:
        return (self.predict_proba(frame)[:, 1] > 0.5).astype(np.int64)

    @staticmethod
    def artifact(feature: str, threshold: float, scale: float) -> bytes:
        return json.dumps({"feature": feature, "threshold": threshold, "scale": scale}).encode()
