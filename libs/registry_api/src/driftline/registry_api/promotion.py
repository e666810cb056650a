"""The promotion policy: should a candidate become champion?

A pure function, so the caller of ``SetAlias`` (training) decides with the same
rule the registry documents, and a unit test pins it down without any socket.

>>> policy = PromotionPolicy(metric="accuracy", min_improvement=0.01, min_examples=500)
>>> decide_promotion({"accuracy": 0.90, "examples": 1000}, None, policy).promote
True
>>> decide_promotion({"accuracy": 0.905}, {"accuracy": 0.90}, policy).promote
False
>>> decide_promotion({"logloss": 0.30}, {"logloss": 0.35},
...                  PromotionPolicy(metric="logloss", min_improvement=0.02)).promote
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LOWER_IS_BETTER",
    "Decision",
    "PromotionPolicy",
    "decide_promotion",
    "higher_is_better",
]

LOWER_IS_BETTER: frozenset[str] = frozenset(
    {
        "logloss",
        "log_loss",
        "cross_entropy",
        "crossentropy",
        "brier",
        "mae",
        "mse",
        "rmse",
        "rmsle",
        "mape",
        "smape",
        "loss",
        "error",
        "error_rate",
        "hinge",
    }
)
"""Metric names (lower-cased) where a smaller value is better; all others: bigger is better."""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (``accuracy``: yes, ``logloss``: no)."""
    return metric.strip().lower() not in LOWER_IS_BETTER


@dataclass(frozen=True)
class PromotionPolicy:
    """When a candidate may become champion.

    ``min_improvement`` is an absolute margin in the metric's units.  The number
    of examples the candidate has seen is read from ``candidate_metrics[examples_key]``.
    ``higher_is_better=None`` infers the direction from the metric name.
    """

    metric: str = "accuracy"
    min_improvement: float = 0.0
    min_examples: int = 0
    """The first model ever is promoted only once it has seen this many examples."""
    min_eval_examples: int = 0
    """A comparison needs an evaluation window of at least this many examples."""
    higher_is_better: bool | None = None
    examples_key: str = "examples"
    eval_examples_key: str = "eval_examples"

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("a promotion policy needs a metric name")
        if self.min_improvement < 0:
            raise ValueError("min_improvement must be >= 0")
        if self.min_examples < 0 or self.min_eval_examples < 0:
            raise ValueError("min_examples and min_eval_examples must be >= 0")

    @property
    def maximize(self) -> bool:
        """True when a larger metric value is better."""
        if self.higher_is_better is not None:
            return self.higher_is_better
        return higher_is_better(self.metric)


@dataclass(frozen=True)
class Decision:
    """The outcome: promote to champion, or keep as challenger, and why."""

    promote: bool
    reason: str


def decide_promotion(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    policy: PromotionPolicy,
) -> Decision:
    """Decide whether the candidate replaces the champion.

    * No champion: promote when the candidate has seen ``policy.min_examples``.
    * Otherwise both metric sets must come from the same evaluation window
      (the caller's duty) and hold ``policy.metric``; the candidate is promoted
      only if it is better by at least ``policy.min_improvement`` (direction per
      :attr:`PromotionPolicy.maximize`).  Else it stays challenger.
    """
    metric = policy.metric
    if champion_metrics is None:
        seen = candidate_metrics.get(policy.examples_key, 0.0)
        if seen >= policy.min_examples:
            return Decision(
                True,
                f"no champion yet and the candidate has seen {seen:g} examples "
                f"(>= {policy.min_examples})",
            )
        return Decision(
            False,
            f"no champion yet but the candidate has seen only {seen:g} examples "
            f"(< {policy.min_examples}); it stays challenger",
        )
    if metric not in candidate_metrics:
        return Decision(False, f"the candidate has no {metric!r} metric; it stays challenger")
    if metric not in champion_metrics:
        return Decision(
            False,
            f"the champion has no {metric!r} on the evaluation window; "
            "cannot compare, the candidate stays challenger",
        )
    if policy.min_eval_examples:
        window = candidate_metrics.get(policy.eval_examples_key, 0.0)
        if window < policy.min_eval_examples:
            return Decision(
                False,
                f"the evaluation window has {window:g} examples (< {policy.min_eval_examples}); "
                "too small to decide, the candidate stays challenger",
            )
    cand, champ = candidate_metrics[metric], champion_metrics[metric]
    gain = cand - champ if policy.maximize else champ - cand
    direction = "higher" if policy.maximize else "lower"
    if gain >= policy.min_improvement and gain > 0:
        return Decision(
            True,
            f"{metric} {cand:.4f} vs champion {champ:.4f}: better by {gain:.4f} "
            f"({direction} is better, margin {policy.min_improvement:g})",
        )
    return Decision(
        False,
        f"{metric} {cand:.4f} vs champion {champ:.4f}: improvement {gain:.4f} is below the "
        f"margin {policy.min_improvement:g} ({direction} is better); it stays challenger",
    )
