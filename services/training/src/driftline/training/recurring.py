"""Recurring concepts: restore an earlier champion when the concept it learned comes back.

Seasons, promotions, weekday and weekend: a concept often returns, and the
registry still holds the champion that was right for it.  Scoring a model that
exists needs far fewer labelled examples than training one, so on a concept-drift
retrain request training scores the model's most recent earlier champions (its
alias history) on the first :attr:`RecurringConfig.min_examples` labelled examples
after the onset, next to the current champion.  One that beats the champion by the
spec's promotion margin and reaches :attr:`RecurringConfig.min_score` is restored:
the ``champion`` alias moves back to it, with a reason that starts with
:data:`RESTORE_REASON` and the request's id as trigger, like any promotion.  The
request still gets its fresh candidate later, which competes with the restored
champion as usual.

Pure logic: :class:`driftline.training.core.TrainingCore` loads and scores the
versions and moves the alias; the choice itself is
:func:`driftline.registry_api.recurring.choose_restore`, which the drift evaluation
applies too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from driftline.contracts.messages import DriftKind, RetrainRequest
from driftline.registry_api.recurring import RESTORE_REASON, RestoreChoice, choose_restore

__all__ = [
    "RESTORE_REASON",
    "ChampionChange",
    "RecurringConfig",
    "RestoreChoice",
    "choose_restore",
    "earlier_champions",
    "is_concept_drift",
    "restored_for",
]


@dataclass(frozen=True)
class RecurringConfig:
    """The knobs (from :class:`driftline.settings.models.RecurringSettings`)."""

    enabled: bool = True
    max_candidates: int = 3
    """The most recent distinct earlier champions scored."""
    min_examples: int = 200
    """Labelled examples after the onset the check waits for."""
    min_score: float = 0.8
    """The promotion metric an earlier champion must reach (a ceiling when lower is better)."""


@dataclass(frozen=True)
class ChampionChange:
    """One move of the ``champion`` alias, as the registry's alias history records it."""

    version: int | None
    """None: the alias was deleted."""
    reason: str = ""
    trigger_id: str = ""


def is_concept_drift(request: RetrainRequest) -> bool:
    """Whether ``request`` answers a concept drift with a known onset.

    The monitor's retrain policy writes one reason per detection kind, ``"concept drift
    (error_rise: …)"``; a request for data drift alone (a monitor configured to retrain
    on it) is not about a concept that may have come back.
    """
    return request.since_event_time is not None and f"{DriftKind.CONCEPT.value} drift" in (
        request.reason
    )


def earlier_champions(changes: Sequence[ChampionChange], current: int, limit: int) -> list[int]:
    """The ``limit`` most recent distinct versions the champion alias pointed at before,
    newest first, the current champion left out (``changes`` oldest first).

    >>> earlier_champions([ChampionChange(v) for v in (1, 2, 1, 3, 4)], current=4, limit=2)
    [3, 1]
    """
    out: list[int] = []
    for change in reversed(changes):
        v = change.version
        if v is None or v == current or v in out:
            continue
        out.append(v)
        if len(out) == limit:
            break
    return out


def restored_for(changes: Sequence[ChampionChange], request_id: str) -> int | None:
    """The version a restoration for ``request_id`` moved the champion to, if one did (a
    request read again after a restart is not checked twice)."""
    for change in changes:
        if change.trigger_id == request_id and change.reason.startswith(RESTORE_REASON):
            return change.version
    return None
