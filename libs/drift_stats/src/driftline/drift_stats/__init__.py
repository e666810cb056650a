"""Reference statistics: the distribution a model version was trained on.

Training records :func:`build_reference` of its training vectors in the
registered version's spec (``spec["reference"]``); monitoring parses it with
:meth:`Reference.from_dict` and compares live windows against it.  Both sides
import this library, so the format is defined once.
"""

from driftline.drift_stats import reference
from driftline.drift_stats.reference import *  # noqa: F403

__all__ = list(reference.__all__)
