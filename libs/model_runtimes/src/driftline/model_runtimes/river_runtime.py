"""River pipelines: Driftline's own online models (``river-pickle`` artifacts).

River scores one row at a time (``predict_proba_one``); that is its batch call
too, so :meth:`RiverRuntime.predict` loops in one place and keeps River's
tie-break (the first class of the probability dict wins).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

from driftline.contracts.errors import FailedPreconditionError
from driftline.model_runtimes.base import (
    FeatureBatch,
    ModelRuntime,
    ModelSignature,
    Predictions,
    Scored,
)

__all__ = ["RIVER_PICKLE", "RiverRuntime"]

RIVER_PICKLE = "river-pickle"
"""Format name of a pickled River pipeline."""


class RiverRuntime(ModelRuntime):
    """A River estimator or pipeline."""

    framework = "river"
    platform = "river"
    formats = (RIVER_PICKLE,)

    def __init__(self, model: Any, signature: ModelSignature) -> None:
        super().__init__(model, signature)
        self._classifier = signature.is_classifier

    @classmethod
    def from_artifact(
        cls, data: bytes, signature: ModelSignature, spec: Mapping[str, Any]
    ) -> RiverRuntime:
        """Unpickle the (verified) pipeline and check that it can do the signature's task."""
        try:
            model = pickle.loads(data)  # the registry's signature was checked by the caller
        except Exception as exc:
            raise FailedPreconditionError(
                f"the artifact is not a pickled River model: {type(exc).__name__}: {exc}"
            ) from exc
        method = "predict_proba_one" if signature.is_classifier else "predict_one"
        if not callable(getattr(model, method, None)):
            kind = "classifier" if signature.is_classifier else "regressor"
            raise FailedPreconditionError(
                f"the river-pickle artifact holds a {type(model).__name__}, which has no "
                f"{method}: it is not a River {kind}"
            )
        return cls(model, signature)

    @classmethod
    def dump(cls, model: Any) -> bytes:
        """The ``river-pickle`` bytes of ``model``."""
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)

    def predict_one(self, row: Mapping[str, Any]) -> Scored:
        """One row, straight into River (the Predict path: no batch built)."""
        if self._classifier:
            proba = self.model.predict_proba_one(row)
            if not proba:
                return None, {}
            label = max(proba, key=proba.get)
            return label, {str(k): float(v) for k, v in proba.items()}
        value = self.model.predict_one(row)
        return (None if value is None else float(value)), {}

    def predict(self, batch: FeatureBatch) -> Predictions:
        """Every row through :meth:`predict_one` (River's own way of scoring many)."""
        one = self.predict_one
        return Predictions.from_scored([one(x) for x in batch.rows()])
