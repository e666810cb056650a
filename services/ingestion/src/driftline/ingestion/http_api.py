"""``POST /v1/events`` and ``POST /v1/labels``: the same validation over HTTP.

A body is one JSON object or a JSON array of them.  Every record is accounted
for: valid ones are written to their topic, the rest are dead-lettered, and the
caller gets 200 when all were accepted, 422 with per-record errors otherwise.
A 2xx/422 answer is sent only once the writes are acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from opentelemetry import propagate, trace
from pydantic import BaseModel

from driftline.contracts.messages import RawEvent, RawLabel
from driftline.ingestion.core import Accepted, Incoming, IngestionCore, Rejected, Source
from driftline.ingestion.writer import OutcomeCounters, send_outcomes

tracer = trace.get_tracer("driftline.ingestion")


class RecordError(BaseModel):
    """Why one record of the request was rejected."""

    index: int
    event_id: str | None = None
    reason: str
    detail: str


class IngestResponse(BaseModel):
    """How the request's records were classified."""

    accepted: int
    rejected: list[RecordError]


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    one = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [one, {"type": "array", "items": one}]}}
            },
        },
        "components": {"schemas": {model.__name__: schema}},
    }


def add_ingest_routes(
    app: FastAPI,
    core: IngestionCore,
    producer: AIOKafkaProducer,
    counters: OutcomeCounters,
    api_key: str | None,
) -> None:
    """Mount the ingest API on ``app`` (the service's admin app)."""

    async def ingest(
        kind: Literal["event", "label"], request: Request, key: str | None
    ) -> JSONResponse:
        if api_key is not None and (key is None or not secrets.compare_digest(key, api_key)):
            return JSONResponse(
                {"detail": "missing or wrong X-API-Key header; ask the operator for the key"},
                status_code=401,
            )
        body = await request.body()
        request_id = uuid.uuid4().hex
        values = _split(body)
        items = [
            Incoming(v, None, Source(kind=kind, via="http", owner=f"http:{request_id}:{i}"))
            for i, v in enumerate(values)
        ]
        # FastAPI's own OpenTelemetry support opens the HTTP server span (continuing
        # the caller's traceparent); this span nests under it.  Without one (FastAPI
        # telemetry turned off) this span is the server span and continues the caller.
        native = trace.get_current_span().get_span_context().is_valid
        with tracer.start_as_current_span(
            f"ingest {kind}s" if native else f"POST /v1/{kind}s",
            context=None if native else propagate.extract(dict(request.headers)),
            kind=trace.SpanKind.INTERNAL if native else trace.SpanKind.SERVER,
            attributes={"driftline.records": len(items)},
        ):
            outcomes = await core.process(items)
            futures = await send_outcomes(producer, outcomes, [None] * len(outcomes))
            await asyncio.gather(*futures)
        counters.count(outcomes, [kind] * len(outcomes), "http")
        rejected = []
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, Rejected):
                rejected.append(
                    RecordError(
                        index=i,
                        event_id=_event_id(values[i]),
                        reason=outcome.reason.value,
                        detail=outcome.letter.detail,
                    )
                )
        accepted = sum(isinstance(o, Accepted) for o in outcomes)
        payload = IngestResponse(accepted=accepted, rejected=rejected)
        return JSONResponse(payload.model_dump(), status_code=422 if rejected else 200)

    @app.post(
        "/v1/events",
        tags=["ingest"],
        summary="Send one event or a batch",
        response_model=IngestResponse,
        responses={401: {"description": "API key required"}, 422: {"model": IngestResponse}},
        openapi_extra=_body_schema(RawEvent),
    )
    async def post_events(
        request: Request, x_api_key: str | None = Header(default=None)
    ) -> JSONResponse:
        """Validate events against their feature set; invalid ones are dead-lettered."""
        return await ingest("event", request, x_api_key)

    @app.post(
        "/v1/labels",
        tags=["ingest"],
        summary="Send one label (ground truth) or a batch",
        response_model=IngestResponse,
        responses={401: {"description": "API key required"}, 422: {"model": IngestResponse}},
        openapi_extra=_body_schema(RawLabel),
    )
    async def post_labels(
        request: Request, x_api_key: str | None = Header(default=None)
    ) -> JSONResponse:
        """Validate labels; invalid ones are dead-lettered."""
        return await ingest("label", request, x_api_key)


def _split(body: bytes) -> list[bytes]:
    """One record's bytes per array element; the body itself when it is not an array.

    Elements are re-encoded compactly: the dead letter of a bad element then
    holds that element, not the whole request.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [body]
    if isinstance(doc, list):
        return [json.dumps(item, separators=(",", ":")).encode("utf-8") for item in doc]
    return [body]


def _event_id(value: bytes) -> str | None:
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    ev = doc.get("event_id") if isinstance(doc, dict) else None
    return ev if isinstance(ev, str) else None
