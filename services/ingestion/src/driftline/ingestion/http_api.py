"""``POST /v1/events`` and ``POST /v1/labels``: the same validation over HTTP.

A body is one JSON object or a JSON array of them.  Every record is accounted
for: valid ones are written to their topic, the rest are dead-lettered, and the
caller gets 200 when all were accepted, 422 with per-record reasons otherwise.
A 2xx/422 answer is sent only once the writes are acknowledged by Kafka.

No body makes the service answer 500: a body over ``kafka.max_message_bytes``
gets 413 before it is parsed; an array of more than
``ingestion.max_records_per_request`` records gets 422 ``unparseable``; a record
that cannot be parsed (too deep, a number too long …) or written (the producer
refuses its size) is rejected with its reason like any other bad record.  Only
the server's own faults answer 5xx: 503 when Kafka or Redis is unavailable.

Callers may need an ``X-API-Key`` (401 without an accepted one): ``ingestion.api_key``,
and the keys ``ingestion.api_keys_file`` lists by digest (secure mode always asks for
one; see :func:`ingestion_api_keys`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from opentelemetry import propagate, trace
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from driftline.contracts.errors import UnavailableError
from driftline.contracts.messages import DlqReason, RawEvent, RawLabel
from driftline.ingestion.core import (
    Accepted,
    Incoming,
    IngestionCore,
    Outcome,
    Rejected,
    Source,
)
from driftline.ingestion.writer import OutcomeCounters, fault_letter, send_outcome
from driftline.kafkaio import is_record_fault
from driftline.security.api_keys import ApiKeys, HttpApiKeys
from driftline.security.auth_files import API_KEYS_FILE, auth_file
from driftline.settings import PlatformSettings
from driftline.telemetry import HEAD_SAMPLED

log = logging.getLogger(__name__)
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


class RequestRefused(BaseModel):
    """Why the request as a whole was refused; none of its records was taken."""

    reason: str
    """``too_large`` (413), ``unparseable`` (422), ``unavailable`` (503), ``internal`` (500)."""
    detail: str
    """What is wrong and what to do."""
    limit: int | None = None
    """The limit the request went over (bytes for 413, records for 422), when one did."""


def _ingest_route(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description both ingest routes share, their body being ``model``s."""
    return {
        "tags": ["ingest"],
        "response_model": IngestResponse,
        "responses": {
            401: {"description": "API key required"},
            413: {"model": RequestRefused, "description": "Body over kafka.max_message_bytes"},
            422: {"model": IngestResponse | RequestRefused},
            503: {"model": RequestRefused, "description": "Kafka or Redis unavailable"},
        },
        "openapi_extra": _body_schema(model),
    }


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


def _refuse(status: int, reason: str, detail: str, limit: int | None = None) -> JSONResponse:
    body = RequestRefused(reason=reason, detail=detail, limit=limit)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


class _ServerFault(Exception):
    """Kafka or Redis failed the request: answered 503, the records may be sent again."""


@dataclass(frozen=True)
class _Part:
    """One record of a request body: its bytes, and its event id when already parsed."""

    value: bytes
    event_id: str | None = None
    parsed: bool = False


def ingestion_api_keys(settings: PlatformSettings) -> HttpApiKeys | None:
    """The keys the HTTP API accepts (``ingestion.api_key`` and ``ingestion.api_keys_file``,
    in secure mode ``<credentials_dir>/ingestion/api-keys.sha256`` when present), or None
    when every caller is accepted (plaintext mode without either)."""
    cfg, security = settings.ingestion, settings.security
    path = auth_file(security, "ingestion", cfg.api_keys_file, API_KEYS_FILE)
    if path is None and cfg.api_key is None and not security.enabled:
        return None
    keys = ApiKeys.load(path, setting="ingestion.api_keys_file") if path else ApiKeys()
    if not keys and cfg.api_key is None:
        log.warning(
            "ingestion accepts no API key (ingestion.api_keys_file, or %s in its credentials "
            "directory): every HTTP ingest call is refused",
            API_KEYS_FILE,
        )
    return HttpApiKeys(keys, legacy=cfg.api_key)


