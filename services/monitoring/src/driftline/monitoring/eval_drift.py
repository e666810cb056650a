"""``driftline eval-drift``: the retraining policy against River's detectors, measured.

Every stream is a known story: a Hoeffding tree's prequential error stream on a
River generator whose concept switches at a known index (SEA, Agrawal, STAGGER,
Hyperplane), the same concepts taking over gradually along a ramp of 1,000 or
5,000 examples (``sea-gradual-1000``, ..., ``hyperplane-gradual-5000``: the drift
index is the ramp's start), Agrawal's old concept returning 10,000 examples after
it left (``agrawal-recurring``, scored once per change point: the return is the
row ``agrawal-recurring/return``), stationary controls that must raise nothing
(Agrawal, SEA with 10 % label noise), and pure Bernoulli error streams (see
:mod:`~driftline.monitoring.synthetic_streams`).  For each stream (or change point)
and detector it reports the detection delay in events (median, p90 over the
seeds), false alarms (detections before the drift, or anywhere on a control),
misses (no detection between the change and the next one, or the end) and extra
detections after the first true one.  :data:`TARGETS` are the bars the policy
must meet.

The *policy* is what the monitor runs in production: the detector of
``monitoring.detector`` (by default the error-rise detector) feeding
:class:`RetrainPolicy`; what it counts are retraining requests.  The other
detectors, named as the settings name them (``river.ADWIN``, ...; River's
defaults, or any registered plug-in), count raw detections, as they would if
wired to retraining directly.  Every one is built by
:func:`driftline.drift_detectors.detector_builder` and driven through River's
interface (``update``, ``drift_detected``), exactly as the monitor drives it.

Run ``python -m driftline.monitoring.eval_drift --help``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from driftline.contracts.messages import DriftEvent, DriftKind
from driftline.drift_detectors import (
    DEFAULT_DETECTOR,
    ErrorDetector,
    detections,
    detector_builder,
    detector_names,
    detector_params,
    drift_report,
)
from driftline.monitoring.core import error_detectors
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig
from driftline.monitoring.synthetic_streams import (
    GRADUAL_WIDTHS,
    STREAMS,
    bernoulli_errors,
    prequential_errors,
)
from driftline.settings import ConfigError, MonitoringSettings, load_settings

__all__ = ["TARGETS", "EvalConfig", "Target", "evaluate", "main", "policy_hits"]

POLICY = "policy"
COMPARED = (
    "river.ADWIN",
    "river.PageHinkley",
    "river.DDM",
    "river.EDDM",
    "river.HDDMA",
    "river.HDDMW",
    "river.FHDDM",
)
"""River detectors compared against the policy, with River's defaults (``river.KSWIN``, at
~0.7 ms per update and meant for continuous data, is left out of the error-stream comparison;
``--detector`` runs it, or any registered name)."""

BERNOULLI = {
    "error-0.2-0.8": (0.2, 0.8),
    "error-0.2-0.5": (0.2, 0.5),
    "error-0.2-stationary": (0.2, 0.2),
}
"""Pure error streams: rate before and after the change point."""

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EvalConfig:
    """What to run."""

    seeds: int = 5
    n_before: int = 10_000
    n_after: int = 10_000
    control_events: int = 100_000
    bernoulli_before: int = 10_000
    bernoulli_after: int = 5_000
    processes: int = 2
    detectors: tuple[str, ...] = (POLICY, *COMPARED)
    """``policy`` and detector names (see :func:`driftline.drift_detectors.detector_names`); a
    detector registered in this process only reaches worker processes through an entry point."""
    streams: tuple[str, ...] = (*STREAMS, *BERNOULLI)
    cooldown_events: int = 600
    """The policy's cooldown, in events (the eval clock advances one second per event)."""
    policy_detector: str = DEFAULT_DETECTOR
    """The policy's detector (``monitoring.detector.type``)."""
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    """Its parameters (the rest of ``monitoring.detector``)."""


@dataclass(frozen=True)
class Target:
    """One bar the policy's figures must meet (issue 7's, then issue 18's)."""

    stream: str
    metric: str
    limit: float
    issue: int = 7
    """The issue that set the bar (the bench report's headline groups them by it)."""

    def describe(self) -> str:
        """A human-readable form, e.g. ``sea: median_delay <= 300``."""
        return f"{self.stream}: {self.metric} <= {self.limit:g}"


