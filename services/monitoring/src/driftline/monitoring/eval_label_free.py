"""Drift the labels cannot show yet, and drift that needs no retraining, measured.

Two questions of issue 18, each answered on Agrawal (function 0) and SEA
(threshold 8) with the monitor's own components (Agrawal with River's 5 % input
perturbation, see :data:`AGRAWAL_PERTURBATION`):

**Delayed labels** (``delayed-<stream>``).  A Hoeffding tree learns the first
``n_train`` examples and is then served frozen, as a champion is.  Its labels
come ``label_delay`` events after its predictions.  At ``n_before`` the inputs
move toward the true decision boundary (Agrawal: ages near 40 and 60; SEA:
``x1 + x2`` near 8) — the labelling rule does not change.  The model is less
sure there and wrong more often, so its real accuracy drops.  Two signals race:

* CBPE (:mod:`driftline.monitoring.performance_estimation`, as the monitor core
  runs it): calibrated on the first ``cbpe_reference`` labelled predictions (which
  arrive ``label_delay`` events late), then fed every served confidence; its
  firing time is the event at which the estimate falls below the floor;
* the production label path: the monitoring detector and :class:`RetrainPolicy`
  (:func:`~driftline.monitoring.eval_drift.policy_hits`) on the error stream, where
  the outcome of event ``i`` is only known at event ``i + label_delay``.

Both times are counted in events from the drift; the target is CBPE first.  This
scenario is built for what CBPE can see, and only that: a confidence-based
estimate moves when the inputs go where the model is unsure.  Pure concept drift
(``P(y | x)`` changes, inputs unchanged) leaves every served confidence as it was
and cannot move the estimate; ``concept-only-agrawal`` (Agrawal function 0 -> 2
on the same inputs) shows that, informationally, with no target.

**Data-only drift** (``data-only-<stream>``).  The population moves in features
the labelling rule ignores (Agrawal: salaries rise; SEA: ``x3`` grows), so the
frozen model stays as good as it was.  The monitor's
:class:`~driftline.monitoring.distribution_drift.DistributionMonitor` (its
settings' defaults, against the reference statistics of the training rows, as the
registry records them) must report the data drift in every seed, and the policy
on the error stream must ask for no retraining.

**Controls** (``stationary-<stream>``): nothing moves; CBPE must stay silent.

Run ``python -m driftline.monitoring.eval_label_free --help``; :func:`run` returns
the report ``driftline eval-drift`` and the bench include.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from river import datasets, tree

from driftline.drift_detectors import DEFAULT_DETECTOR, detector_builder
from driftline.drift_stats.reference import build_reference
from driftline.monitoring.distribution_drift import DistributionConfig, DistributionMonitor
from driftline.monitoring.eval_drift import Target, policy_hits
from driftline.monitoring.performance_estimation import (
    CBPEConfig,
    PerformanceEstimator,
    confidence_of,
)
from driftline.settings import MonitoringSettings

__all__ = ["SCENARIOS", "TARGETS", "LabelFreeConfig", "Target", "check_targets", "main", "run"]

Example = tuple[dict[str, Any], Any]


@dataclass(frozen=True)
class _Domain:
    """A generator, its true decision boundary, and where its population can move."""

    base: Callable[[int], Iterator[Example]]
    near_boundary: Callable[[dict[str, Any]], bool]
    """Inputs close to the labelling rule's boundary (where a model is least sure)."""
    moved: Callable[[dict[str, Any]], bool]
    """Inputs of the region a data-only drift moves the population to (the rule ignores it)."""


def _keys_as_str(it: Iterator[tuple[dict[Any, Any], Any]], prefix: str = "") -> Iterator[Example]:
    for x, y in it:
        yield {f"{prefix}{k}": v for k, v in x.items()}, y


AGRAWAL_PERTURBATION = 0.05
"""River's Agrawal noise on the observed inputs: without it a tree learns function 0's
age thresholds exactly and is never unsure; with it the ages near 40 and 60 are
genuinely ambiguous (the tree is right there three times in four, elsewhere always)."""


def _agrawal(seed: int, function: int = 0) -> Iterator[Example]:
    gen = datasets.synth.Agrawal(
        classification_function=function, perturbation=AGRAWAL_PERTURBATION, seed=seed
    )
    return _keys_as_str(iter(gen))


def _sea(seed: int) -> Iterator[Example]:
    # River names SEA's features 0, 1, 2; the class is x0 + x1 <= 8 (x2 is noise).
    return _keys_as_str(iter(datasets.synth.SEA(variant=0, seed=seed)), prefix="x")


