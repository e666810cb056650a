"""Model runtimes: one small interface, one runtime per framework.

Serving loads every model version through the runtime of its recorded framework
(:func:`load_runtime`), predicts whole batches with one call into the model
(:meth:`ModelRuntime.predict`), and describes inputs and outputs from it.
Training and the registry use the same runtimes to write and check artifacts.
A new framework is a :class:`ModelRuntime` subclass registered with
:func:`register_runtime` or an entry point (see :mod:`.catalog`); every runtime
passes the shared conformance checks of :mod:`driftline.model_runtimes.checks`.
"""

from driftline.model_runtimes import base, catalog
from driftline.model_runtimes.base import *  # noqa: F403
from driftline.model_runtimes.catalog import *  # noqa: F403

__all__ = [*base.__all__, *catalog.__all__]