TARGETS: tuple[Target, ...] = (
    Target("sea", "misses", 0),
    Target("agrawal", "misses", 0),
    Target("stagger", "misses", 0),
    Target("sea", "median_delay", 300),
    Target("agrawal", "median_delay", 100),
    Target("stagger", "median_delay", 100),
    Target("agrawal-stationary", "false_alarms", 0),
    Target("sea-noise-stationary", "false_alarms", 0),
    Target("error-0.2-0.8", "p90_delay", 300),
    Target("error-0.2-0.5", "p90_delay", 1000),
    Target("error-0.2-stationary", "false_alarms_per_1000", 0.05),
    # Issue 18: gradual drift (no miss, median delay within the ramp's width) and a
    # returning concept (detected again, every seed).
    *(
        Target(f"{base}-gradual-{width}", metric, limit, issue=18)
        for base in ("sea", "agrawal", "hyperplane")
        for width in GRADUAL_WIDTHS
        for metric, limit in (("misses", 0), ("median_delay", width))
    ),
    Target("agrawal-recurring", "misses", 0, issue=18),
    Target("agrawal-recurring/return", "misses", 0, issue=18),
)
"""The bars ``eval-drift`` checks (its exit status) and the bench report's headline shows.

Issue 7: abrupt drift on SEA, Agrawal and STAGGER found without a miss and soon;
no request on the stationary controls (Agrawal, SEA with 10 % label noise, a 0.2
Bernoulli error rate); pure error rises found within a bound.  Issue 18: a drift
spread over a ramp of 1,000 or 5,000 examples (SEA, Agrawal, Hyperplane) found in
every seed, in the median no later than the ramp's width from its start; and
Agrawal's old concept coming back after 10,000 examples detected as a drift of
its own (``agrawal-recurring/return``) in every seed.
"""


def policy_hits(
    detector: ErrorDetector, errors: bytes, *, cooldown_events: int, name: str = POLICY
) -> list[int]:
    """Indices of ``errors`` at which the production path asks for retraining.

    The monitor's path, one event per second: each detection of ``detector``
    becomes a concept ``DriftEvent`` (statistic, window, severity and onset from
    :func:`~driftline.drift_detectors.drift_report`) that :class:`RetrainPolicy`
    with a cooldown of ``cooldown_events`` turns into a request or not.
    """
    policy = RetrainPolicy(RetrainPolicyConfig(cooldown_s=float(cooldown_events)))
    hits = []
    for index, e in enumerate(errors):
        detector.update(e == 1)
        if not detector.drift_detected:
            continue
        report = drift_report(detector)
        now = _T0 + timedelta(seconds=index)
        event = DriftEvent(
            drift_id=f"d-{index}",
            model_name="eval",
            kind=DriftKind.CONCEPT,
            detector=name,
            statistic=report.statistic,
            threshold=report.threshold,
            window=report.window,
            severity=report.severity,
            detected_at=now,
            onset_event_time=_T0 + timedelta(seconds=index - report.window + 1),
        )
        if policy.observe(event, now):
            hits.append(index)
    return hits


def _hits(name: str, errors: bytes, cfg: EvalConfig) -> tuple[list[int], float]:
    """Detections (requests for the policy) of detector ``name`` on ``errors``, and seconds."""
    if name == POLICY:
        det = detector_builder(cfg.policy_detector, cfg.policy_params)()
        start = time.perf_counter()
        hits = policy_hits(
            det, errors, cooldown_events=cfg.cooldown_events, name=cfg.policy_detector
        )
    else:
        det = detector_builder(name)()
        start = time.perf_counter()
        hits = detections(det, errors)
    return hits, time.perf_counter() - start


def _errors(stream: str, seed: int, cfg: EvalConfig) -> tuple[bytes, list[int]]:
    """The error stream and its change points (none for a control)."""
    if stream in BERNOULLI:
        p0, p1 = BERNOULLI[stream]
        if p0 == p1:
            return bernoulli_errors(seed, p0, p0, cfg.control_events, 0), []
        return (
            bernoulli_errors(seed, p0, p1, cfg.bernoulli_before, cfg.bernoulli_after),
            [cfg.bernoulli_before],
        )
    spec = STREAMS[stream]
    if not spec.drift:
        return prequential_errors(spec, seed, cfg.control_events, 0), []
    errors = prequential_errors(spec, seed, cfg.n_before, cfg.n_after)
    return errors, spec.change_points(cfg.n_before, len(errors))


def _run_one(task: tuple[str, int, EvalConfig]) -> dict[str, Any]:
    stream, seed, cfg = task
    errors, changes = _errors(stream, seed, cfg)
    hits: dict[str, list[int]] = {}
    seconds: dict[str, float] = {}
    for name in cfg.detectors:
        hits[name], seconds[name] = _hits(name, errors, cfg)
    return {
        "stream": stream,
        "seed": seed,
        "events": len(errors),
        "drift_at": changes[0] if changes else None,
        "changes": changes,
        "hits": hits,
        "seconds": seconds,
    }