DOMAINS: dict[str, _Domain] = {
    "agrawal": _Domain(
        base=_agrawal,
        # Function 0: class 1 when age < 40 or age >= 60 (ages are whole years).
        near_boundary=lambda x: min(abs(x["age"] - 39.5), abs(x["age"] - 59.5)) <= 3,
        # Salaries rise (commission, paid below 75k only, follows); function 0 ignores both.
        moved=lambda x: x["salary"] >= 100_000,
    ),
    "sea": _Domain(
        base=_sea,
        near_boundary=lambda x: abs(x["x0"] + x["x1"] - 8.0) <= 1.0,
        moved=lambda x: x["x2"] >= 7.0,
    ),
}

SCENARIOS: dict[str, str] = {
    "delayed-agrawal": "Agrawal f0 (5 % noise), inputs move to ages near 40 and 60; labels late",
    "delayed-sea": "SEA threshold 8, inputs move to x0 + x1 near 8; labels late",
    "concept-only-agrawal": "Agrawal f0 -> f2 on unchanged inputs (CBPE cannot see it; no target)",
    "data-only-agrawal": "Agrawal f0, salaries rise (the rule ignores salary)",
    "data-only-sea": "SEA threshold 8, x2 grows (the rule ignores x2)",
    "stationary-agrawal": "Agrawal f0, nothing moves (control)",
    "stationary-sea": "SEA threshold 8, nothing moves (control)",
}
"""The scenarios :func:`run` measures, by name (``<kind>-<stream>``)."""


@dataclass(frozen=True)
class LabelFreeConfig:
    """Sizes (events) and the monitor settings under test."""

    n_train: int = 5_000
    """Examples the model learns before it is frozen and served."""
    n_before: int = 10_000
    """Served events before the drift (the reference's labels and the detector's warm-up
    must be in by then: ``cbpe_reference + label_delay`` and the detector's warm-up)."""
    n_after: int = 6_000
    """Served events after the drift (the label path's detection may land after the last
    event: its labels come ``label_delay`` later, and are counted all the same)."""
    control_events: int = 30_000
    """Served events of a stationary control."""
    label_delay: int = 5_000
    """Events between a prediction and its label."""
    shift_keep: float = 0.05
    """Share of the inputs outside the region a drift moves to that are still served."""
    cbpe: CBPEConfig = field(default_factory=CBPEConfig)
    """The estimator: ``monitoring.cbpe_reference``, ``cbpe_window``, ``cbpe_margin``."""
    distribution: DistributionConfig = field(default_factory=DistributionConfig)
    """The data-drift monitor: ``monitoring.drift_window``, thresholds, ``kswin_every``."""
    detector: str = DEFAULT_DETECTOR
    """The label path's detector (``monitoring.detector.type``)."""
    detector_params: Mapping[str, Any] = field(default_factory=dict)
    """Its parameters."""
    cooldown_events: int = 600
    """The policy's cooldown in events (one event per second)."""

    @classmethod
    def from_settings(cls, settings: MonitoringSettings, **sizes: Any) -> LabelFreeConfig:
        """The configuration the monitor with ``settings`` runs, at the given sizes."""
        return cls(
            cbpe=CBPEConfig(
                reference=settings.cbpe_reference,
                window=settings.cbpe_window,
                margin=settings.cbpe_margin,
            ),
            distribution=DistributionConfig(
                window=settings.drift_window,
                psi_threshold=settings.psi_threshold,
                js_threshold=settings.js_threshold,
                kswin_every=settings.kswin_every,
            ),
            detector=settings.detector.type,
            detector_params=dict(settings.detector.params),
            cooldown_events=round(settings.cooldown_s),
            **sizes,
        )


QUICK: dict[str, Any] = {
    "n_train": 5_000,
    "n_before": 4_000,
    "n_after": 3_000,
    "control_events": 8_000,
}
"""Small sizes for tests and ``--quick`` (with a smaller delay, reference and warm-up; the
model learns as much as at full size, or SEA's tree is too coarse to be unsure anywhere)."""


