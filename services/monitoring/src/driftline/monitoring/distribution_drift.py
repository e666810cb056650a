"""Data drift (per feature) and prediction drift: streaming detectors and windowed distances.

:class:`DistributionMonitor` watches a stream of ``{name: value}`` records (the
feature vectors of ``driftline.features``, or a model's outputs) and reports
:class:`Finding` s:

* per numeric feature, streaming detectors on the raw values: River's ADWIN on
  every value, and KSWIN on every ``kswin_every``-th value only (it costs ~0.7 ms
  an update, too much for the hot path);
* every ``window`` records, distances of the window against the reference: PSI and
  binned Kolmogorov-Smirnov for numeric features, Jensen-Shannon divergence for
  categorical ones.  Without a recorded reference the first window becomes it
  (prediction drift compares against the champion's own early outputs).

A (feature, detector) pair that fired stays quiet for ``quiet_windows`` windows,
so one shift is one finding rather than one per record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from river import drift as _river_drift

from driftline.contracts.messages import FeatureValue
from driftline.drift_stats.reference import (
    CategoricalReference,
    NumericReference,
    Reference,
    build_reference,
    is_numeric,
)
from driftline.monitoring.distances import js_divergence, ks_binned, ks_critical, psi

__all__ = ["DistributionConfig", "DistributionMonitor", "Finding"]

# River's detector constructors are not annotated.
drift: Any = _river_drift

Severity = Literal["info", "warning", "critical"]
Rows = list[Mapping[str, FeatureValue]]
"""A window of records' feature values."""


@dataclass(frozen=True)
class DistributionConfig:
    """Detector settings of a :class:`DistributionMonitor`."""

    window: int = 1000
    """Records per distance window."""
    psi_threshold: float = 0.2
    """PSI at or above which a numeric feature has drifted (0.25+ is critical)."""
    ks_alpha: float = 0.001
    """Significance of the binned KS test (its threshold depends on the sample sizes)."""
    js_threshold: float = 0.1
    """Jensen-Shannon divergence (base 2) at or above which a categorical feature has drifted."""
    adwin_delta: float = 0.0001
    """ADWIN confidence on raw feature values (smaller: fewer false alarms, slower)."""
    kswin_every: int = 100
    """KSWIN sees every n-th value of a numeric feature (0 disables it)."""
    kswin_alpha: float = 0.0001
    """KSWIN significance."""
    quiet_windows: int = 5
    """After a finding, the same feature and detector stay silent for this many windows."""
    reference_bins: int = 10
    """Bins of a reference built from the first window when none was recorded."""


@dataclass(frozen=True)
class Finding:
    """One detection on one feature."""

    feature: str
    detector: str
    statistic: float
    threshold: float
    window: int
    severity: Severity
    record_index: int
    """Index of the record that completed it (since the monitor started)."""
    onset_index: int
    """Estimated first record of the shift (window start, or ADWIN's cut)."""


@dataclass
class _Numeric:
    adwin: Any
    kswin: Any | None
    seen: int = 0
    counts: list[int] = field(default_factory=list)


