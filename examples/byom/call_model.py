"""Call a served model: OIP ``ModelInfer`` with tritonclient, and ``driftline.v1.Predictor``.

    uv run python examples/byom/call_model.py --name loans-hgb --rows train.parquet

1. **tritonclient** (any Open Inference Protocol / KServe V2 client works unchanged):
   the model's metadata, then the newest ``-n`` rows of ``--rows`` (an export of
   ``driftline features export``) as one ``[n, k]`` FP64 matrix input, in the
   order the metadata lists the inputs.  One call, one predict over the batch.
2. **Predictor**, Driftline's own API: a prediction for an entity, its features read
   from the online feature store (``--entities`` of the newest rows' customers), and
   one with the features sent with the request (the newest row's values).

Prints what came back (``--json``: one JSON document, for scripts).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import pandas as pd
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from driftline.v1 import common_pb2, predictor_pb2, predictor_pb2_grpc

NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Call a model served by Driftline with tritonclient (ModelInfer) and the "
        "driftline.v1.Predictor API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--name", default="loans-hgb", help="the model")
    parser.add_argument(
        "--serving", default="127.0.0.1:50053", help="serving's gRPC address (both APIs)"
    )
    parser.add_argument(
        "--rows", required=True, help="a `driftline features export` Parquet file to send rows of"
    )
    parser.add_argument("-n", type=int, default=256, help="rows in the ModelInfer batch")
    parser.add_argument(
        "--entities", type=int, default=3, help="entities to ask Predict about by id"
    )
    parser.add_argument("--version", type=int, help="a version to pin (default: the champion)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args(argv)


def model_infer(
    url: str, name: str, rows: pd.DataFrame, version: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's metadata and its ModelInfer answer for ``rows`` as one matrix."""
    client = triton.InferenceServerClient(url)
    meta = client.get_model_metadata(name, as_json=True)
    names = [i["name"] for i in meta["inputs"]]  # the feature order the model reads
    X = rows[names].to_numpy(dtype=np.float64)
    matrix = triton.InferInput("X", list(X.shape), "FP64")
    matrix.set_data_from_numpy(X)
    result = client.infer(name, [matrix], model_version=str(version or ""))
    probabilities = result.get_output("probabilities")
    answer = {
        "model_version": int(result.get_response().model_version),
        "predict": [p.decode() for p in result.as_numpy("predict").tolist()],
        "probability": result.as_numpy("probability").tolist(),
        "classes": json.loads(probabilities.parameters["classes"].string_param),
    }
    return meta, answer


def value(v: Any) -> common_pb2.Value:
    """A feature value as the Predictor API takes it (INT64 features want integers)."""
    if isinstance(v, (int, np.integer)):
        return common_pb2.Value(int64_value=int(v))
    return common_pb2.Value(double_value=float(v))


def plain(v: common_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)


def answered(response: predictor_pb2.PredictResponse) -> dict[str, Any]:
    return {
        "model_version": response.model_version,
        "variant": response.variant,
        "prediction": plain(response.prediction),
        "probabilities": dict(response.probabilities),
        "features": {k: plain(v) for k, v in response.features.items()},
        "feature_status": {
            k: common_pb2.FeatureStatus.Name(s) for k, s in response.feature_status.items()
        },
    }


def odds(answer: dict[str, Any]) -> str:
    """Class probabilities, e.g. ``(0: 0.982, 1: 0.018)``."""
    p = answer["probabilities"]
    return "(" + ", ".join(f"{c}: {p[c]:.3f}" for c in sorted(p)) + ")"


def predict(
    target: str, name: str, entities: list[str], row: dict[str, Any], version: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predict for each of ``entities`` (features from the store), and for ``row`` sent
    as request-time features."""
    requests = [predictor_pb2.PredictRequest(entity_id=e, model_name=name) for e in entities]
    requests.append(
        predictor_pb2.PredictRequest(
            entity_id=row["entity_id"],
            model_name=name,
            features={k: value(v) for k, v in row["features"].items()},
        )
    )
    with grpc.insecure_channel(target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        answers = []
        for request in requests:
            if version:
                request.version = version  # pinned; else the champion answers
            response = stub.Predict(request, timeout=10)
            answers.append({**answered(response), "entity_id": request.entity_id})
    return answers[:-1], answers[-1]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    frame = pd.read_parquet(args.rows)
    rows = frame.tail(args.n)
    meta, infer = model_infer(args.serving, args.name, rows, args.version)
    features = [i["name"] for i in meta["inputs"]]
    newest = rows.tail(1).to_dict("records")[0]  # Python values: ints stay ints
    request_row = {
        "entity_id": newest["entity_id"],
        "features": {f: newest[f] for f in features if not pd.isna(newest[f])},
    }
    entities = list(dict.fromkeys(reversed(rows["entity_id"].tolist())))[: args.entities]
    by_entity, with_features = predict(args.serving, args.name, entities, request_row, args.version)
    labels = rows["label"].astype(str).tolist() if "label" in rows else None
    accuracy = (
        sum(p == y for p, y in zip(infer["predict"], labels, strict=True)) / len(labels)
        if labels
        else None
    )
    out = {
        "metadata": meta,
        "model_infer": {**infer, "rows": len(rows), "accuracy": accuracy},
        "event_ids": rows["event_id"].tolist(),
        "predict_by_entity": by_entity,
        "predict_with_features": with_features,
    }
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    inputs = ", ".join(f"{i['name']} {i['datatype']}" for i in meta["inputs"])
    print(f"{args.name}: platform {meta['platform']}, inputs {inputs}")
    print(f"ModelInfer: {len(rows)} rows as one [{len(rows)}, {len(features)}] FP64 matrix -> "
          f"v{infer['model_version']}, classes {infer['classes']}, predict "
          f"{infer['predict'][:8]}…" + (f", accuracy {accuracy:.3f} against the file's labels"
                                        if accuracy is not None else ""))  # fmt: skip
    for a in by_entity:
        missing = [k for k, s in a["feature_status"].items() if s != "FEATURE_STATUS_PRESENT"]
        print(f"Predict {a['entity_id']} (features from the online store): {a['prediction']} "
              f"{odds(a)} by v{a['model_version']} ({a['variant']})"
              + (f"; not in the store: {', '.join(missing)}" if missing else ""))  # fmt: skip
    a = with_features
    print(f"Predict {a['entity_id']} with the newest row's features: {a['prediction']} "
          f"{odds(a)} (ModelInfer said {infer['predict'][-1]})")  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as exc:
        sys.exit(f"call_model: Predict: {exc.code().name}: {exc.details()}")
    except InferenceServerException as exc:
        sys.exit(f"call_model: ModelInfer: {exc.status()}: {exc.message()}")
