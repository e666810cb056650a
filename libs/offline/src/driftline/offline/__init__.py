"""Point-in-time training sets for offline work: the data training learns from, as a table.

The feature vectors logged on ``driftline.features`` (each computed as of its
event's time) joined with their labels by event id, read with the replay and
selected with the functions training uses for a retrain window
(:class:`~driftline.training.replay.KafkaReplay`,
:func:`~driftline.training.retrain.check_window`,
:func:`~driftline.training.retrain.select_window`): a model trained offline on
this table sees exactly what a model Driftline retrains sees, so there is no skew
between the two.  Feast users know the idea as ``get_historical_features``.

>>> from datetime import UTC, datetime
>>> frame = training_set(  # doctest: +SKIP
...     "loans", since=datetime(2026, 5, 1, tzinfo=UTC), model="loans-gbm"
... )
>>> list(frame.columns)  # doctest: +SKIP
['event_id', 'entity_id', 'event_time', 'salary', ..., 'loan', 'label']

One row per labelled example, oldest event first: ``event_id``, ``entity_id``,
``event_time`` (UTC), one column per feature (a missing value is NaN / None), and
``label`` (checked like training checks it: the feature set's declared label type,
else the model's task).  ``driftline features export`` writes the same table to
Parquet.
"""

from driftline.offline import export
from driftline.offline.export import *  # noqa: F403

__all__ = list(export.__all__)