TARGETS: tuple[Target, ...] = (
    Target("delayed-agrawal", "cbpe_not_first", 0, issue=18),
    Target("delayed-sea", "cbpe_not_first", 0, issue=18),
    Target("delayed-agrawal", "cbpe_false_alarms", 0, issue=18),
    Target("delayed-sea", "cbpe_false_alarms", 0, issue=18),
    Target("data-only-agrawal", "data_misses", 0, issue=18),
    Target("data-only-sea", "data_misses", 0, issue=18),
    Target("data-only-agrawal", "retrain_requests", 0, issue=18),
    Target("data-only-sea", "retrain_requests", 0, issue=18),
    Target("stationary-agrawal", "cbpe_false_alarms", 0, issue=18),
    Target("stationary-sea", "cbpe_false_alarms", 0, issue=18),
)
"""Issue 18's bars: ``metric <= limit`` on a scenario's summary (eval-drift's
:class:`~driftline.monitoring.eval_drift.Target`, its stream being the scenario)."""


# ---------------------------------------------------------------------------- one run


def _filtered(
    examples: Iterator[Example], keep: Callable[[dict[str, Any]], bool], share: float, seed: int
) -> Iterator[Example]:
    """The examples in ``keep``'s region, and a ``share`` of the others (rejection sampling:
    the generator's labelling rule is untouched, only who shows up changes)."""
    rng = random.Random(seed)
    for x, y in examples:
        if keep(x) or rng.random() < share:
            yield x, y


def _served(scenario: str, seed: int, cfg: LabelFreeConfig) -> tuple[Iterator[Example], int | None]:
    """The served stream (after training) and its drift index (None for a control)."""
    kind, stream = scenario.rsplit("-", 1)
    if scenario == "concept-only-agrawal":
        before = _agrawal(seed + 20_000)
        after = _agrawal(seed + 30_000, function=2)
        return itertools.chain(itertools.islice(before, cfg.n_before), after), cfg.n_before
    domain = DOMAINS[stream]
    if kind == "stationary":
        return domain.base(seed + 20_000), None
    region = domain.near_boundary if kind == "delayed" else domain.moved  # data-only
    before = itertools.islice(domain.base(seed + 20_000), cfg.n_before)
    after = _filtered(domain.base(seed + 30_000), region, cfg.shift_keep, seed)
    return itertools.chain(before, after), cfg.n_before


def _stream_of(scenario: str) -> str:
    return scenario.rsplit("-", 1)[1]


def _run_one(task: tuple[str, int, LabelFreeConfig]) -> dict[str, Any]:
    """One scenario and seed: train, freeze, serve, and record every signal's firing index."""
    scenario, seed, cfg = task
    started = time.perf_counter()
    domain = DOMAINS[_stream_of(scenario)]
    # Majority-class leaves: the leaf's class shares are the served probabilities (naive
    # Bayes leaves give the same signal here at several times the cost per prediction).
    model: Any = tree.HoeffdingTreeClassifier(leaf_prediction="mc")
    training = list(itertools.islice(domain.base(seed), cfg.n_train))
    for x, y in training:
        model.learn_one(x, y)

    examples, drift_at = _served(scenario, seed, cfg)
    events = cfg.control_events if drift_at is None else cfg.n_before + cfg.n_after
    watch_data = scenario.startswith(("data-only", "stationary"))
    features = (
        DistributionMonitor(cfg.distribution, reference=build_reference(x for x, _ in training))
        if watch_data
        else None
    )
    estimator = PerformanceEstimator(cfg.cbpe)
    confidences: list[float] = []
    errors = bytearray()
    cbpe_alarms: list[int] = []
    data_findings: list[tuple[int, str, str]] = []
    estimates: list[tuple[int, float]] = []
    for i, (x, y) in enumerate(itertools.islice(examples, events)):
        # The label of event i - delay arrives now: it may complete the calibration.
        j = i - cfg.label_delay
        if j >= 0:
            estimator.add_reference(confidences[j], errors[j] == 0)
        proba = model.predict_proba_one(x)
        prediction = max(proba, key=proba.__getitem__) if proba else None
        confidence = confidence_of(prediction, {str(k): v for k, v in proba.items()}) or 0.0
        confidences.append(confidence)
        errors.append(0 if prediction == y else 1)
        if estimator.observe(confidence) is not None:
            cbpe_alarms.append(i)
        if i % 500 == 0 and estimator.estimate is not None:
            estimates.append((i, estimator.estimate))
        if features is not None:
            for f in features.update(x):
                data_findings.append((i, f.feature, f.detector))

    detector = detector_builder(cfg.detector, cfg.detector_params)()
    # The outcome of event i is known at event i + delay: that is when the policy asks.
    label_requests = [
        h + cfg.label_delay
        for h in policy_hits(detector, bytes(errors), cooldown_events=cfg.cooldown_events)
    ]
    return {
        "scenario": scenario,
        "seed": seed,
        "events": len(errors),
        "drift_at": drift_at,
        "label_delay": cfg.label_delay,
        "cbpe_window": cfg.cbpe.window,
        "calibrated_at": cfg.cbpe.reference - 1 + cfg.label_delay,
        "reference_accuracy": estimator.reference_accuracy,
        "cbpe_alarms": cbpe_alarms,
        "label_requests": label_requests,
        "data_findings": data_findings,
        "estimates": estimates,
        "errors": _error_rates(errors, drift_at),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _error_rates(errors: bytearray, drift_at: int | None) -> dict[str, float | None]:
    """True error rate of the served model before and after the drift (labels in hindsight)."""
    at = len(errors) if drift_at is None else drift_at
    before, after = errors[:at], errors[at:]
    return {
        "before": round(sum(before) / len(before), 4) if before else None,
        "after": round(sum(after) / len(after), 4) if after else None,
    }


# ----------------------------------------------------------------------- summaries


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.fmean(kept), 4) if kept else None


