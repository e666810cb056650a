"""Developer tools: what the CLI, tests and benches use, and no runtime service does.

- :mod:`driftline.devtools.infra`: the local platform's launcher (a Kafka broker and a
  Redis of the user's own, fetched, configured, started, waited for and stopped);
- :mod:`driftline.devtools.scenario`: seeded loan-application streams with a known
  concept drift;
- :mod:`driftline.devtools.demo_env`: the settings of the services the demo starts, and
  ``isolated_env`` (every service on free ports against a broker and Redis of its own).

``tests/unit/test_layering.py`` checks that no runtime service depends on this package.
"""
