"""Model runtimes: one small interface, one runtime per framework.

Serving loads every model version through the runtime of its recorded framework
(:func:`load_runtime`), predicts whole batches with one call into the model
(:meth:`ModelRuntime.predict`), and describes inputs and outputs from it.
Training and the registry use the same runtimes to write and check artifacts.
A new framework is a :class:`ModelRuntime` subclass registered with
:func:`register_runtime` or an entry point (see :mod:`.catalog`); every runtime
passes the shared conformance checks of :mod:`driftline.model_runtimes.checks`.
"""

from driftline.model_runtimes.base import (
    DATATYPES,
    Column,
    Datatype,
    FeatureBatch,
    ModelInput,
    ModelRuntime,
    ModelSignature,
    Predictions,
    Scored,
    Task,
    TensorSpec,
)
from driftline.model_runtimes.catalog import (
    ENTRY_POINT_GROUP,
    frameworks,
    load_runtime,
    register_runtime,
    runtime_for,
)

__all__ = [
    "DATATYPES",
    "ENTRY_POINT_GROUP",
    "Column",
    "Datatype",
    "FeatureBatch",
    "ModelInput",
    "ModelRuntime",
    "ModelSignature",
    "Predictions",
    "Scored",
    "Task",
    "TensorSpec",
    "frameworks",
    "load_runtime",
    "register_runtime",
    "runtime_for",
]
