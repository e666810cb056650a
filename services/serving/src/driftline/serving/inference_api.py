"""The Open Inference Protocol (KServe V2) ``inference.GRPCInferenceService``.

A served model's inputs are its features, one tensor each, shaped ``[-1, 1]``
(``[n]`` is accepted too) and typed after the feature store's declared types
(FP64, INT64, BYTES, BOOL) — or, for a model whose features are all numeric,
one 2-D ``[n, k]`` tensor of any name (``input-0`` …) whose columns are the
features in the order ModelMetadata lists them, as Seldon MLServer's
scikit-learn runtime and NumPy users send ``X``. An optional BYTES input
``entity_id`` names each row's entity in the prediction log. ModelMetadata's
platform and tensors are the model runtime's (``river``, ``sklearn``,
``onnxruntime_onnx``, ``python`` …). All rows of a request are predicted with
one call into the model. Outputs:

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
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace

from driftline.contracts.errors import InvalidArgumentError, NotFoundError, UnavailableError
from driftline.edge.server import ServerEdge
from driftline.model_runtimes import Predictions, TensorSpec
from driftline.security.api_keys import ApiKeyGuard
from driftline.serving.core import ServingCore
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.serving_metrics import ServingMetrics
from driftline.serving.tensor_codec import encode_raw, fill_typed, input_columns
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc

__all__ = ["ENTITY_INPUT", "InferenceService", "output_tensors"]

_EDGE = ServerEdge(
    "inference.GRPCInferenceService", trace.get_tracer("driftline.serving"), component="serving"
)
ENTITY_INPUT = "entity_id"
"""Optional BYTES input naming each row's entity (for the prediction log)."""
SERVER_NAME = "driftline-serving"
SERVER_VERSION = "0.1.0"
_EXTRA = frozenset({ENTITY_INPUT})

Tensor = tuple[str, str, list[int], "list[Any] | np.ndarray", dict[str, str]]
"""``(name, datatype, shape, flat values (a list or a 1-D array), string parameters)``."""


def output_tensors(model: LoadedModel, predictions: Predictions) -> list[Tensor]:
    """The output tensors of a batch's predictions (see the module doc); arrays stay arrays."""
    n = len(predictions)
    labels = predictions.labels
    if not model.is_classifier:
        values = np.array([math.nan if v is None else v for v in labels], dtype=np.float64)
        return [("predict", "FP64", [n], values, {})]
    names = ["" if v is None else str(v) for v in labels]
    proba = predictions.probabilities
    classes = list(predictions.classes) if proba is not None else []
    if proba is None or n == 0:
        top = np.full(n, math.nan)
        flat = np.empty(0, dtype=np.float64)
    else:
        column = {c: j for j, c in enumerate(classes)}
        index = np.array([column.get(c, -1) for c in names], dtype=np.int64)
        # A label the probabilities do not name (none yet, or a label-only output): NaN.
        top = np.where(index >= 0, proba[np.arange(n), index], math.nan)
        flat = np.ascontiguousarray(proba, dtype=np.float64).reshape(-1)
    return [
        ("predict", "BYTES", [n], names, {}),
        ("probability", "FP64", [n], top, {}),
        ("probabilities", "FP64", [n, len(classes)], flat, {"classes": json.dumps(classes)}),
    ]


def _tensor_metadata(specs: list[TensorSpec]) -> list[oip.ModelMetadataResponse.TensorMetadata]:
    tm = oip.ModelMetadataResponse.TensorMetadata
    return [tm(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in specs]


def _open(method: str, context: Any) -> None:
    """Every caller may call (no API keys)."""


class InferenceService(oip_grpc.GRPCInferenceServiceServicer):
    """OIP over the same core as the Predictor (same models, same scoring)."""

    def __init__(
        self, core: ServingCore, metrics: ServingMetrics, keys: ApiKeyGuard | None = None
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.record_rpc = metrics.observe
        # The edge asks before every call: the key check, or nothing (plaintext, no keys).
        self.authorize: Callable[[str, Any], None] = keys.authorize if keys is not None else _open

    @_EDGE.unary("ServerLive", guarded=True)
    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    @_EDGE.unary("ServerReady", guarded=True)
    async def ServerReady(
        self, request: oip.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.core.table.ready)

    @_EDGE.unary("ModelReady", guarded=True)
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

    @_EDGE.unary("ServerMetadata", guarded=True)
    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    @_EDGE.unary("ModelMetadata", guarded=True)
    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ModelMetadataResponse:
        served, model, _ = await self.core.resolve(request.name, request.version)
        versions = sorted({m.version for m in served.aliases.values() if m is not None})
        return oip.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in versions] or [str(model.version)],
            platform=model.platform,
            inputs=_tensor_metadata(model.runtime.inputs()),
            outputs=_tensor_metadata(model.runtime.outputs()),
        )

    @_EDGE.unary("ModelInfer", guarded=True)
    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ModelInferResponse:
        served, model, variant = await self.core.resolve(request.model_name, request.model_version)
        columns, extras, rows, raw = input_columns(request, model.by_name, _EXTRA)
        request_id = request.id or uuid.uuid4().hex
        predictions = self.core.infer(
            served,
            model,
            columns,
            rows,
            variant=variant,
            request_id=request_id,
            entity_ids=extras.get(ENTITY_INPUT),
        )
        self.metrics.predicted(model.name, variant, rows)
        tensors = output_tensors(model, predictions)
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
                fill_typed(
                    out.contents,
                    datatype,
                    values.tolist() if isinstance(values, np.ndarray) else values,
                )
        return response
