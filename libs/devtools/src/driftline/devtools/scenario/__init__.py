"""Scenario data for the demo and the end-to-end tests: loan applications with a known drift.

>>> from driftline.devtools.scenario import ScenarioConfig, applications
>>> first = next(applications(ScenarioConfig(events=1)))
>>> sorted(first.features)[:3], first.event_id
(['age', 'car', 'commission'], 'e-42-0000000')
"""

from driftline.devtools.scenario import loan_stream
from driftline.devtools.scenario.loan_stream import *  # noqa: F403

__all__ = list(loan_stream.__all__)
