"""Restoring an earlier champion whose concept came back: the decision, as a pure function.

When a concept drift is detected, training scores the model's earlier champions on
the labelled examples after the onset next to the current champion
(``driftline.training.recurring``); this is the rule that picks the one to restore,
shared with the drift evaluation (``driftline.monitoring.eval_recurring``) so that
what is measured is what runs.  A restoration is an ordinary ``SetAlias`` whose
reason starts with :data:`RESTORE_REASON`.

>>> from driftline.registry_api.promotion import PromotionPolicy
>>> policy = PromotionPolicy(metric="accuracy", min_improvement=0.005)
>>> pick = choose_restore(
...     {1: {"accuracy": 0.95, "eval_examples": 200}, 2: {"accuracy": 0.70, "eval_examples": 200}},
...     {"accuracy": 0.62, "eval_examples": 200}, champion=3, policy=policy, min_score=0.8)
>>> pick.version, pick.reason.startswith(RESTORE_REASON)
(1, True)
>>> choose_restore({1: {"accuracy": 0.75, "eval_examples": 200}},
...     {"accuracy": 0.62, "eval_examples": 200}, champion=3, policy=policy, min_score=0.8).version
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from driftline.registry_api.promotion import PromotionPolicy, decide_promotion

__all__ = ["RESTORE_REASON", "RestoreChoice", "choose_restore"]

RESTORE_REASON = "recurring concept"
"""How the reason of a restoration starts (``driftline models history`` shows it)."""


@dataclass(frozen=True)
class RestoreChoice:
    """What :func:`choose_restore` decided: the version to restore (None: keep the
    champion) and why, for the log, the trace and the alias history."""

    version: int | None
    reason: str


def choose_restore(
    scores: Mapping[int, Mapping[str, float]],
    champion_scores: Mapping[str, float],
    *,
    champion: int,
    policy: PromotionPolicy,
    min_score: float,
) -> RestoreChoice:
    """The earlier champion to restore, given every one's ``scores`` (by version) and the
    champion's on the same examples after the onset.

    The best earlier version (in the metric's direction) is restored when
    :func:`decide_promotion` would promote it over the champion (better by the
    promotion margin) and it reaches ``min_score``: a version that is merely less bad
    than a drifted champion is not the concept coming back, and the retraining is the
    answer then.  ``policy.min_eval_examples`` is the fewest examples after the onset
    the comparison may be made on (the check's window, not a candidate's held-out slice).
    """
    metric = policy.metric
    scored = {v: s for v, s in scores.items() if metric in s}
    if not scored or metric not in champion_scores:
        return RestoreChoice(None, f"no earlier champion could be scored on {metric}")
    sign = 1.0 if policy.maximize else -1.0
    best = max(scored, key=lambda v: (sign * scored[v][metric], v))
    score = scored[best][metric]
    # The candidate has "seen" enough: an earlier champion was promoted once already.
    decision = decide_promotion(
        {**scored[best], policy.examples_key: float(policy.min_examples)}, champion_scores, policy
    )
    n = int(scored[best].get(policy.eval_examples_key, 0))
    against = f"v{best} {metric} {score:.4f} vs champion v{champion} {champion_scores[metric]:.4f}"
    if not decision.promote:
        return RestoreChoice(None, f"{against} on {n} examples after the onset: {decision.reason}")
    good = score >= min_score if policy.maximize else score <= min_score
    if not good:
        return RestoreChoice(
            None,
            f"{against} on {n} examples after the onset: better, but short of the "
            f"{min_score:g} a returning concept should reach; the retraining answers",
        )
    return RestoreChoice(
        best,
        f"{RESTORE_REASON}: {against} on the {n} labelled examples after the onset "
        f"(margin {policy.min_improvement:g}, floor {min_score:g})",
    )
