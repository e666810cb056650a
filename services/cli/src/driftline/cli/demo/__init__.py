"""``driftline demo``: the whole loop on a loan stream with a known concept drift.

The demo streams :mod:`driftline.devtools.scenario` applications to ``driftline.events``
(labels follow on ``driftline.labels`` after a delay), asks serving's
``Predictor.Predict`` for each one, and watches ``driftline.drift``,
``driftline.retrain``, ``driftline.models`` and ``driftline.predictions`` for the
loop's milestones.  Every figure it prints is counted from what it observed:
the RPC responses (compared with the labels it sent) and the records on those
topics.  It starts whatever part of the platform is not running, stops only what
it started, and exits 1 when the loop did not close.

One module per job, so that a reader finds each by name:

- :mod:`~driftline.cli.demo.command`: the ``driftline demo`` command (options, output);
- :mod:`~driftline.cli.demo.options`: :class:`DemoOptions`, the knobs of one run;
- :mod:`~driftline.cli.demo.platform`: start what is not running, stop what the demo started;
- :mod:`~driftline.cli.demo.runner`: the stream to Kafka, the ``Predict`` calls and the
  topics watched;
- :mod:`~driftline.cli.demo.milestones`: :class:`DemoObserver`, what was counted, the
  milestones and every summary figure;
- :mod:`~driftline.cli.demo.live_view`: the terminal view while it runs;
- :mod:`~driftline.cli.demo.report`: the Markdown report and its plot.

The settings of the services the demo starts, and ``isolated_env`` (a platform on a
broker and Redis of its own, for tests and benches), are developer tools:
:mod:`driftline.devtools.demo_env`.  This package imports none of its modules, so that
importing one does not load the rest.
"""