def _summarize(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario over its seeds: when each signal fired, what it cost, what was true."""
    cbpe_delays: list[int] = []
    label_delays: list[int] = []
    leads: list[int] = []
    cbpe_false = cbpe_misses = label_misses = not_first = 0
    data_delays: list[int] = []
    data_false = data_misses = 0
    estimates_after: list[float] = []
    for r in runs:
        at = r["drift_at"]
        cut = r["events"] if at is None else at
        cbpe_false += sum(1 for a in r["cbpe_alarms"] if a < cut)
        data_false += sum(1 for f in r["data_findings"] if f[0] < cut)
        if at is None:
            continue
        estimates_after += [e for i, e in r["estimates"] if i >= at + r["cbpe_window"]]
        cbpe = next((a for a in r["cbpe_alarms"] if a >= at), None)
        # A request is the drift's when the outcome that completed it was served after it.
        label = next((h for h in r["label_requests"] if h - r["label_delay"] >= at), None)
        data = next((f[0] for f in r["data_findings"] if f[0] >= at), None)
        if cbpe is None:
            cbpe_misses += 1
        else:
            cbpe_delays.append(cbpe - at)
        if label is None:
            label_misses += 1
        else:
            label_delays.append(label - at)
        if cbpe is None or (label is not None and label <= cbpe):
            not_first += 1
        elif label is not None:
            leads.append(label - cbpe)
        if data is None:
            data_misses += 1
        else:
            data_delays.append(data - at)
    error_after = _mean([r["errors"]["after"] for r in runs])
    out: dict[str, Any] = {
        "seeds": len(runs),
        "description": SCENARIOS[scenario],
        "cbpe_false_alarms": cbpe_false,
        "cbpe_alarms": sum(len(r["cbpe_alarms"]) for r in runs),
        "retrain_requests": sum(len(r["label_requests"]) for r in runs),
        "error_before": _mean([r["errors"]["before"] for r in runs]),
        "error_after": error_after,
        "reference_accuracy": _mean([r["reference_accuracy"] for r in runs]),
    }
    if runs[0]["drift_at"] is not None:
        out["accuracy_after"] = None if error_after is None else round(1 - error_after, 4)
        out["estimate_after"] = _mean(estimates_after)
    if scenario.startswith(("delayed", "concept-only")):
        out |= {
            "cbpe_median_delay": _median(cbpe_delays),
            "cbpe_max_delay": max(cbpe_delays) if cbpe_delays else None,
            "cbpe_misses": cbpe_misses,
            "label_median_delay": _median(label_delays),
            "label_misses": label_misses,
            "cbpe_not_first": not_first,
            "median_lead": _median(leads),
        }
    if scenario.startswith(("data-only", "stationary")):
        out["data_false_alarms"] = data_false
    if scenario.startswith("data-only"):
        out |= {"data_misses": data_misses, "data_median_delay": _median(data_delays)}
    return out


def check_targets(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target of a scenario that was run, with its figure and whether it is met."""
    rows = []
    for t in TARGETS:
        if t.stream not in summary:
            continue
        figure = summary[t.stream].get(t.metric)
        rows.append(
            {
                "target": t.describe(),
                "value": figure,
                "met": figure is not None and figure <= t.limit,
            }
        )
    return rows


def run(
    seeds: int | Sequence[int] = 5,
    *,
    config: LabelFreeConfig | None = None,
    scenarios: Sequence[str] | None = None,
    processes: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every scenario over ``seeds`` (a count: seeds 1..n, or the seeds themselves).

    Returns ``{"config", "results": {scenario: summary}, "targets", "runs", "wall_seconds"}``;
    ``runs`` holds each seed's firing indices for anyone who wants to look closer.
    """
    cfg = config or LabelFreeConfig()
    chosen = list(scenarios or SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    if cfg.cbpe.reference + cfg.label_delay >= cfg.n_before:
        raise ValueError(
            f"the drift at event {cfg.n_before} would come before the calibration is complete "
            f"(cbpe reference {cfg.cbpe.reference} + label delay {cfg.label_delay}): "
            "raise n_before or lower them"
        )
    seed_list = list(range(1, seeds + 1)) if isinstance(seeds, int) else list(seeds)
    tasks = [(s, seed, cfg) for s in chosen for seed in seed_list]
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for r in pool.imap_unordered(_run_one, tasks):
                runs.append(r)
                if progress:
                    progress(f"{r['scenario']} seed {r['seed']} done")
    else:
        for task in tasks:
            runs.append(_run_one(task))
            if progress:
                progress(f"{task[0]} seed {task[1]} done")
    results = {
        s: _summarize(s, sorted((r for r in runs if r["scenario"] == s), key=lambda r: r["seed"]))
        for s in chosen
    }
    return {
        "config": {
            "seeds": seed_list,
            "n_train": cfg.n_train,
            "n_before": cfg.n_before,
            "n_after": cfg.n_after,
            "control_events": cfg.control_events,
            "label_delay": cfg.label_delay,
            "cbpe_window": cfg.cbpe.window,
            "shift_keep": cfg.shift_keep,
            "cbpe": {
                "reference": cfg.cbpe.reference,
                "window": cfg.cbpe.window,
                "margin": cfg.cbpe.margin,
            },
            "policy": {"detector": cfg.detector, **cfg.detector_params},
            "cooldown_events": cfg.cooldown_events,
        },
        "results": results,
        "targets": check_targets(results),
        "runs": sorted(runs, key=lambda r: (r["scenario"], r["seed"])),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def render(report: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`run` 's report."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:g}"

    cols = [
        ("cbpe_median_delay", "cbpe"),
        ("label_median_delay", "labels"),
        ("median_lead", "lead"),
        ("cbpe_not_first", "!first"),
        ("cbpe_false_alarms", "cbpeFA"),
        ("data_median_delay", "data"),
        ("data_misses", "dmiss"),
        ("retrain_requests", "retrain"),
        ("error_before", "err0"),
        ("error_after", "err1"),
        ("reference_accuracy", "refacc"),
        ("estimate_after", "est1"),
    ]
    lines = [f"{'scenario':<22}" + "".join(f"{h:>9}" for _, h in cols)]
    for scenario, m in report["results"].items():
        lines.append(f"{scenario:<22}" + "".join(f"{f(m.get(k)):>9}" for k, _ in cols))
    lines.append("")
    for t in report["targets"]:
        lines.append(f"{'MET ' if t['met'] else 'MISS'}  {t['target']}  ({t['value']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run, print the table; 0 when every target is met, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m driftline.monitoring.eval_label_free",
        description="Measure the label-free accuracy estimate (CBPE) against delayed labels, "
        "and data-only drift against the retraining policy, with the monitoring settings "
        "(DRIFTLINE_CONFIG, DRIFTLINE_MONITORING__*).",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per scenario (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 seeds (tests)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    from driftline.settings import load_settings

    try:
        cfg = LabelFreeConfig.from_settings(load_settings().monitoring)
        detector_builder(cfg.detector, cfg.detector_params)
    except ValueError as exc:  # a ConfigError, or a detector that cannot be built
        print(f"eval_label_free: {exc}", file=sys.stderr)
        return 2
    seeds = args.seeds
    if args.quick:
        cfg = quick_config(cfg)
        seeds = 2 if seeds == 5 else seeds
    report = run(seeds, config=cfg, scenarios=args.scenario, processes=max(1, args.processes))
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(t["met"] for t in report["targets"]) else 1


def quick_config(cfg: LabelFreeConfig) -> LabelFreeConfig:
    """``cfg`` at test sizes: shorter streams, a 1,000-event delay, a 500-label reference, a
    300-event window, and the error detector warmed up on 1,000 labels."""
    return replace(
        cfg,
        **QUICK,
        label_delay=1_000,
        cbpe=replace(cfg.cbpe, reference=500, window=300),
        detector_params={**cfg.detector_params, "warmup": 1_000}
        if cfg.detector == DEFAULT_DETECTOR
        else cfg.detector_params,
    )


if __name__ == "__main__":
    sys.exit(main())
