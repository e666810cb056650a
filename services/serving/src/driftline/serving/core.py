"""The serving core: route, fetch online features, merge, score, log. No sockets.

Both transports (``driftline.v1.Predictor`` and the Open Inference Protocol)
call :class:`ServingCore`; it raises :class:`DriftlineError` subclasses that the
transports turn into gRPC status codes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context

from driftline.contracts.errors import (
    DeadlineExceededError,
    DriftlineError,
    InvalidArgumentError,
    UnavailableError,
)
from driftline.model_runtimes import Column, FeatureBatch, Predictions
from driftline.serving.canary import CanarySetting, in_canary
from driftline.serving.feature_merge import (
    FeaturePolicy,
    MergedFeatures,
    merge_features,
    validate_request_features,
)
from driftline.serving.feature_source import FeatureSource, OnlineValue
from driftline.serving.loaded_model import LoadedModel, Scored
from driftline.serving.model_table import ModelTable, ServedModel
from driftline.serving.prediction_log import PendingBatch, PendingPrediction, PredictionLog

__all__ = ["PredictCall", "PredictOutcome", "ServingCore"]

MAX_ENTITY_ID = 256


@dataclass(frozen=True, slots=True)
class PredictCall:
    """One prediction request, transport-free.

    ``alias`` / ``version`` pin the model; neither set means the champion, subject
    to the canary split. ``features`` are request-time features (override online ones).
    """

    entity_id: str
    model_name: str = ""
    features: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    alias: str | None = None
    version: int | None = None
    request_id: str = ""


@dataclass(slots=True)
class PredictOutcome:
    """An answered prediction."""

    request_id: str
    model: LoadedModel
    variant: str
    prediction: Any
    probabilities: dict[str, float]
    merged: MergedFeatures
    event_id: str | None
    served_at: float
    """Epoch seconds."""


@dataclass(slots=True)
class _Prepared:
    call: PredictCall
    request_id: str
    model: LoadedModel
    variant: str
    shadow: LoadedModel | None
    request_features: dict[str, Any]
    online: Mapping[str, OnlineValue] = field(default_factory=dict)


def _new_request_id() -> str:
    """32 random hex digits, like ``uuid4().hex`` at a seventh of the cost (no syscall).

    Request ids need to be unique, not secret.
    """
    return f"{random.getrandbits(128):032x}"


def _prefixed(exc: DriftlineError, prefix: str) -> DriftlineError:
    return type(exc)(f"{prefix}{exc.message}")


class ServingCore:
    """Answers predictions with the models of a :class:`ModelTable`.

    ``feature_timeout_s`` bounds each feature-store read; it is shortened to the
    caller's remaining deadline when that is sooner.
    """

    def __init__(
        self,
        table: ModelTable,
        features: FeatureSource,
        log: PredictionLog,
        *,
        policy: FeaturePolicy = "impute",
        policy_by_model: Mapping[str, FeaturePolicy] | None = None,
        feature_timeout_s: float = 0.1,
        max_batch: int = 10_000,
    ) -> None:
        self.table = table
        self.features = features
        self.log = log
        self._policy = policy
        self._policy_by_model = dict(policy_by_model or {})
        self._feature_timeout_s = feature_timeout_s
        self.max_batch = max_batch

    def policy_for(self, model_name: str) -> FeaturePolicy:
        """The missing/stale feature policy of ``model_name``."""
        return self._policy_by_model.get(model_name, self._policy)

    # -- routing --------------------------------------------------------------------

    async def route(
        self, model_name: str, entity_id: str, *, alias: str | None, version: int | None
    ) -> tuple[ServedModel, LoadedModel, str]:
        """``(served, model, variant)`` answering a request for ``model_name``.

        Variant is ``pinned`` for an explicit version or a non-standard alias,
        the alias name for ``champion``/``challenger``, and for un-pinned requests
        ``challenger`` when the entity falls in the canary share, else ``champion``.
        """
        served = self.table.get(model_name)
        if version is not None:
            if version < 1:
                raise InvalidArgumentError(f"version must be >= 1, got {version}")
            return served, await self.table.version(served.name, version), "pinned"
        if alias:
            if alias == "shadow":
                raise InvalidArgumentError(
                    "the shadow model's predictions are logged, never returned; ask for "
                    "the champion, the challenger or a version"
                )
            model = self.table.alias(served.name, alias)
            return served, model, alias if alias in ("champion", "challenger") else "pinned"
        canary = served.canary
        if canary.percent > 0 and in_canary(entity_id, canary.percent):
            challenger = served.aliases.get(canary.alias)
            if challenger is not None:
                return served, challenger, "challenger"
        return served, self.table.alias(served.name, "champion"), "champion"

    def set_canary(
        self, model_name: str, percent: float, alias: str, *, actor: str, reason: str
    ) -> ServedModel:
        """Route ``percent`` of entities of ``model_name`` to ``alias`` from now on."""
        if not 0.0 <= percent <= 100.0 or percent != percent:
            raise InvalidArgumentError(f"percent must be within [0, 100], got {percent}")
        alias = alias or "challenger"
        if alias in ("champion", "shadow"):
            raise InvalidArgumentError(
                f"the canary cannot go to the {alias!r} alias; use 'challenger' or another alias"
            )
        setting = CanarySetting(percent, alias, datetime.now(UTC), actor, reason)
        return self.table.set_canary(model_name, setting)

    # -- Predictor ------------------------------------------------------------------

    async def predict(
        self, calls: Sequence[PredictCall], *, timeout_s: float | None = None, batch: bool = False
    ) -> list[PredictOutcome]:
        """Answer ``calls`` in order; one feature-store read per model involved.

        With ``batch`` set, an invalid request fails the whole call and the error
        names its index (``requests[3]: …``).
        """
        started = time.perf_counter()
        if not calls:
            raise InvalidArgumentError("no requests: send at least one PredictRequest")
        if len(calls) > self.max_batch:
            raise InvalidArgumentError(
                f"{len(calls)} requests in one batch; at most {self.max_batch} are allowed"
            )
        prepared: list[_Prepared] = []
        for i, call in enumerate(calls):
            try:
                prepared.append(await self._prepare(call))
            except DriftlineError as exc:
                raise (_prefixed(exc, f"requests[{i}]: ") if batch else exc) from None
        await self._fetch_online(prepared, started, timeout_s)
        merged_rows: list[MergedFeatures] = []
        for i, p in enumerate(prepared):
            policy = self.policy_for(p.model.name)
            try:
                merged_rows.append(
                    merge_features(p.model, p.call.entity_id, p.online, p.request_features, policy)
                )
            except DriftlineError as exc:
                raise (_prefixed(exc, f"requests[{i}]: ") if batch else exc) from None
        groups: list[_Group] = []
        if len(prepared) == 1:
            # Predict: the framework's single-row call (River's predict_proba_one as is).
            scored = [prepared[0].model.score(merged_rows[0].x)]
        else:
            scored, groups = _score_by_model(prepared, merged_rows)
        now = time.time()
        trace = otel_context.get_current()
        out = [
            PredictOutcome(
                p.request_id, p.model, p.variant, label, probs, merged, p.call.event_id, now
            )
            for p, merged, (label, probs) in zip(prepared, merged_rows, scored, strict=True)
        ]
        if self.table.first_answers:
            for o in out:
                self.table.first_answers.answered(o.model.name, o.model.version, o.request_id)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if not groups:
            p, o = prepared[0], out[0]
            self.log.offer(
                PendingPrediction(
                    o.request_id,
                    o.event_id,
                    p.call.entity_id,
                    o.model,
                    o.variant,
                    o.merged.x,
                    o.prediction,
                    o.probabilities,
                    latency_ms,
                    now,
                    p.shadow,
                    trace,
                )
            )
        # A batch: one log entry per model version (and variant) that answered rows of it.
        for indices, features, predictions in groups:
            first = prepared[indices[0]]
            self.log.offer(
                PendingBatch(
                    first.request_id,
                    first.model,
                    first.variant,
                    features,
                    predictions,
                    latency_ms,
                    now,
                    request_ids=[prepared[i].request_id for i in indices],
                    event_ids=[prepared[i].call.event_id for i in indices],
                    entity_ids=[prepared[i].call.entity_id for i in indices],
                    shadow=first.shadow,
                    trace=trace,
                )
            )
        return out

    async def _prepare(self, call: PredictCall) -> _Prepared:
        if not call.entity_id:
            raise InvalidArgumentError("entity_id is required: the entity to predict for")
        if len(call.entity_id) > MAX_ENTITY_ID:
            raise InvalidArgumentError(
                f"entity_id is {len(call.entity_id)} characters; at most {MAX_ENTITY_ID}"
            )
        served, model, variant = await self.route(
            call.model_name, call.entity_id, alias=call.alias, version=call.version
        )
        request_features = validate_request_features(model, call.features)
        shadow = served.aliases.get("shadow")
        return _Prepared(
            call,
            call.request_id or _new_request_id(),
            model,
            variant,
            shadow,
            request_features,
        )

    async def _fetch_online(
        self, prepared: list[_Prepared], started: float, timeout_s: float | None
    ) -> None:
        groups: dict[int, list[_Prepared]] = {}
        for p in prepared:
            groups.setdefault(id(p.model), []).append(p)
        reads = []
        for group in groups.values():
            model = group[0].model
            names: Sequence[str] = model.feature_names
            if any(p.request_features for p in group):
                names = [
                    n
                    for n in model.feature_names
                    if any(n not in p.request_features for p in group)
                ]
            if names:
                reads.append(self._read(model, group, names, started, timeout_s))
        if len(reads) == 1:
            await reads[0]
        elif reads:
            await asyncio.gather(*reads)

    async def _read(
        self,
        model: LoadedModel,
        group: list[_Prepared],
        names: Sequence[str],
        started: float,
        timeout_s: float | None,
    ) -> None:
        budget = self._feature_timeout_s
        callers = False
        if timeout_s is not None:
            remaining = timeout_s - (time.perf_counter() - started)
            if remaining <= 0:
                raise DeadlineExceededError("the deadline passed before features were read")
            if remaining < budget:
                budget, callers = remaining, True
        try:
            rows = await self.features.online(
                model.featureset, [p.call.entity_id for p in group], names, budget
            )
        except DeadlineExceededError as exc:
            if callers:
                raise
            raise UnavailableError(exc.message) from exc
        for p, row in zip(group, rows, strict=True):
            p.online = row

    # -- Open Inference Protocol ----------------------------------------------------

    async def resolve(self, model_name: str, version: str) -> tuple[ServedModel, LoadedModel, str]:
        """``(served, model, variant)`` an OIP request names: an empty version is the
        champion, digits that version, anything else an alias."""
        version = version.strip()
        if not version:
            return await self.route(model_name, "", alias="champion", version=None)
        if version.isdigit():
            return await self.route(model_name, "", alias=None, version=int(version))
        return await self.route(model_name, "", alias=version, version=None)

    def infer(
        self,
        served: ServedModel,
        model: LoadedModel,
        columns: Mapping[str, Column],
        n_rows: int,
        *,
        variant: str,
        request_id: str,
        entity_ids: Sequence[str] | None = None,
    ) -> Predictions:
        """Score ``n_rows`` rows given as one column per feature, with one call into the model.

        Columns must be named after the model's features (any subset: absent
        features are missing values). The rows are logged as one entry (one
        ``PredictionBatch`` record).
        """
        started = time.perf_counter()
        if n_rows > self.max_batch:
            raise InvalidArgumentError(
                f"{n_rows} rows in one request; at most {self.max_batch} are allowed"
            )
        names = list(columns)
        unknown = [n for n in names if n not in model.by_name]
        if unknown:
            raise InvalidArgumentError(
                f"unknown input(s) {', '.join(map(repr, unknown))} for model {model.describe()}; "
                f"its inputs are: {', '.join(model.feature_names)}"
            )
        if n_rows == 0:
            return Predictions([])
        batch = FeatureBatch.from_columns(columns, n_rows, model.feature_names)
        predictions = model.predict(batch)
        if self.table.first_answers:
            self.table.first_answers.answered(model.name, model.version, request_id)
        latency_ms = (time.perf_counter() - started) * 1000.0
        # One log entry for the request: the columns and predictions as they are; the
        # writer encodes them (and scores the shadow model) off the response path.
        self.log.offer(
            PendingBatch(
                request_id,
                model,
                variant,
                batch,
                predictions,
                latency_ms,
                time.time(),
                entity_ids=entity_ids,
                shadow=served.aliases.get("shadow"),
                trace=otel_context.get_current(),
            )
        )
        return predictions


_Group = tuple[list[int], FeatureBatch, Predictions]
"""``(row indices, their features, their predictions)``: the rows of a batch one model
version answered as one variant."""


def _score_by_model(
    prepared: Sequence[_Prepared], merged: Sequence[MergedFeatures]
) -> tuple[list[Scored], list[_Group]]:
    """Each row's ``(prediction, probabilities)``, with one ``predict`` call per model and
    variant (a batch may span the champion, a canary's challenger and pinned versions),
    and the groups of rows each call answered."""
    by_model: dict[tuple[int, str], list[int]] = {}
    for i, p in enumerate(prepared):
        by_model.setdefault((id(p.model), p.variant), []).append(i)
    scored: list[Scored] = [(None, {})] * len(prepared)
    groups: list[_Group] = []
    for indices in by_model.values():
        model = prepared[indices[0]].model
        batch = FeatureBatch.from_rows([merged[i].x for i in indices], model.feature_names)
        predictions = model.predict(batch)
        for j, i in enumerate(indices):
            scored[i] = predictions.scored(j)
        groups.append((indices, batch, predictions))
    return scored, groups
