"""The serving core with in-memory model and feature sources (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from driftline.contracts.errors import (
    DriftlineError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from driftline.contracts.messages import RegistryEvent, RegistryEventKind, utcnow
from driftline.serving.canary import in_canary
from driftline.serving.core import PredictCall, ServingCore
from driftline.serving.feature_source import OnlineValue
from driftline.serving.loaded_model import FeatureDatatype, LoadedModel
from driftline.serving.memory_sources import InMemoryFeatureSource, InMemoryModelSource
from driftline.serving.model_table import ModelTable
from driftline.serving.prediction_log import PendingPrediction, PredictionLog, records_of

pytestmark = pytest.mark.unit

NAME = "loans-risk"


class Platform:
    """A core over in-memory sources, with a champion v1 and the loans features."""

    def __init__(
        self,
        tree: Any,
        other: Any,
        make_model: Callable[..., LoadedModel],
        types: dict[str, FeatureDatatype],
        *,
        capacity: int = 10_000,
    ) -> None:
        self.v1 = make_model(tree, 1)
        self.v2 = make_model(other, 2)
        self.models = InMemoryModelSource()
        self.models.add(self.v1, "champion")
        self.models.add(self.v2)
        self.features = InMemoryFeatureSource({"loans": types})
        self.drops: list[tuple[str, int]] = []
        self.log = PredictionLog(capacity, on_drop=lambda r, n: self.drops.append((r, n)))
        self.table = ModelTable(self.models)
        self.core = ServingCore(self.table, self.features, self.log)

    def event(self, alias: str, version: int) -> RegistryEvent:
        return RegistryEvent(
            event_id=f"e-{alias}-{version}",
            kind=RegistryEventKind.ALIAS_SET,
            model_name=NAME,
            version=version,
            alias=alias,
            actor="test",
            at=utcnow(),
        )


@pytest.fixture
async def platform(
    tree_pipeline: Any,
    other_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    loan_types: dict[str, FeatureDatatype],
) -> Platform:
    p = Platform(tree_pipeline, other_pipeline, make_model, loan_types)
    await p.table.sync()
    return p


async def test_predict_merges_online_features_and_answers_with_the_champion(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    x = rows[0]
    platform.features.put("loans", "c-1", x, age_ms=250)
    [out] = await platform.core.predict([PredictCall("c-1", NAME, event_id="ev-1")])
    expected = platform.v1.model.predict_proba_one(x)
    assert out.model.version == 1 and out.variant == "champion"
    assert out.prediction == max(expected, key=expected.get)
    assert out.probabilities == {str(k): v for k, v in expected.items()}
    assert out.merged.ages_ms == {n: 250 for n in x} and out.event_id == "ev-1"
    assert platform.features.reads == [("loans", ["c-1"], list(x))]


async def test_request_features_that_cover_everything_skip_the_feature_store(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    [out] = await platform.core.predict([PredictCall("c-2", NAME, features=rows[1])])
    assert platform.features.reads == []
    assert out.merged.x == rows[1]


async def test_batch_reads_features_once_and_answers_in_order(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    for i in range(5):
        platform.features.put("loans", f"c-{i}", rows[i])
    calls = [PredictCall(f"c-{i}", NAME) for i in range(5)]
    outs = await platform.core.predict(calls, batch=True)
    assert len(platform.features.reads) == 1
    assert [o.prediction for o in outs] == [platform.v1.score(rows[i])[0] for i in range(5)]


async def test_canary_sends_the_sticky_share_to_the_challenger(platform: Platform) -> None:
    await platform.table.apply(platform.event("challenger", 2))
    platform.core.set_canary(NAME, 20.0, "", actor="test", reason="try v2")
    entities = [f"customer-{i}" for i in range(500)]
    outs = await platform.core.predict([PredictCall(e, NAME) for e in entities], batch=True)
    for e, o in zip(entities, outs, strict=True):
        assert (o.variant == "challenger") == in_canary(e, 20.0)
        assert o.model.version == (2 if o.variant == "challenger" else 1)
    share = sum(o.variant == "challenger" for o in outs) / len(outs)
    assert 0.12 < share < 0.28


async def test_shadow_is_logged_flagged_and_never_answered(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    await platform.table.apply(platform.event("shadow", 2))
    outs = await platform.core.predict(
        [PredictCall(f"c-{i}", NAME, features=rows[i]) for i in range(20)], batch=True
    )
    assert all(o.model.version == 1 and o.variant == "champion" for o in outs)
    pending = await platform.log.take(100)
    records = [r for p in pending for r in records_of(p)]
    shadow = [r for r in records if r.shadow]
    answered = [r for r in records if not r.shadow]
    assert len(shadow) == len(answered) == 20
    assert {r.model_version for r in shadow} == {2} and {r.variant for r in shadow} == {"shadow"}
    assert [r.prediction for r in shadow] == [platform.v2.score(rows[i])[0] for i in range(20)]
    with pytest.raises(InvalidArgumentError, match="logged, never returned"):
        await platform.core.predict([PredictCall("c-1", NAME, alias="shadow")])


async def test_hot_swap_finishes_in_flight_requests_on_the_old_model(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    gate = asyncio.Event()
    real_online = platform.features.online

    async def slow_online(*args: Any) -> list[dict[str, OnlineValue]]:
        await gate.wait()
        return await real_online(*args)

    platform.features.online = slow_online  # type: ignore[method-assign]
    in_flight = asyncio.create_task(platform.core.predict([PredictCall("c-1", NAME)]))
    await asyncio.sleep(0)
    assert await platform.table.apply(platform.event("champion", 2))
    gate.set()
    [old] = await in_flight
    [new] = await platform.core.predict([PredictCall("c-1", NAME)])
    assert (old.model.version, new.model.version) == (1, 2)


async def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    platform: Platform,
) -> None:
    async def tampered(name: str, **kw: Any) -> LoadedModel:
        raise IntegrityError("artifact digest mismatch")

    platform.models.load = tampered  # type: ignore[method-assign]
    platform.models.models.clear()
    with pytest.raises(IntegrityError, match="digest mismatch"):
        await platform.table.apply(platform.event("champion", 3))
    [out] = await platform.core.predict([PredictCall("c-1", NAME)])
    assert out.model.version == 1


async def test_pinned_versions_load_on_demand_once(platform: Platform) -> None:
    for _ in range(3):
        [out] = await platform.core.predict([PredictCall("c-1", NAME, version=2)])
        assert out.model.version == 2 and out.variant == "pinned"
    assert platform.models.loads.count((NAME, 2)) == 1


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (PredictCall("", NAME), InvalidArgumentError, "entity_id is required"),
        (PredictCall("c-1", "nope"), NotFoundError, "model 'nope' is not served"),
        (PredictCall("c-1", NAME, alias="challenger"), NotFoundError, "no 'challenger' alias"),
        (PredictCall("c-1", NAME, version=9), NotFoundError, "no version 9"),
        (PredictCall("c-1", NAME, features={"income": 1.0}), InvalidArgumentError, "'income'"),
        (PredictCall("c-1", NAME, features={"age": "old"}), InvalidArgumentError, "INT64"),
    ],
)
async def test_bad_requests_get_the_right_error(
    platform: Platform, call: PredictCall, error: type[DriftlineError], needle: str
) -> None:
    with pytest.raises(error) as err:
        await platform.core.predict([call])
    assert needle in err.value.message


async def test_batch_errors_name_the_bad_request(platform: Platform) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^requests\[1\]: entity_id is required"):
        await platform.core.predict([PredictCall("a", NAME), PredictCall("", NAME)], batch=True)


async def test_no_champion_loaded_is_unavailable(
    tree_pipeline: Any,
    other_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    loan_types: dict[str, FeatureDatatype],
) -> None:
    p = Platform(tree_pipeline, other_pipeline, make_model, loan_types)
    with pytest.raises(UnavailableError, match="not loaded its models"):
        await p.core.predict([PredictCall("c-1", NAME)])
    p.models.aliases[NAME] = {}
    await p.table.sync()
    assert not p.table.ready
    with pytest.raises(UnavailableError, match="no champion loaded"):
        await p.core.predict([PredictCall("c-1", NAME)])


async def test_feature_store_outage_is_unavailable(platform: Platform) -> None:
    platform.features.down = True
    with pytest.raises(UnavailableError):
        await platform.core.predict([PredictCall("c-1", NAME)])


async def test_full_prediction_log_drops_and_counts_without_blocking(
    tree_pipeline: Any,
    other_pipeline: Any,
    make_model: Callable[..., LoadedModel],
    loan_types: dict[str, FeatureDatatype],
    rows: list[dict[str, Any]],
) -> None:
    p = Platform(tree_pipeline, other_pipeline, make_model, loan_types, capacity=3)
    await p.table.sync()
    calls = [PredictCall(f"c-{i}", NAME, features=rows[i]) for i in range(5)]
    # Capacity counts rows; a request is taken whole while fewer rows wait...
    await p.core.predict(calls, batch=True)
    assert (len(p.log), p.log.entries) == (5, 1)
    # ...and dropped whole, its rows counted, once the buffer is full; answered all the same.
    outs = await p.core.predict(calls, batch=True)
    [single] = await p.core.predict([PredictCall("c-9", NAME, features=rows[9])])
    assert len(outs) == 5 and single.prediction is not None
    assert (len(p.log), p.log.entries, p.log.dropped) == (5, 1, 6)
    assert p.drops == [("buffer_full", 5), ("buffer_full", 1)]


async def test_infer_scores_rows_like_predict(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    served, model, variant = await platform.core.resolve(NAME, "")
    columns = {n: [r[n] for r in rows[:50]] for n in model.feature_names}
    predictions = platform.core.infer(served, model, columns, 50, variant=variant, request_id="r")
    scored = predictions.all_scored()
    outs = await platform.core.predict(
        [PredictCall(f"c-{i}", NAME, features=rows[i]) for i in range(50)], batch=True
    )
    assert [s[0] for s in scored] == [o.prediction for o in outs]
    assert [s[1] for s in scored] == [o.probabilities for o in outs]
    # ...and like one Predict per row (a class River did not name for a row is 0 in a batch).
    alone = [model.score(rows[i]) for i in range(50)]
    assert [s[0] for s in scored] == [a[0] for a in alone]
    for (_, batch_probs), (_, probs) in zip(scored, alone, strict=True):
        assert {c: batch_probs[c] for c in probs} == probs
        assert all(p == 0.0 for c, p in batch_probs.items() if c not in probs)
    _, pinned, pinned_variant = await platform.core.resolve(NAME, "2")
    assert (pinned.version, pinned_variant) == (2, "pinned")


async def test_a_predict_batch_is_logged_as_one_batch_per_model_version(
    platform: Platform, rows: list[dict[str, Any]]
) -> None:
    await platform.table.apply(platform.event("challenger", 2))
    platform.core.set_canary(NAME, 30.0, "", actor="test", reason="split the batch")
    calls = [
        PredictCall(f"c-{i}", NAME, features=rows[i], event_id=f"ev-{i}", request_id=f"q-{i}")
        for i in range(60)
    ]
    outs = await platform.core.predict(calls, batch=True)
    entries = await platform.log.take(1000)
    assert sorted((e.model.version, e.variant, e.rows) for e in entries) == sorted(
        (v, variant, sum(o.variant == variant for o in outs))
        for v, variant in ((1, "champion"), (2, "challenger"))
    )
    logged = {r.request_id: r for e in entries for r in records_of(e)}
    assert len(logged) == 60
    for i, o in enumerate(outs):
        r = logged[o.request_id]
        assert (r.event_id, r.entity_id, r.features) == (f"ev-{i}", f"c-{i}", o.merged.x)
        assert (r.model_version, r.variant) == (o.model.version, o.variant)
        assert (r.prediction, r.probabilities) == (o.prediction, o.probabilities)
    # A single Predict stays one record keyed by its entity.
    [one] = await platform.core.predict([PredictCall("c-1", NAME, features=rows[1])])
    [single] = await platform.log.take(10)
    assert isinstance(single, PendingPrediction) and single.request_id == one.request_id


@pytest.mark.parametrize("rpc", ["Predict", "ModelInfer"])
async def test_a_swapped_versions_first_answer_joins_the_swaps_trace(
    platform: Platform, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, rpc: str
) -> None:
    """Either RPC's first answer by a version swapped in under a sampled span records
    ``first prediction`` in that span's trace, linked to the caller's span; once."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from driftline.serving import model_table

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(model_table, "_tracer", tracer)
    with tracer.start_as_current_span("swap") as swap:
        platform.table.first_answers.expect(NAME, 1)
    for n in range(2):
        with tracer.start_as_current_span(f"request {n}") as request:
            if rpc == "Predict":
                await platform.core.predict(
                    [PredictCall(f"e{n}", NAME, features=rows[n], request_id=f"r{n}")]
                )
            else:
                served, model, variant = await platform.core.resolve(NAME, "")
                columns = {f: [rows[n][f]] for f in model.feature_names}
                platform.core.infer(served, model, columns, 1, variant=variant, request_id=f"r{n}")
            if n == 0:
                first_request = request.get_span_context()
    firsts = [s for s in exporter.get_finished_spans() if s.name.startswith("first prediction")]
    assert [s.name for s in firsts] == [f"first prediction {NAME} v1"]
    (first,) = firsts
    assert first.context.trace_id == swap.get_span_context().trace_id
    assert first.parent is not None and first.parent.span_id == swap.get_span_context().span_id
    assert [link.context.span_id for link in first.links] == [first_request.span_id]
    assert first.attributes is not None and first.attributes["driftline.request_id"] == "r0"