def _scored(stream: str, changes: int) -> list[str]:
    """The rows a stream with ``changes`` change points is scored as: the stream itself for
    its first change, ``<stream>/<label>`` for each further one (``agrawal-recurring/return``).
    """
    labels = STREAMS[stream].change_labels if stream in STREAMS else ()
    return [stream] + [
        f"{stream}/{labels[k - 1] if k - 1 < len(labels) else f'change-{k + 1}'}"
        for k in range(1, changes)
    ]


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(runs: list[dict[str, Any]], detectors: Sequence[str]) -> dict[str, Any]:
    """Per stream and detector: delays, false alarms, misses, extras, cost.

    A stream with several change points (a concept that returns) is scored once per
    change point, each as its own row (:func:`_scored`): the first detection in
    ``[change, next change)`` is that change's, its delay counted from the change;
    none there is a miss.  False alarms are the detections before the first change
    (all of them on a control); the later rows have none by construction.
    """
    out: dict[str, Any] = {}
    for stream in dict.fromkeys(r["stream"] for r in runs):
        mine = [r for r in runs if r["stream"] == stream]
        rows = _scored(stream, max(len(r["changes"]) for r in mine))
        for k, row in enumerate(rows):
            per: dict[str, Any] = {}
            for name in detectors:
                delays: list[int] = []
                false_alarms = misses = extra = 0
                stationary = 0
                for r in mine:
                    hits: list[int] = r["hits"][name]
                    changes: list[int] = r["changes"]
                    if not changes:
                        false_alarms += len(hits)
                        stationary += r["events"]
                        continue
                    if k >= len(changes):
                        continue  # this run is too short to hold the change
                    at = changes[k]
                    end = changes[k + 1] if k + 1 < len(changes) else r["events"]
                    if k == 0:
                        stationary += at
                        false_alarms += sum(1 for h in hits if h < at)
                    after = [h for h in hits if at <= h < end]
                    if after:
                        delays.append(after[0] - at)
                        extra += len(after) - 1
                    else:
                        misses += 1
                updates = sum(r["events"] for r in mine)
                per[name] = {
                    "seeds": len(mine),
                    "median_delay": _quantile(delays, 0.5),
                    "p90_delay": _quantile(delays, 0.9),
                    "max_delay": max(delays) if delays else None,
                    "misses": misses,
                    "false_alarms": false_alarms,
                    "false_alarms_per_1000": round(1000.0 * false_alarms / stationary, 4)
                    if stationary
                    else None,
                    "extra_after_first": extra,
                    "us_per_update": round(
                        1e6 * sum(r["seconds"][name] for r in mine) / updates, 2
                    ),
                }
            out[row] = per
    return out


