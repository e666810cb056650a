"""The conformance suite every model runtime passes (River's ``checks`` are the model).

A runtime is checked on a :class:`RuntimeCase`: a real fitted model's artifact,
its signature and spec, and a batch to predict.  Each check raises
``AssertionError`` naming what broke; :func:`run_checks` runs them all.  A test
module parametrises over ``CHECKS`` and its cases, so a new runtime (a plug-in
registered with :func:`~driftline.model_runtimes.register_runtime`) gets the
same suite by adding one case.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.contracts.errors import DriftlineError
from driftline.model_runtimes.base import FeatureBatch, ModelRuntime, ModelSignature, Predictions
from driftline.model_runtimes.catalog import load_runtime, runtime_for

__all__ = ["CHECKS", "RuntimeCase", "run_checks"]


@dataclass(frozen=True)
class RuntimeCase:
    """A fitted model of one framework, as the registry would hold it."""

    name: str
    framework: str
    artifact_format: str
    artifact: bytes
    signature: ModelSignature
    batch: FeatureBatch
    spec: Mapping[str, Any] = field(default_factory=dict)
    compiled: bool = False
    """Load it compiled (:meth:`ModelRuntime.compile`), as serving does, and check that
    compiling took: the suite then checks the compiled single-row path."""

    def load(self) -> ModelRuntime:
        """The runtime, loaded the way serving loads it (through the catalog)."""
        runtime = load_runtime(
            self.framework, self.artifact_format, self.artifact, self.signature, self.spec
        )
        if self.compiled:
            outcome = runtime.compile()
            assert getattr(runtime, "compiled", False), f"{self.name} did not compile: {outcome}"
        return runtime


def _same_label(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def check_identity(case: RuntimeCase) -> None:
    """The runtime is the framework's, names itself, and reads the case's format."""
    runtime = case.load()
    cls = runtime_for(case.framework)
    assert isinstance(runtime, cls), f"{case.framework} loaded a {type(runtime).__name__}"
    assert runtime.framework == case.framework, runtime.framework
    assert runtime.platform, "a runtime names its Open Inference Protocol platform"
    assert case.artifact_format in runtime.formats, (case.artifact_format, runtime.formats)


def check_batch_equals_rows(case: RuntimeCase) -> None:
    """Predicting the batch at once gives what predicting each row alone gives."""
    runtime = case.load()
    whole = runtime.predict(case.batch)
    for i, row in enumerate(case.batch.rows()):
        label, probs = runtime.predict_one(row)
        want_label, want_probs = whole.scored(i)
        assert _same_label(label, want_label), (
            f"row {i}: alone {label!r}, in a batch {want_label!r}"
        )
        assert set(probs) == set(want_probs), f"row {i}: classes {set(probs)} vs {set(want_probs)}"
        for c, p in probs.items():
            assert math.isclose(p, want_probs[c], rel_tol=1e-6, abs_tol=1e-9), (
                f"row {i}: P({c}) alone {p}, in a batch {want_probs[c]}"
            )


def check_predictions_are_well_formed(case: RuntimeCase) -> None:
    """One label per row; a classifier's probabilities are ``[n, k]``, sum to 1 and the
    label is the most probable class; a regressor's values are floats."""
    runtime = case.load()
    out: Predictions = runtime.predict(case.batch)
    assert len(out) == case.batch.n, f"{len(out)} predictions for {case.batch.n} rows"
    if not case.signature.is_classifier:
        assert all(isinstance(v, float) for v in out.labels), out.labels[:5]
        return
    if out.probabilities is None:
        return
    assert out.probabilities.shape == (case.batch.n, len(out.classes)), out.probabilities.shape
    sums = out.probabilities.sum(axis=1)
    assert np.allclose(sums, 1.0, atol=1e-4), f"probabilities sum to {sums[:5]}"
    for i, label in enumerate(out.labels):
        best = out.classes[int(out.probabilities[i].argmax())]
        assert str(label) == best or math.isclose(
            float(out.probabilities[i].max()), out.probabilities[i][out.classes.index(str(label))]
        ), f"row {i}: label {label!r} but the most probable class is {best!r}"


def check_metadata_matches_predictions(case: RuntimeCase) -> None:
    """``inputs()`` are the signature's features in order; ``outputs()`` name what predict gives."""
    runtime = case.load()
    assert [t.name for t in runtime.inputs()] == list(case.signature.names)
    assert [t.datatype for t in runtime.inputs()] == [i.datatype for i in case.signature.inputs]
    outputs = {t.name: t for t in runtime.outputs()}
    out = runtime.predict(case.batch)
    if case.signature.is_classifier:
        assert outputs["predict"].datatype == "BYTES", outputs["predict"]
        if out.probabilities is not None:
            assert outputs["probabilities"].shape == (-1, -1)
    else:
        assert list(outputs) == ["predict"] and outputs["predict"].datatype == "FP64"


def check_deterministic(case: RuntimeCase) -> None:
    """The same batch twice gives the same predictions (a loaded model does not learn)."""
    runtime = case.load()
    a, b = runtime.predict(case.batch), runtime.predict(case.batch)
    assert [str(x) for x in a.labels] == [str(x) for x in b.labels]
    if a.probabilities is not None:
        assert b.probabilities is not None
        assert np.array_equal(a.probabilities, b.probabilities)


def check_refuses_a_foreign_artifact(case: RuntimeCase) -> None:
    """Bytes that are not a model of the framework fail with a clear error, not a crash."""
    cls = runtime_for(case.framework)
    try:
        cls.from_artifact(b"\x00not a model\xff" * 8, case.signature, case.spec)
    except DriftlineError as exc:
        assert exc.message, "the error says what is wrong"
        return
    raise AssertionError(f"the {case.framework} runtime loaded garbage bytes")


CHECKS: tuple[Callable[[RuntimeCase], None], ...] = (
    check_identity,
    check_batch_equals_rows,
    check_predictions_are_well_formed,
    check_metadata_matches_predictions,
    check_deterministic,
    check_refuses_a_foreign_artifact,
)
"""Every check, in the order a failure is most telling."""


def run_checks(case: RuntimeCase) -> None:
    """Run every check of :data:`CHECKS` on ``case``."""
    for check in CHECKS:
        check(case)