def add_ingest_routes(
    app: FastAPI,
    core: IngestionCore,
    producer: AIOKafkaProducer,
    counters: OutcomeCounters,
    api_key: HttpApiKeys | str | None,
    *,
    max_body_bytes: int,
    max_records: int,
) -> None:
    """Mount the ingest API on ``app`` (the service's admin app).

    ``api_key``: the keys accepted in ``X-API-Key`` (a string: that one key), or None
    when every caller is accepted.

    ``max_body_bytes`` is ``kafka.max_message_bytes``; ``max_records`` is
    ``ingestion.max_records_per_request``.
    """

    keys = HttpApiKeys(legacy=api_key) if isinstance(api_key, str) else api_key

    async def ingest(
        kind: Literal["event", "label"], request: Request, key: str | None
    ) -> JSONResponse:
        if keys is not None and not keys.accepts(key):
            return JSONResponse(
                {"detail": "missing or wrong X-API-Key header; ask the operator for the key"},
                status_code=401,
            )
        try:
            body = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            return _refuse(400, "unparseable", "the client went away before sending the body")
        if isinstance(body, JSONResponse):
            return body
        try:
            return await classify_and_write(kind, request, body)
        except _ServerFault as exc:
            return _refuse(503, "unavailable", str(exc))
        except Exception as exc:
            # Records are isolated before this (each is classified, and written or
            # dead-lettered, on its own), so what reaches here is a bug.
            log.error("POST /v1/%ss failed: %s: %s", kind, type(exc).__name__, exc, exc_info=exc)
            return _refuse(
                500,
                "internal",
                f"internal error ({type(exc).__name__}); it is in the service's log. "
                "Please report it with the request",
            )

    async def classify_and_write(
        kind: Literal["event", "label"], request: Request, body: bytes
    ) -> JSONResponse:
        parts = _split(body, max_records)
        if isinstance(parts, str):
            return _refuse(422, "unparseable", parts, max_records)
        request_id = uuid.uuid4().hex
        items = [
            Incoming(p.value, None, Source(kind=kind, via="http", owner=f"http:{request_id}:{i}"))
            for i, p in enumerate(parts)
        ]
        # FastAPI's own OpenTelemetry support opens the HTTP server span (continuing
        # the caller's traceparent); this span nests under it.  Without one (FastAPI
        # telemetry turned off) this span is the server span and continues the caller,
        # or, when the caller sent no trace context, starts a trace at
        # telemetry.untraced_sample_ratio (head sampling, as for Kafka records).
        native = trace.get_current_span().get_span_context().is_valid
        carried = None if native else propagate.extract(dict(request.headers))
        caller = None if carried is None else trace.get_current_span(carried).get_span_context()
        head = {HEAD_SAMPLED: True} if caller is not None and not caller.is_valid else {}
        with tracer.start_as_current_span(
            f"ingest {kind}s" if native else f"POST /v1/{kind}s",
            context=carried,
            kind=trace.SpanKind.INTERNAL if native else trace.SpanKind.SERVER,
            attributes={"driftline.records": len(items), **head},
        ):
            try:
                outcomes = await core.process(items)
            except UnavailableError as exc:
                raise _ServerFault(
                    f"{exc}; nothing of this request was written: send it again once it is back"
                ) from exc
            outcomes = await write_all(items, outcomes)
        counters.count(outcomes, [kind] * len(outcomes), "http")
        rejected = [
            RecordError(
                index=i,
                event_id=parts[i].event_id if parts[i].parsed else _event_id(parts[i].value),
                reason=outcome.reason.value,
                detail=outcome.letter.detail,
            )
            for i, outcome in enumerate(outcomes)
            if isinstance(outcome, Rejected)
        ]
        accepted = sum(isinstance(o, Accepted) for o in outcomes)
        payload = IngestResponse(accepted=accepted, rejected=rejected)
        return JSONResponse(payload.model_dump(), status_code=422 if rejected else 200)

    async def write_all(items: list[Incoming], outcomes: list[Outcome]) -> list[Outcome]:
        """Write every outcome and wait for Kafka; returns what was written for each.

        A record the producer refuses (or whose write fails because of it) is
        dead-lettered instead.  Raises :class:`_ServerFault` when Kafka fails, after
        giving up the dedup claims of the accepted records that were not written.
        """
        futures: dict[int, asyncio.Future[Any]] = {}
        faults: dict[int, Exception] = {}
        problem: BaseException | None = None
        for i, outcome in enumerate(outcomes):
            try:
                futures[i] = await send_outcome(producer, outcome)
            except Exception as exc:
                if not is_record_fault(exc):
                    problem = exc
                    break
                faults[i] = exc
        # Wait for what was queued even after a failure: what was written must not
        # be released (a resend would write it twice).
        results = await asyncio.gather(*futures.values(), return_exceptions=True)
        written: set[int] = set()
        for i, result in zip(futures, results, strict=True):
            if not isinstance(result, BaseException):
                written.add(i)
            elif isinstance(result, Exception) and is_record_fault(result):
                faults[i] = result
            elif problem is None:
                problem = result
        final = list(outcomes)
        try:
            if problem is not None:
                raise problem
            for i in sorted(faults):
                final[i] = await dead_letter(items[i], faults[i])
        except Exception as exc:
            await give_up(items, outcomes, [i for i in range(len(items)) if i not in written])
            raise _ServerFault(_unavailable(exc)) from exc
        # An accepted record dead-lettered after all gives up its claim, so that it is
        # taken when sent again.
        await give_up(items, outcomes, sorted(faults))
        return final

    async def dead_letter(item: Incoming, exc: Exception) -> Rejected:
        """Dead-letter a record whose outcome could not be written; answered as rejected."""
        letter = fault_letter(core, item, exc)
        log.error(
            "the %s at %s cannot be written (%s); it is dead-lettered as %s",
            item.source.kind,
            item.source.owner,
            letter.letter.detail,
            letter.reason.value,
            exc_info=exc,
        )
        try:
            await (await send_outcome(producer, letter))
        except Exception as again:
            if not is_record_fault(again):
                raise  # Kafka failed, not the letter: the request is answered 503
            # Should not happen (a dead letter always fits); the caller still has the
            # record and is told it was not taken.
            log.error(
                "the dead letter of the %s at %s cannot be written either: %s: %s",
                item.source.kind,
                item.source.owner,
                type(again).__name__,
                again,
                exc_info=again,
            )
        return letter

    async def give_up(items: list[Incoming], outcomes: list[Outcome], left: list[int]) -> None:
        """Release the dedup claims of the accepted records at ``left`` (not written)."""
        if not any(isinstance(outcomes[i], Accepted) for i in left):
            return
        try:
            await core.release([items[i] for i in left], [outcomes[i] for i in left])
        except UnavailableError as exc:
            log.warning(
                "could not release the dedup claims of %d record(s) that were not written "
                "(%s); sending them again within dedup_window_s dead-letters them as duplicates",
                len(left),
                exc,
            )

    @app.post("/v1/events", summary="Send one event or a batch", **_ingest_route(RawEvent))
    async def post_events(
        request: Request, x_api_key: str | None = Header(default=None)
    ) -> JSONResponse:
        """Validate events against their feature set; invalid ones are dead-lettered."""
        return await ingest("event", request, x_api_key)

    @app.post(
        "/v1/labels", summary="Send one label (ground truth) or a batch", **_ingest_route(RawLabel)
    )
    async def post_labels(
        request: Request, x_api_key: str | None = Header(default=None)
    ) -> JSONResponse:
        """Validate labels against their feature set's label type; invalid ones are
        dead-lettered."""
        return await ingest("label", request, x_api_key)


