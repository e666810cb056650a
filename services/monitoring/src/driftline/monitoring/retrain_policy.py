"""The retraining trigger: drift detections in, at most one retrain request per episode out.

An *episode* starts with the first detection of a triggering kind (by default
only concept drift: the model's error rose) for a model and lasts until its
cooldown has passed.  Detections inside an episode are attached to it, never
turned into new requests, so one drift cannot cause a storm.  The request id is
derived from the model name and the episode's onset, so a monitor that replays
the same input after a restart asks for the same retraining again under the same
id and training can drop the duplicate.

The request goes out at detection (after the debounce, if one is set) whatever
happens to the champion meanwhile; training holds it until the data after the
onset suffices.  A new champion closes the episode only when it has learned from
data after the onset (its lineage's ``event_time_to`` is past it): that is the
retraining landing, or another model that has seen the new concept, and the
detectors re-baseline on it, so a later drift is a new episode.  A champion
trained only on data from before the onset (a scheduled snapshot promoted just
after the drift, a rollback to an older version) answers nothing: the episode,
its request and its cooldown go on.  A champion whose lineage is unknown closes
the episode (it cannot be judged; a person or another tool chose it).  So does a
champion promoted under the episode's own request id, whatever it learned from:
training answered the request with it, and an earlier champion restored because
its concept came back (``recurring concept``) was trained before the onset by
design.

>>> from datetime import UTC, datetime, timedelta
>>> from driftline.contracts.messages import DriftEvent, DriftKind
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> def drift(i: int) -> DriftEvent:
...     return DriftEvent(drift_id=f"d{i}", model_name="loans", kind=DriftKind.CONCEPT,
...         detector="error_rise", statistic=20.0, threshold=14.0, window=100,
...         severity="critical", detected_at=t0 + timedelta(seconds=i),
...         onset_event_time=t0)
>>> policy = RetrainPolicy(RetrainPolicyConfig(cooldown_s=600))
>>> [len(policy.observe(drift(i), now=t0 + timedelta(seconds=i))) for i in (1, 2, 900)]
[1, 0, 1]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from driftline.contracts.messages import DriftEvent, DriftKind, RetrainRequest

__all__ = ["Episode", "RetrainPolicy", "RetrainPolicyConfig"]

_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class RetrainPolicyConfig:
    """Which detections trigger retraining, and how they are grouped."""

    trigger_kinds: frozenset[DriftKind] = frozenset({DriftKind.CONCEPT})
    """Drift kinds that may start an episode; the others are only reported."""
    min_severity: str = "warning"
    """Detections below this severity (``info`` < ``warning`` < ``critical``) never trigger."""
    debounce_s: float = 0.0
    """Wait this long after an episode's first detection, gathering more, before requesting."""
    cooldown_s: float = 600.0
    """After a request, further detections for the model join the same episode for this long."""


@dataclass
class Episode:
    """One drift episode of one model."""

    model_name: str
    started_at: datetime
    onset: datetime | None
    drift_ids: list[str] = field(default_factory=list)
    request: RetrainRequest | None = None
    reasons: list[str] = field(default_factory=list)

    def request_id(self) -> str:
        """The dedup key: stable for the same model and onset."""
        anchor = (self.onset or self.started_at).isoformat()
        digest = hashlib.sha256(f"{self.model_name}|{anchor}".encode()).hexdigest()[:16]
        return f"retrain-{self.model_name}-{digest}"


class RetrainPolicy:
    """Turns :class:`DriftEvent` s into :class:`RetrainRequest` s; no I/O.

    Call :meth:`observe` for every detection, :meth:`tick` now and then (it
    releases debounced requests) and :meth:`champion_changed` when the registry
    moves a model's champion alias.
    """

    def __init__(self, config: RetrainPolicyConfig | None = None) -> None:
        self.config = config or RetrainPolicyConfig()
        self._episodes: dict[str, Episode] = {}
        self.requests_issued = 0
        self.suppressed = 0
        self.kept_open = 0
        """Champion changes that did not close an episode (trained before its onset)."""

    def triggers(self, event: DriftEvent) -> bool:
        """Whether ``event`` is of a kind and severity that may cause retraining."""
        return event.kind in self.config.trigger_kinds and _SEVERITY_RANK[
            event.severity
        ] >= _SEVERITY_RANK.get(self.config.min_severity, 1)

    def episode(self, model_name: str) -> Episode | None:
        """The open episode of a model, if any."""
        return self._episodes.get(model_name)

    def observe(self, event: DriftEvent, now: datetime) -> list[RetrainRequest]:
        """Account for one detection; returns the requests to publish now (zero or one)."""
        if not self.triggers(event):
            return []
        self._expire(event.model_name, now)
        ep = self._episodes.get(event.model_name)
        if ep is None:
            ep = Episode(event.model_name, started_at=now, onset=event.onset_event_time)
            self._episodes[event.model_name] = ep
        elif ep.request is not None:
            self.suppressed += 1
        if event.onset_event_time is not None and (
            ep.onset is None or (ep.request is None and event.onset_event_time < ep.onset)
        ):
            ep.onset = event.onset_event_time
        ep.drift_ids.append(event.drift_id)
        ep.reasons.append(
            f"{event.kind.value} drift ({event.detector}"
            + (f" on {', '.join(event.features)}" if event.features else "")
            + f": {event.statistic:.4g} > {event.threshold:.4g})"
        )
        return self.tick(now)

    def tick(self, now: datetime) -> list[RetrainRequest]:
        """Release requests whose debounce has passed; returns them."""
        out: list[RetrainRequest] = []
        for ep in self._episodes.values():
            if ep.request is not None:
                continue
            if now - ep.started_at < timedelta(seconds=self.config.debounce_s):
                continue
            ep.request = RetrainRequest(
                request_id=ep.request_id(),
                model_name=ep.model_name,
                reason="; ".join(dict.fromkeys(ep.reasons)),
                drift_ids=list(ep.drift_ids),
                since_event_time=ep.onset,
                requested_at=now,
            )
            ep.started_at = now  # the cooldown runs from the request
            self.requests_issued += 1
            out.append(ep.request)
        return out

    def champion_changed(
        self,
        model_name: str,
        trained_until: datetime | None = None,
        *,
        trigger: str | None = None,
    ) -> Literal["none", "closed", "kept"]:
        """A new champion serves; ``trained_until`` is the event time of the newest
        example it learned from (its lineage), None when unknown; ``trigger`` the alias
        change's trigger (the registry event's), the retrain request id when training
        promoted it for one.

        Closes the open episode (returns ``"closed"``) unless the champion learned
        nothing after the episode's onset and was not promoted for the episode's
        request (``"kept"``: the drift is not answered); ``"none"`` when there was no
        episode.
        """
        ep = self._episodes.get(model_name)
        if ep is None:
            return "none"
        answers = ep.request is not None and trigger == ep.request.request_id
        if (
            not answers
            and trained_until is not None
            and ep.onset is not None
            and trained_until <= ep.onset
        ):
            self.kept_open += 1
            return "kept"
        del self._episodes[model_name]
        return "closed"

    def _expire(self, model_name: str, now: datetime) -> None:
        ep = self._episodes.get(model_name)
        if (
            ep is not None
            and ep.request is not None
            and now - ep.started_at >= timedelta(seconds=self.config.cooldown_s)
        ):
            del self._episodes[model_name]