def check_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each bar of :data:`TARGETS` with the policy's figure, whether it is met and the
    issue that set it."""
    rows = []
    for t in TARGETS:
        figure = summary.get(t.stream, {}).get(POLICY, {}).get(t.metric)
        if t.stream not in summary:
            continue
        met = figure is not None and figure <= t.limit
        rows.append({"target": t.describe(), "value": figure, "met": met, "issue": t.issue})
    return rows


def evaluate(cfg: EvalConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every (stream, seed) and summarise; uses ``cfg.processes`` worker processes."""
    tasks = [(s, seed, cfg) for s in cfg.streams for seed in range(1, cfg.seeds + 1)]
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    if cfg.processes > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(cfg.processes) as pool:
            for r in pool.imap_unordered(_run_one, tasks):
                runs.append(r)
                if progress:
                    progress(f"{r['stream']} seed {r['seed']} done")
    else:
        for task in tasks:
            runs.append(_run_one(task))
    summary = summarize(runs, cfg.detectors)
    return {
        "config": {
            "seeds": cfg.seeds,
            "n_before": cfg.n_before,
            "n_after": cfg.n_after,
            "control_events": cfg.control_events,
            "bernoulli_before": cfg.bernoulli_before,
            "bernoulli_after": cfg.bernoulli_after,
            "policy": {
                "detector": cfg.policy_detector,
                **detector_params(cfg.policy_detector, cfg.policy_params),
                "cooldown_events": cfg.cooldown_events,
            },
            "streams": {
                **{k: v.description for k, v in STREAMS.items()},
                **{k: f"Bernoulli error rate {a} -> {b}" for k, (a, b) in BERNOULLI.items()},
            },
        },
        "results": summary,
        "targets": check_targets(summary),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def render(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    lines = []
    head = f"{'stream':<26}{'detector':<19}{'median':>8}{'p90':>8}{'miss':>6}{'FA':>6}"
    head += f"{'FA/1k':>8}{'extra':>7}{'us/upd':>8}"
    lines.append(head)
    for stream, per in report["results"].items():
        for name, m in per.items():

            def f(v: Any) -> str:
                return "-" if v is None else f"{v:g}"

            lines.append(
                f"{stream:<26}{name:<19}{f(m['median_delay']):>8}{f(m['p90_delay']):>8}"
                f"{m['misses']:>6}{m['false_alarms']:>6}{f(m['false_alarms_per_1000']):>8}"
                f"{m['extra_after_first']:>7}{m['us_per_update']:>8}"
            )
    lines.append("")
    for t in report["targets"]:
        lines.append(f"{'MET ' if t['met'] else 'MISS'}  {t['target']}  (policy: {t['value']})")
    return "\n".join(lines)


SUITES = ("detectors", "recurring", "label-free")
"""The parts of ``driftline eval-drift`` (``--suite``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run, print the table; exit 0 when every target is met, 1 otherwise
    (2 for bad settings).

    The policy runs the detector and cooldown of the monitoring settings
    (``DRIFTLINE_CONFIG``, ``DRIFTLINE_MONITORING__*``).
    """
    parser = argparse.ArgumentParser(
        prog="driftline eval-drift",
        description="Measure the retraining policy (the configured monitoring.detector and "
        "cooldown) and River's detectors on synthetic streams with known drift points: "
        "detection delay, false alarms, misses; then a returning concept answered by the "
        "registry, and the label-free estimate against delayed labels and data-only drift.",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per stream (default 5)")
    parser.add_argument("--quick", action="store_true", help="small streams and 2 seeds (tests)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--stream",
        action="append",
        choices=[*STREAMS, *BERNOULLI],
        help="run only this stream (repeatable)",
    )
    parser.add_argument(
        "--detector",
        action="append",
        choices=[POLICY, *detector_names()],
        help="run only this detector (repeatable): the policy or a detector's name",
    )
    parser.add_argument(
        "--suite",
        action="append",
        choices=SUITES,
        help="run only this part (repeatable): detectors (the streams above), recurring "
        "(a returning concept answered by restoring the earlier champion), label-free "
        "(CBPE against delayed labels, and data-only drift); default: all three",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the report as JSON here (the other suites beside it, as "
        "<name>-recurring.json and <name>-label-free.json)",
    )
    args = parser.parse_args(argv)
    try:
        monitoring = load_settings().monitoring
        error_detectors(monitoring)  # checks monitoring.detector, naming what is wrong
    except ConfigError as exc:
        print(f"driftline eval-drift: {exc}", file=sys.stderr)
        return 2
    suites = args.suite or list(SUITES)
    status = 0
    if "detectors" in suites:
        status = max(status, _detectors(args, monitoring))
    # The other suites keep their own modules (and ``python -m`` entry points); they
    # share the seeds, the settings and the exit-code convention.
    if "recurring" in suites:
        from driftline.monitoring import eval_recurring

        print(flush=True)
        status = max(status, eval_recurring.main(
            ["--seeds", str(2 if args.quick else args.seeds),
             *_json_beside(args.json, "recurring")]
        ))  # fmt: skip
    if "label-free" in suites:
        from driftline.monitoring import eval_label_free

        print(flush=True)
        status = max(status, eval_label_free.main(
            ["--seeds", str(args.seeds), "--processes", str(args.processes),
             *(["--quick"] if args.quick else []), *_json_beside(args.json, "label-free")]
        ))  # fmt: skip
    return status


def _json_beside(path: Path | None, suite: str) -> list[str]:
    return ["--json", str(path.with_name(f"{path.stem}-{suite}.json"))] if path else []


def _detectors(args: argparse.Namespace, monitoring: MonitoringSettings) -> int:
    """The detector suite: the policy and River's detectors on every stream."""
    cfg = EvalConfig(
        seeds=args.seeds,
        processes=max(1, args.processes),
        detectors=tuple(args.detector or EvalConfig.detectors),
        streams=tuple(args.stream or EvalConfig.streams),
        cooldown_events=round(monitoring.cooldown_s),
        policy_detector=monitoring.detector.type,
        policy_params=monitoring.detector.params,
    )
    if args.quick:
        cfg = replace(
            cfg,
            seeds=2 if args.seeds == 5 else args.seeds,
            n_before=3_000,
            n_after=2_000,
            control_events=10_000,
            bernoulli_before=3_000,
            bernoulli_after=2_000,
        )
    report = evaluate(cfg)
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(t["met"] for t in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
