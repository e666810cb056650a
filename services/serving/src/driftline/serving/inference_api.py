"""The Open Inference Protocol (KServe V2) ``inference.GRPCInferenceService``.

A served model's inputs are its features, one tensor each, shaped ``[-1, 1]``
(``[n]`` is accepted too) and typed after the feature store's declared types
(FP64, INT64, BYTES, BOOL). An optional BYTES input ``entity_id`` names each
row's entity in the prediction log. Outputs:

* ``predict`` — the predicted class as BYTES (``str(label)``), or FP64 for regression;
* ``probability`` — FP64, the probability of the predicted class (classifiers);
* ``probabilities`` — FP64 ``[n, k]``, every class's probability; the classes,
  in column order, are the JSON list in the output's ``classes`` parameter.

Outputs are returned as ``raw_output_contents`` when the request was raw.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from driftline.contracts.errors import InvalidArgumentError, NotFoundError, UnavailableError
from driftline.serving.core import ServingCore
from driftline.serving.loaded_model import LoadedModel, Scored
from driftline.serving.rpc_observer import observed
from driftline.serving.serving_metrics import ServingMetrics
from driftline.serving.tensor_codec import encode_raw, fill_typed, input_columns
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

__all__ = ["ENTITY_INPUT", "InferenceService", "output_tensors"]

_SERVICE = "inference.GRPCInferenceService"
ENTITY_INPUT = "entity_id"
"""Optional BYTES input naming each row's entity (for the prediction log)."""
SERVER_NAME = "driftline-serving"
SERVER_VERSION = "0.1.0"
_EXTRA = frozenset({ENTITY_INPUT})

Tensor = tuple[str, str, list[int], list[Any], dict[str, str]]
"""``(name, datatype, shape, flat values, string parameters)``."""


def output_tensors(model: LoadedModel, scored: Sequence[Scored]) -> list[Tensor]:
    """The output tensors of scored rows (see the module doc)."""
    n = len(scored)
    if not model.is_classifier:
        values = [math.nan if p is None else float(p) for p, _ in scored]
        return [("predict", "FP64", [n], values, {})]
    labels = ["" if p is None else str(p) for p, _ in scored]
    top = [probs.get(str(p), math.nan) if p is not None else math.nan for p, probs in scored]
    classes: list[str] = sorted({c for _, probs in scored for c in probs})
    flat = [probs.get(c, 0.0) for _, probs in scored for c in classes]
    return [
        ("predict", "BYTES", [n], labels, {}),
        ("probability", "FP64", [n], top, {}),
        ("probabilities", "FP64", [n, len(classes)], flat, {"classes": json.dumps(classes)}),
    ]


def _metadata_outputs(model: LoadedModel) -> list[oip.ModelMetadataResponse.TensorMetadata]:
    tm = oip.ModelMetadataResponse.TensorMetadata
    if not model.is_classifier:
        return [tm(name="predict", datatype="FP64", shape=[-1])]
    return [
        tm(name="predict", datatype="BYTES", shape=[-1]),
        tm(name="probability", datatype="FP64", shape=[-1]),
        tm(name="probabilities", datatype="FP64", shape=[-1, -1]),
    ]


class InferenceService(oip_grpc.GRPCInferenceServiceServicer):
    """OIP over the same core as the Predictor (same models, same scoring)."""

    def __init__(self, core: ServingCore, metrics: ServingMetrics) -> None:
        self.core = core
        self.metrics = metrics

    @observed(_SERVICE, "ServerLive")
    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    @observed(_SERVICE, "ServerReady")
    async def ServerReady(
        self, request: oip.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.core.table.ready)

    @observed(_SERVICE, "ModelReady")
    async def ModelReady(
        self, request: oip.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ModelReadyResponse:
        if not request.name:
            raise InvalidArgumentError("name is required: the model to check")
        try:
            await self.core.resolve(request.name, request.version)
        except UnavailableError:
            return oip.ModelReadyResponse(ready=False)
        except NotFoundError:
            # A known model without that alias/version is not ready; an unknown model is
            # NOT_FOUND (raised again below so the caller learns the name is wrong).
            self.core.table.get(request.name)
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    @observed(_SERVICE, "ServerMetadata")
    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    @observed(_SERVICE, "ModelMetadata")
    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ModelMetadataResponse:
        served, model, _ = await self.core.resolve(request.name, request.version)
        versions = sorted({m.version for m in served.aliases.values() if m is not None})
        tm = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in versions] or [str(model.version)],
            platform="river",
            inputs=[tm(name=f.name, datatype=f.datatype, shape=[-1, 1]) for f in model.features],
            outputs=_metadata_outputs(model),
        )

    @observed(_SERVICE, "ModelInfer")
    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ModelInferResponse:
        served, model, variant = await self.core.resolve(request.model_name, request.model_version)
        columns, extras, rows, raw = input_columns(request, model.by_name, _EXTRA)
        request_id = request.id or uuid.uuid4().hex
        scored = self.core.infer(
            served,
            model,
            columns,
            rows,
            variant=variant,
            request_id=request_id,
            entity_ids=extras.get(ENTITY_INPUT),
        )
        self.metrics.predicted(model.name, variant, rows)
        tensors = output_tensors(model, scored)
        wanted = [o.name for o in request.outputs]
        if wanted:
            by_name = {t[0]: t for t in tensors}
            missing = [w for w in wanted if w not in by_name]
            if missing:
                raise InvalidArgumentError(
                    f"unknown output(s) {', '.join(map(repr, missing))}; the model's outputs "
                    f"are: {', '.join(by_name)}"
                )
            tensors = [by_name[w] for w in wanted]
        response = oip.ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request_id
        )
        for name, datatype, shape, values, params in tensors:
            out = response.outputs.add(name=name, datatype=datatype, shape=shape)
            for key, text in params.items():
                out.parameters[key].string_param = text
            if raw:
                response.raw_output_contents.append(encode_raw(datatype, values))
            else:
                fill_typed(out.contents, datatype, values)
        return response
