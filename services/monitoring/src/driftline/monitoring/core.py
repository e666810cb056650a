"""The monitor's core: records of the four input topics in, drift events and retrain requests out.

No sockets here: the Kafka loop decodes records, calls one ``on_*`` method per
record and publishes the :class:`Outputs` it returns.

* ``driftline.features`` → per-feature data drift (:class:`DistributionMonitor`
  per feature set, against the champion's recorded reference when there is one);
* ``driftline.predictions`` → prediction drift (the output distribution of each
  model's champion), the label-free accuracy estimate of a classifier (CBPE, see
  :mod:`driftline.monitoring.performance_estimation`: calibrated on the champion's
  first ``monitoring.cbpe_reference`` labelled predictions, a ``cbpe`` prediction-drift
  event when it falls ``monitoring.cbpe_margin`` below their accuracy) and one half of
  the label join;
* ``driftline.labels.valid`` → the other half: each joined pair is one outcome of
  the live error stream, fed to the model's error detector (a River drift detector,
  ``monitoring.detector``: by default the
  :class:`~driftline.drift_detectors.ErrorRiseDetector`) and to its live accuracy;
* ``driftline.models`` → champion changes: a new error detector and output
  reference start, the feature reference switches to the new version's,
  and the retraining episode (if any) closes when the new champion learned from
  data after its onset (see :mod:`driftline.monitoring.retrain_policy`).

The onset of a concept drift is an *event time* (training selects the examples
after it by their feature vectors' event time): each outcome is dated by its
event's time from the feature log, and by the prediction's ``served_at`` only
when the feature log did not show the event.

Every detection becomes a :class:`DriftEvent`; :class:`RetrainPolicy` decides
which of them become :class:`RetrainRequest` s.

A record that cannot be right is refused (:class:`Refused`, with a skip reason)
before it changes any state: a registry event naming a model or version the
models log never registered (or with an unreadable reference).  A label whose type cannot be
compared with its model's prediction (``"maybe"`` for a model answering 0/1) is
refused too; when its prediction comes after it, the refusal is reported in
:attr:`Outputs.refused_labels`.  A model or feature set the registry does not
list is watched all the same: the monitor learns models from their predictions.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    FeatureValue,
    FeatureVector,
    LabelValue,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    RetrainRequest,
    ValidLabel,
    utcnow,
)
from driftline.drift_detectors import (
    DetectorConfigError,
    DriftReport,
    ErrorDetector,
    ExplainsDrift,
    detector_builder,
    drift_report,
)
from driftline.drift_stats.reference import Reference
from driftline.monitoring.distribution_drift import (
    DistributionConfig,
    DistributionMonitor,
    Finding,
)
from driftline.monitoring.performance_estimation import (
    CBPEConfig,
    EstimateAlarm,
    PerformanceEstimator,
    confidence_of,
)
from driftline.monitoring.prediction_join import PredictionLabelJoin
from driftline.monitoring.retrain_policy import RetrainPolicy, RetrainPolicyConfig
from driftline.monitoring.timeseries import TimeSeriesStore
from driftline.settings import ConfigError, MonitoringSettings

__all__ = [
    "ModelState",
    "MonitorCore",
    "Outputs",
    "Refused",
    "RefusedLabel",
    "cbpe_config",
    "error_detectors",
]

CHAMPION = "champion"
ALIAS_DELETED = 0
"""The version of an ``alias_set`` event that removes the alias (the registry's encoding)."""


class Refused(Exception):
    """A record the monitor will not use: no detector or model state saw it.

    ``reason`` is the skip reason (``unknown_model``, ``unknown_version``,
    ``invalid``, ``label_type``), ``detail`` says what is wrong for a person.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RefusedLabel:
    """A label refused when its prediction arrived (the label was read earlier)."""

    event_id: str
    detail: str


@dataclass
class Outputs:
    """What one input record caused: detections to publish and retraining requests."""

    drift: list[DriftEvent] = field(default_factory=list)
    retrain: list[RetrainRequest] = field(default_factory=list)
    refused_labels: list[RefusedLabel] = field(default_factory=list)
    """Labels (of ``driftline.labels.valid``) found unusable only now (see :class:`Refused`)."""

    def extend(self, other: Outputs) -> None:
        """Append ``other`` 's items."""
        self.drift.extend(other.drift)
        self.retrain.extend(other.retrain)
        self.refused_labels.extend(other.refused_labels)


@dataclass
class _Served:
    """What the join carries from a prediction to its label."""

    model_name: str
    model_version: int
    served_at: datetime
    event_time: float | None
    """Epoch seconds of the event the prediction was for (from the feature log), if known."""
    event_id: str
    confidence: float | None = None
    """The probability served for the predicted class (:func:`confidence_of`), if any."""


def error_detectors(settings: MonitoringSettings) -> Callable[[], ErrorDetector]:
    """What builds a fresh error detector of ``settings.detector``, checked now.

    :class:`ConfigError` naming the setting when the type is unknown, a parameter is
    not one the detector takes or has the wrong type, or it builds no River detector.
    """
    spec = settings.detector
    try:
        return detector_builder(spec.type, spec.params)
    except DetectorConfigError as exc:
        raise ConfigError(f"monitoring.detector: {exc}") from exc


def cbpe_config(settings: MonitoringSettings) -> CBPEConfig:
    """The label-free estimator's settings (``monitoring.cbpe_*``)."""
    return CBPEConfig(
        reference=settings.cbpe_reference, window=settings.cbpe_window, margin=settings.cbpe_margin
    )


class ModelState:
    """Per-model detector state: the error stream, live accuracy, the output distribution,
    the label-free accuracy estimate.

    ``new_detector`` builds the error detector (:func:`error_detectors`), anew at
    each champion change: a new model's error level is a new baseline.
    """

    def __init__(
        self,
        name: str,
        settings: MonitoringSettings,
        new_detector: Callable[[], ErrorDetector] | None = None,
    ) -> None:
        self.name = name
        self.champion_version: int | None = None
        self.featureset: str | None = None
        self._new_detector = new_detector or error_detectors(settings)
        self.error: ErrorDetector = self._new_detector()
        self.outputs = DistributionMonitor(
            DistributionConfig(
                window=settings.drift_window,
                psi_threshold=settings.psi_threshold,
                js_threshold=settings.js_threshold,
                kswin_every=0,
            )
        )
        self.recent: deque[int] = deque(maxlen=settings.accuracy_window)
        self.recent_errors = 0
        self._cbpe_config = cbpe_config(settings)
        self.cbpe = PerformanceEstimator(self._cbpe_config)
        """CBPE of the current champion (calibrated on its own first labelled predictions)."""
        self._cbpe_times: deque[datetime] = deque(maxlen=settings.cbpe_window)
        """Event time of each prediction in the estimate's window (its oldest: an onset)."""
        self.labelled = 0
        """Outcomes fed so far: the next one's index."""
        self.champion_since: float | None = None
        """When (the monitor's clock, seconds since the epoch) the current champion was set."""
        self.last_detected: dict[str, float] = {}
        """When each kind of drift was last detected for this model (same clock): a
        detection later than :attr:`champion_since` is one the loop has not answered yet."""
        self.watched_from = 0
        """Index of the first outcome the error detector tested after it was built and
        warmed up (:class:`ExplainsDrift`): a rise cannot be shown to start earlier (the
        detector saw nothing before it)."""
        # Event time of each recent outcome, so a detection's onset index becomes a time.
        self._times: deque[tuple[int, datetime]] = deque(maxlen=50_000)

    @property
    def live_accuracy(self) -> float | None:
        """Accuracy over the last ``accuracy_window`` labelled predictions."""
        if not self.recent:
            return None
        return 1.0 - self.recent_errors / len(self.recent)

    @property
    def estimated_accuracy(self) -> float | None:
        """CBPE's accuracy of the last ``cbpe_window`` predictions; None until calibrated."""
        return self.cbpe.estimate

    def observe_confidence(self, confidence: float, at: datetime) -> EstimateAlarm | None:
        """Feed one champion prediction's confidence to CBPE; the alarm it raises, if any."""
        self._cbpe_times.append(at)
        return self.cbpe.observe(confidence)

    def estimate_onset(self) -> datetime | None:
        """Event time of the oldest prediction in the estimate's window: the drop that
        just alarmed started no earlier (a window start, like PSI's onset)."""
        return self._cbpe_times[0] if self._cbpe_times else None

    @property
    def statistic(self) -> float | None:
        """The error detector's current statistic, when it :class:`ExplainsDrift`."""
        return self.error.statistic if isinstance(self.error, ExplainsDrift) else None

    def add_outcome(self, error: bool, at: datetime) -> DriftReport | None:
        """Feed one joined outcome; the detection it completes, if any."""
        e = 1 if error else 0
        if len(self.recent) == self.recent.maxlen:
            self.recent_errors -= self.recent[0]
        self.recent.append(e)
        self.recent_errors += e
        index = self.labelled
        self._times.append((index, at))
        self.labelled += 1
        det = self.error
        explainer = det if isinstance(det, ExplainsDrift) else None
        warming = explainer is not None and not explainer.watching
        det.update(error)
        if warming and explainer is not None and explainer.watching:
            self.watched_from = index
        return drift_report(det) if det.drift_detected else None

    def onset_of(self, report: DriftReport) -> datetime | None:
        """Event time of the onset of the drift just reported, never before the detector
        watched.

        When the warm-up ends after the change (a champion promoted shortly before
        a drift), the detector's own estimate falls back to the start of the
        warm-up, before the change: retraining from there would learn the old
        concept.  The first watched outcome is the earliest time with evidence.
        """
        return self.time_of(max(self.labelled - report.window, self.watched_from))

    def time_of(self, index: int) -> datetime | None:
        """Event time of outcome ``index`` (the oldest remembered if it is older)."""
        if not self._times:
            return None
        first = self._times[0][0]
        pos = min(max(index - first, 0), len(self._times) - 1)
        return self._times[pos][1]

    def rebaseline(self) -> None:
        """A new champion: a new error detector, a new output reference."""
        self.error = self._new_detector()
        self.watched_from = self.labelled
        self.outputs.set_reference(None)
        self.recent.clear()
        self.recent_errors = 0
        # A new model's confidences mean something else: it is calibrated on its own answers.
        self.cbpe = PerformanceEstimator(self._cbpe_config)
        self._cbpe_times.clear()


def _comparable(prediction: LabelValue | None, label: LabelValue) -> bool:
    """Whether ``label`` can be compared with ``prediction`` (numbers with numbers, text with text).

    A model answers in the type it learned its labels in; a label of the other kind
    (``"maybe"`` for a model answering 0/1) would count as an error of the model.
    """
    return prediction is None or isinstance(prediction, str) == isinstance(label, str)


def _is_wrong(prediction: LabelValue | None, label: LabelValue) -> bool | None:
    """Whether a classification was wrong; None when the pair is not a classification."""
    if prediction is None:
        return True
    if isinstance(label, float) and not label.is_integer():
        return None  # a regression target: no error stream of right / wrong
    if isinstance(prediction, bool) or isinstance(label, bool):
        return bool(prediction) != bool(label)
    if isinstance(prediction, int | float) and isinstance(label, int | float):
        return not math.isclose(float(prediction), float(label))
    return str(prediction) != str(label)


class MonitorCore:
    """All detector state of one monitor replica.

    ``clock`` gives "now" (tests pass a fake one); event times come from the records.
    :class:`ConfigError` when ``settings.detector`` cannot be built.
    """

    def __init__(
        self,
        settings: MonitoringSettings,
        clock: Callable[[], datetime] = utcnow,
        series: TimeSeriesStore | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.series = series or TimeSeriesStore()
        self._new_detector = error_detectors(settings)
        self.policy = RetrainPolicy(
            RetrainPolicyConfig(
                trigger_kinds=frozenset(DriftKind(k) for k in settings.trigger_kinds),
                min_severity=settings.retrain_min_severity,
                debounce_s=settings.debounce_s,
                cooldown_s=settings.cooldown_s,
            )
        )
        self.models: dict[str, ModelState] = {}
        self.features: dict[str, DistributionMonitor] = {}
        self.join: PredictionLabelJoin[_Served] = PredictionLabelJoin(settings.join_capacity)
        self.references: dict[tuple[str, int], dict[str, Any]] = {}
        self.trained_until: dict[tuple[str, int], datetime] = {}
        """``(model, version) -> event time`` of the newest example the version learned."""
        self._event_times: OrderedDict[str, float] = OrderedDict()
        self.featureset_of: dict[str, str] = {}
        self.registered: dict[str, set[int]] = {}
        """``model -> versions`` registered on the models log (the log is read from its start)."""
        self.counts: dict[str, int] = {
            "features": 0,
            "predictions": 0,
            "labels": 0,
            "registry": 0,
            "joined": 0,
            "unjoinable": 0,
            "not_classification": 0,
        }
        self._window_time: dict[str, datetime] = {}
        self.detections: dict[tuple[str, str, str], int] = {}
        """``(model, kind, detector) -> count`` of drift events emitted."""

    # ----------------------------------------------------------------- helpers

    def model(self, name: str) -> ModelState:
        """The state of model ``name`` (created on first sight)."""
        st = self.models.get(name)
        if st is None:
            st = self.models[name] = ModelState(name, self.settings, self._new_detector)
        return st

    def _drift(
        self,
        model_name: str,
        kind: DriftKind,
        detector: str,
        *,
        features: list[str],
        statistic: float,
        threshold: float,
        window: int,
        severity: Any,
        onset: datetime | None,
        trace_id: str | None,
    ) -> DriftEvent:
        now = self.clock()
        event = DriftEvent(
            drift_id=f"drift-{uuid.uuid4().hex[:16]}",
            model_name=model_name,
            kind=kind,
            features=features,
            detector=detector,
            statistic=statistic if math.isfinite(statistic) else 0.0,
            threshold=threshold,
            window=window,
            severity=severity,
            detected_at=now,
            onset_event_time=onset,
            trace_ids=[trace_id] if trace_id else [],
        )
        key = (model_name, kind.value, detector)
        self.detections[key] = self.detections.get(key, 0) + 1
        self.model(model_name).last_detected[kind.value] = now.timestamp()
        self.series.mark(
            now.timestamp(),
            "drift",
            model=model_name,
            drift_kind=kind.value,
            detector=detector,
            features=features,
            severity=severity,
        )
        return event

    def _emit(self, events: list[DriftEvent]) -> Outputs:
        out = Outputs(drift=events)
        now = self.clock()
        for ev in events:
            for req in self.policy.observe(ev, now):
                out.retrain.append(req)
                self.series.mark(
                    now.timestamp(), "retrain", model=req.model_name, request_id=req.request_id
                )
        return out

    def _findings(
        self,
        model_name: str,
        kind: DriftKind,
        findings: list[Finding],
        times: Mapping[int, datetime],
        trace_id: str | None,
    ) -> list[DriftEvent]:
        return [
            self._drift(
                model_name,
                kind,
                f.detector,
                features=[f.feature],
                statistic=f.statistic,
                threshold=f.threshold,
                window=f.window,
                severity=f.severity,
                onset=times.get(f.onset_index),
                trace_id=trace_id,
            )
            for f in findings
        ]

    # ------------------------------------------------------------------ inputs

    def on_features(self, vector: FeatureVector, trace_id: str | None = None) -> Outputs:
        """One point-in-time feature vector from ``driftline.features``."""
        self.counts["features"] += 1
        self._remember_event_time(vector.event_id, vector.event_time)
        mon = self.features.get(vector.featureset)
        if mon is None:
            mon = self.features[vector.featureset] = DistributionMonitor(
                DistributionConfig(
                    window=self.settings.drift_window,
                    psi_threshold=self.settings.psi_threshold,
                    js_threshold=self.settings.js_threshold,
                    kswin_every=self.settings.kswin_every,
                ),
                reference=self._champion_reference(vector.featureset),
            )
        if mon.records == mon.window_start:
            self._window_time[vector.featureset] = vector.event_time
        findings = mon.update(vector.values)
        if not findings:
            return Outputs()
        owner = self._model_of_featureset(vector.featureset)
        times = {f.onset_index: vector.event_time for f in findings}
        for f in findings:
            if f.detector in ("psi", "ks", "js"):
                times[f.onset_index] = self._window_time.get(vector.featureset, vector.event_time)
        return self._emit(self._findings(owner, DriftKind.DATA, findings, times, trace_id))

    def on_prediction(self, record: PredictionRecord, trace_id: str | None = None) -> Outputs:
        """One prediction from ``driftline.predictions`` (shadow ones are not the served model).

        A prediction's version is not checked against the models log: the first answers
        of a new champion can be read before its registration on the other topic, and
        refusing them would report a skip at every hot swap.
        """
        self.counts["predictions"] += 1
        if record.shadow or record.variant != CHAMPION:
            return Outputs()
        st = self.model(record.model_name)
        out_values: dict[str, FeatureValue] = {"prediction": record.prediction}
        for cls, p in record.probabilities.items():
            out_values[f"p[{cls}]"] = p
        if st.outputs.records == st.outputs.window_start:
            self._window_time[f"model:{record.model_name}"] = record.served_at
        findings = st.outputs.update(out_values)
        start_time = self._window_time.get(f"model:{record.model_name}", record.served_at)
        times = {f.onset_index: start_time for f in findings}
        events = self._findings(record.model_name, DriftKind.PREDICTION, findings, times, trace_id)
        confidence = confidence_of(record.prediction, record.probabilities)
        if confidence is not None and st.champion_version in (None, record.model_version):
            events.extend(self._estimate(st, record, confidence, trace_id))
        out = self._emit(events) if events else Outputs()
        if record.event_id is None:
            self.counts["unjoinable"] += 1
            return out
        pair = self.join.add_prediction(
            record.event_id,
            record.prediction,
            _Served(
                record.model_name,
                record.model_version,
                record.served_at,
                self._event_times.get(record.event_id),
                record.event_id,
                confidence,
            ),
        )
        if pair is not None:
            try:
                out.extend(self._outcome(*pair, trace_id=trace_id))
            except Refused as refused:
                # The label was read before: it is the one refused, not this prediction.
                out.refused_labels.append(RefusedLabel(record.event_id, refused.detail))
        return out

    def _estimate(
        self, st: ModelState, record: PredictionRecord, confidence: float, trace_id: str | None
    ) -> list[DriftEvent]:
        """CBPE on one champion prediction: a ``cbpe`` prediction-drift event when the
        estimated accuracy falls below the floor.

        Prediction drift, not concept drift: the estimate moves only when the served
        confidences do (the inputs went where the model is unsure), and by default it
        triggers no retraining — there are no labels of the new regime yet to learn
        from; the error detector confirms (and asks for retraining) when they come.
        """
        at = self._event_times.get(record.event_id) if record.event_id else None
        alarm = st.observe_confidence(
            confidence, datetime.fromtimestamp(at, UTC) if at is not None else record.served_at
        )
        if alarm is None:
            return []
        return [
            self._drift(
                record.model_name,
                DriftKind.PREDICTION,
                "cbpe",
                features=[],
                statistic=alarm.estimate,
                threshold=alarm.floor,
                window=alarm.window,
                severity=alarm.severity,
                onset=st.estimate_onset(),
                trace_id=trace_id,
            )
        ]

    def on_label(self, label: ValidLabel, trace_id: str | None = None) -> Outputs:
        """One validated label from ``driftline.labels.valid``.

        :class:`Refused` (``label_type``) when its prediction is here and of another type.
        """
        self.counts["labels"] += 1
        pair = self.join.add_label(label.event_id, label.label)
        if pair is None:
            return Outputs()
        return self._outcome(*pair, trace_id=trace_id)

    def _outcome(
        self,
        prediction: LabelValue | None,
        label: LabelValue,
        served: _Served,
        *,
        trace_id: str | None,
    ) -> Outputs:
        if not _comparable(prediction, label):
            raise Refused(
                "label_type",
                f"label {str(label)[:100]!r} ({type(label).__name__}) of event "
                f"{served.event_id!r} cannot be compared with model {served.model_name!r}'s "
                f"prediction {str(prediction)[:100]!r} ({type(prediction).__name__})",
            )
        wrong = _is_wrong(prediction, label)
        if wrong is None:
            self.counts["not_classification"] += 1
            return Outputs()
        self.counts["joined"] += 1
        st = self.model(served.model_name)
        if st.champion_version is not None and served.model_version != st.champion_version:
            # A late label of the previous champion says nothing about the current one.
            return Outputs()
        if served.confidence is not None:
            st.cbpe.add_reference(served.confidence, not wrong)
        report = st.add_outcome(wrong, self._outcome_time(served))
        if report is None:
            return Outputs()
        event = self._drift(
            served.model_name,
            DriftKind.CONCEPT,
            self.settings.detector.type,
            features=[],
            statistic=report.statistic,
            threshold=report.threshold,
            window=report.window,
            severity=report.severity,
            onset=st.onset_of(report),
            trace_id=trace_id,
        )
        return self._emit([event])

    def on_registry(self, event: RegistryEvent) -> Outputs:
        """One registry event: remember references; a champion change re-baselines.

        :class:`Refused` for an event no registry writes: an alias moved on a model
        (``unknown_model``) or to a version (``unknown_version``) never registered
        before it on the log, a registration with a version below 1 or a reference
        that does not parse (``invalid``).
        """
        if event.kind == RegistryEventKind.REGISTERED:
            ref = self._reference_of(event)
            self.counts["registry"] += 1
            self.registered.setdefault(event.model_name, set()).add(event.version)
            if ref is not None:
                self.references[(event.model_name, event.version)] = ref
            if event.lineage is not None and event.lineage.event_time_to is not None:
                self.trained_until[(event.model_name, event.version)] = event.lineage.event_time_to
            fs = event.lineage.featureset if event.lineage else event.spec.get("featureset")
            if isinstance(fs, str):
                self.featureset_of[event.model_name] = fs
            return Outputs()
        if event.kind not in (RegistryEventKind.ALIAS_SET, RegistryEventKind.ROLLED_BACK):
            self.counts["registry"] += 1
            return Outputs()
        deleted = event.kind == RegistryEventKind.ALIAS_SET and event.version == ALIAS_DELETED
        versions = self.registered.get(event.model_name)
        if versions is None:
            raise Refused(
                "unknown_model",
                f"{event.kind.value} names model {event.model_name[:200]!r}, "
                "which the models log never registered",
            )
        if not deleted and event.version not in versions:
            raise Refused(
                "unknown_version",
                f"{event.kind.value} moves {event.model_name!r}:{event.alias or CHAMPION} to "
                f"v{event.version}, never registered (registered: {_versions(versions)})",
            )
        self.counts["registry"] += 1
        if (event.alias or CHAMPION) != CHAMPION:
            return Outputs()
        st = self.model(event.model_name)
        if deleted:
            # No champion: outcomes of any version count until the next one is set.
            st.champion_version = None
            st.champion_since = None
            return Outputs()
        if st.champion_version == event.version:
            return Outputs()
        first = st.champion_version is None
        st.champion_version = event.version
        st.champion_since = self.clock().timestamp()
        st.featureset = self.featureset_of.get(event.model_name)
        if not first:
            st.rebaseline()
        # The alias change's trigger: a restored earlier champion (recurring concept)
        # was trained before the onset, but promoted for the episode's own request.
        self.policy.champion_changed(
            event.model_name,
            self.trained_until.get((event.model_name, event.version)),
            trigger=event.trigger,
        )
        if st.featureset and st.featureset in self.features:
            ref = self.references.get((event.model_name, event.version))
            if ref is not None:
                self.features[st.featureset].set_reference(ref)
        self.series.mark(
            self.clock().timestamp(), "champion", model=event.model_name, version=event.version
        )
        return Outputs()

    @staticmethod
    def _reference_of(event: RegistryEvent) -> dict[str, Any] | None:
        """The registration's reference statistics, checked; :class:`Refused` if unusable."""
        if event.version < 1:
            raise Refused(
                "invalid",
                f"registration of {event.model_name!r} v{event.version} (versions start at 1)",
            )
        ref = event.spec.get("reference")
        if not isinstance(ref, dict):
            return None
        try:
            # Parsed now, so that a bad one cannot fail every later feature vector.
            Reference.from_dict(ref)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Refused(
                "invalid",
                f"registration of {event.model_name!r} v{event.version} has unreadable "
                f"reference statistics: {exc}",
            ) from exc
        return ref

    def tick(self) -> Outputs:
        """Release debounced retraining requests; call every second or so."""
        return Outputs(retrain=self.policy.tick(self.clock()))

    # ------------------------------------------------------------------ lookup

    def _remember_event_time(self, event_id: str, at: datetime) -> None:
        times = self._event_times
        times[event_id] = at.timestamp()
        # As many as predictions wait for labels: an event's time is needed until then.
        while len(times) > self.settings.join_capacity:
            times.popitem(last=False)

    def _outcome_time(self, served: _Served) -> datetime:
        """The event time of an outcome's event (see the module docstring)."""
        at = served.event_time
        if at is None:
            at = self._event_times.get(served.event_id)
        if at is None:
            return served.served_at
        return datetime.fromtimestamp(at, UTC)

    def _model_of_featureset(self, featureset: str) -> str:
        for model, fs in self.featureset_of.items():
            if fs == featureset:
                return model
        return featureset

    def _champion_reference(self, featureset: str) -> dict[str, Any] | None:
        for model, fs in self.featureset_of.items():
            st = self.models.get(model)
            if fs == featureset and st is not None and st.champion_version is not None:
                return self.references.get((model, st.champion_version))
        return None

    def sample(self, now_s: float) -> None:
        """Append the current statistics to the time series (call every few seconds)."""
        for name, st in self.models.items():
            acc = st.live_accuracy
            if acc is not None:
                self.series.record(f"accuracy/{name}", now_s, acc)
            estimated = st.estimated_accuracy
            if estimated is not None:
                self.series.record(f"estimated_accuracy/{name}", now_s, estimated)
            statistic = st.statistic
            if statistic is not None:
                self.series.record(f"error_cusum/{name}", now_s, statistic)
        for fs, mon in self.features.items():
            for feature, stats in mon.latest.items():
                for stat, value in stats.items():
                    self.series.record(f"{stat}/{fs}/{feature}", now_s, value)


def _versions(versions: set[int]) -> str:
    """A short list of version numbers for a message."""
    ordered = sorted(versions)
    shown = ", ".join(f"v{v}" for v in ordered[-5:])
    return shown if len(ordered) <= 5 else f"…, {shown}"
