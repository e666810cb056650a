"""The promotion policy as a table of cases."""

from __future__ import annotations

import pytest

from driftline.registry.core import decide_promotion as core_decide
from driftline.registry_api.promotion import (
    PromotionPolicy,
    decide_promotion,
    higher_is_better,
)

ACC = PromotionPolicy(metric="accuracy", min_improvement=0.01, min_examples=500)
LOSS = PromotionPolicy(metric="logloss", min_improvement=0.02, min_examples=100)

CASES = [
    # (candidate, champion, policy, promote)
    ({"accuracy": 0.8, "examples": 500}, None, ACC, True),
    ({"accuracy": 0.8, "examples": 499}, None, ACC, False),
    ({"accuracy": 0.8}, None, ACC, False),
    ({"accuracy": 0.92}, {"accuracy": 0.90}, ACC, True),
    ({"accuracy": 0.91}, {"accuracy": 0.90}, ACC, True),  # exactly the margin
    ({"accuracy": 0.905}, {"accuracy": 0.90}, ACC, False),  # below the margin
    ({"accuracy": 0.85}, {"accuracy": 0.90}, ACC, False),  # worse
    ({"logloss": 0.30}, {"logloss": 0.35}, LOSS, True),  # lower is better
    ({"logloss": 0.40}, {"logloss": 0.35}, LOSS, False),
    ({"logloss": 0.34}, {"logloss": 0.35}, LOSS, False),  # better, under the margin
    ({"mae": 1.0}, {"mae": 2.0}, PromotionPolicy(metric="mae"), True),
    ({"accuracy": 0.9}, {"accuracy": 0.9}, PromotionPolicy(), False),  # a tie never promotes
    ({"f1": 0.9}, {"accuracy": 0.5}, PromotionPolicy(metric="f1"), False),  # champion lacks it
    ({"accuracy": 0.9}, {"accuracy": 0.5}, PromotionPolicy(metric="f1"), False),
    (
        {"accuracy": 0.99, "eval_examples": 10},
        {"accuracy": 0.5},
        PromotionPolicy(min_eval_examples=100),
        False,
    ),
    (
        {"accuracy": 0.99, "eval_examples": 100},
        {"accuracy": 0.5},
        PromotionPolicy(min_eval_examples=100),
        True,
    ),
    (  # an explicit direction overrides the name
        {"score": 1.0},
        {"score": 2.0},
        PromotionPolicy(metric="score", higher_is_better=False),
        True,
    ),
]


@pytest.mark.parametrize(("candidate", "champion", "policy", "promote"), CASES)
def test_policy_table(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    policy: PromotionPolicy,
    promote: bool,
) -> None:
    decision = decide_promotion(candidate, champion, policy)
    assert decision.promote is promote, decision.reason
    assert decision.reason
    assert core_decide(candidate, champion, policy) == decision


def test_reason_names_the_metric_and_values() -> None:
    d = decide_promotion({"accuracy": 0.905}, {"accuracy": 0.9}, ACC)
    assert "accuracy" in d.reason and "0.9050" in d.reason and "challenger" in d.reason


def test_metric_direction_inference() -> None:
    assert higher_is_better("accuracy") and higher_is_better("ROCAUC")
    assert not higher_is_better("LogLoss") and not higher_is_better("rmse")


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="min_improvement"):
        PromotionPolicy(min_improvement=-0.1)
    with pytest.raises(ValueError, match="metric"):
        PromotionPolicy(metric="")