def _unavailable(exc: BaseException) -> str:
    return (
        f"Kafka is unavailable ({type(exc).__name__}: {exc}); records of this request may "
        "not have been written: send it again once Kafka is back (records that were "
        "written are then reported as duplicates)"
    )


async def _read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The body, or the 413 answer once it is known to be over ``limit`` bytes.

    Decided before anything is parsed: from ``Content-Length`` when it is sent,
    else while reading (a chunked body has no length), never holding more than
    ``limit`` bytes.
    """

    def too_large(size: str) -> JSONResponse:
        return _refuse(
            413,
            DlqReason.TOO_LARGE.value,
            f"the body is {size}, over the limit of {limit} bytes (kafka.max_message_bytes); "
            "send fewer records per request",
            limit,
        )

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return too_large(f"{int(declared)} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return too_large(f"over {limit} bytes")
    return bytes(body)


_WS = re.compile(r"[ \t\n\r]+")
_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace."""
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _split(body: bytes, max_records: int) -> list[_Part] | str:
    """One record per element of a JSON array body; the body itself when it is not one.

    Each element keeps its bytes as sent: the dead letter of a bad element holds
    that element, not the whole request.  A body that is not a well-formed array
    (not UTF-8, not JSON, nested too deeply) is one record, which the core
    classifies.  Returns the refusal's detail when there are more than
    ``max_records`` elements.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return [_Part(body)]
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        return [_Part(body)]
    parts: list[_Part] = []
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return [] if _skip_ws(text, pos + 1) == len(text) else [_Part(body)]
    while True:
        try:
            doc, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            # Malformed, too deep or a number too long: the whole body is one bad record.
            return [_Part(body)]
        if len(parts) == max_records:
            return (
                f"the body holds more than {max_records} records, the most one request may "
                "hold (ingestion.max_records_per_request); split it"
            )
        event_id = doc.get("event_id") if isinstance(doc, dict) else None
        parts.append(
            _Part(
                text[pos:end].encode("utf-8"),
                event_id if isinstance(event_id, str) else None,
                parsed=True,
            )
        )
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
            continue
        if text.startswith("]", pos) and _skip_ws(text, pos + 1) == len(text):
            return parts
        return [_Part(body)]


def _event_id(value: bytes) -> str | None:
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):  # not UTF-8 / JSON, too deep, a number too long
        return None
    ev = doc.get("event_id") if isinstance(doc, dict) else None
    return ev if isinstance(ev, str) else None