class DistributionMonitor:
    """Per-feature drift of a record stream against a reference; no I/O.

    ``reference`` is the dict form (see :mod:`driftline.drift_stats.reference`);
    None means "use the first window".
    """

    def __init__(
        self,
        config: DistributionConfig | None = None,
        reference: Mapping[str, Any] | None = None,
        seed: int = 42,
    ) -> None:
        self.config = config or DistributionConfig()
        self._seed = seed
        self._numeric: dict[str, _Numeric] = {}
        self._rows: Rows = []
        self._quiet_until: dict[tuple[str, str], int] = {}
        self.records = 0
        self.window_start = 0
        self.latest: dict[str, dict[str, float]] = {}
        """Last window's statistics: ``{feature: {"psi": .., "ks": .., "js": ..}}``."""
        self.reference: Reference | None = None
        self.set_reference(reference)

    def set_reference(self, reference: Mapping[str, Any] | None) -> None:
        """Compare against ``reference`` from the next window on (None: learn from a window)."""
        self.reference = Reference.from_dict(reference) if reference is not None else None
        self._rows = []
        self.window_start = self.records

    def _numeric_state(self, name: str) -> _Numeric:
        st = self._numeric.get(name)
        if st is None:
            kswin = None
            if self.config.kswin_every > 0:
                kswin = drift.KSWIN(alpha=self.config.kswin_alpha, seed=self._seed)
            st = _Numeric(drift.ADWIN(delta=self.config.adwin_delta), kswin)
            self._numeric[name] = st
        return st

    def _quiet(self, feature: str, detector: str) -> bool:
        return self.records < self._quiet_until.get((feature, detector), -1)

    def _silence(self, feature: str, detector: str) -> None:
        self._quiet_until[(feature, detector)] = (
            self.records + self.config.quiet_windows * self.config.window
        )

    def update(self, values: Mapping[str, FeatureValue]) -> list[Finding]:
        """Add one record; returns the findings it completes (usually none)."""
        index = self.records
        self.records += 1
        out: list[Finding] = []
        for name, value in values.items():
            if not is_numeric(value):
                continue
            x = float(value)  # type: ignore[arg-type]
            st = self._numeric_state(name)
            st.seen += 1
            st.adwin.update(x)
            if st.adwin.drift_detected and not self._quiet(name, "adwin"):
                self._silence(name, "adwin")
                width = int(st.adwin.width)
                out.append(
                    Finding(
                        name,
                        "adwin",
                        float(st.adwin.estimation),
                        self.config.adwin_delta,
                        width,
                        "info",
                        index,
                        max(0, index - width),
                    )
                )
            if st.kswin is not None and st.seen % self.config.kswin_every == 0:
                st.kswin.update(x)
                if st.kswin.drift_detected and not self._quiet(name, "kswin"):
                    self._silence(name, "kswin")
                    out.append(
                        Finding(
                            name,
                            "kswin",
                            float(st.kswin.p_value),
                            self.config.kswin_alpha,
                            int(st.kswin.window_size) * self.config.kswin_every,
                            "info",
                            index,
                            max(0, index - st.kswin.window_size * self.config.kswin_every),
                        )
                    )
        self._rows.append(values)
        if len(self._rows) >= self.config.window:
            out.extend(self._close_window(index))
        return out

    def _close_window(self, index: int) -> list[Finding]:
        rows, self._rows = self._rows, []
        start, self.window_start = self.window_start, self.records
        if self.reference is None:
            self.reference = Reference.from_dict(
                build_reference(rows, bins=self.config.reference_bins)
            )
            return []
        out: list[Finding] = []
        for name, ref in self.reference.numeric.items():
            out.extend(self._numeric_window(name, ref, rows, start, index))
        for name, cref in self.reference.categorical.items():
            out.extend(self._categorical_window(name, cref, rows, start, index))
        return out

    def _numeric_window(
        self, name: str, ref: NumericReference, rows: Rows, start: int, index: int
    ) -> list[Finding]:
        counts = [0] * len(ref.counts)
        n = 0
        for row in rows:
            v = row.get(name)
            if v is not None and is_numeric(v):
                counts[ref.bin_of(float(v))] += 1
                n += 1
        if n == 0:
            return []
        p = psi(ref.counts, counts)
        ks = ks_binned(ref.counts, counts)
        ks_limit = ks_critical(n, sum(ref.counts), self.config.ks_alpha)
        self.latest[name] = {"psi": p, "ks": ks}
        out: list[Finding] = []
        if p >= self.config.psi_threshold and not self._quiet(name, "psi"):
            self._silence(name, "psi")
            sev: Severity = "critical" if p >= 1.25 * self.config.psi_threshold else "warning"
            out.append(Finding(name, "psi", p, self.config.psi_threshold, n, sev, index, start))
        if ks >= ks_limit and not self._quiet(name, "ks"):
            self._silence(name, "ks")
            out.append(Finding(name, "ks", ks, ks_limit, n, "warning", index, start))
        return out

    def _categorical_window(
        self, name: str, ref: CategoricalReference, rows: Rows, start: int, index: int
    ) -> list[Finding]:
        freq = Counter(str(row[name]) for row in rows if row.get(name) is not None)
        if not freq:
            return []
        js = js_divergence(ref.frequencies, freq)
        self.latest[name] = {"js": js}
        if js >= self.config.js_threshold and not self._quiet(name, "js"):
            self._silence(name, "js")
            sev: Severity = "critical" if js >= 2 * self.config.js_threshold else "warning"
            n = sum(freq.values())
            return [Finding(name, "js", js, self.config.js_threshold, n, sev, index, start)]
        return []
