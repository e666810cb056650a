"""Open Inference Protocol tensors <-> Python columns.

Inputs arrive either typed (``InferTensorContents``, the repeated field that
matches the datatype) or raw (``raw_input_contents``: little-endian, row-major
bytes; BYTES elements each prefixed by a 4-byte little-endian length). Outputs
go back the way the request came. The features come as one tensor per feature,
or as one numeric ``[n, k]`` matrix whose columns are the model's features in
order (:func:`input_columns`).

>>> raw = encode_raw("FP64", [1.5, -2.0])
>>> decode_raw("FP64", raw, 2)
[1.5, -2.0]
>>> decode_raw("BYTES", encode_raw("BYTES", ["a", "bc"]), 2)
[b'a', b'bc']
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftline.contracts.errors import InvalidArgumentError
from driftline.serving.loaded_model import ModelFeature
from inference import grpc_service_pb2 as oip

__all__ = [
    "SUPPORTED_DATATYPES",
    "decode_raw",
    "decode_typed",
    "element_count",
    "encode_raw",
    "feature_column",
    "fill_typed",
    "input_columns",
    "matrix_columns",
]

_NUMPY: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_TYPED_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
SUPPORTED_DATATYPES = frozenset([*_NUMPY, "BYTES"])
"""Every OIP datatype this codec reads."""

_INTEGER = frozenset(k for k in _NUMPY if k.startswith(("INT", "UINT")))
_FLOAT = frozenset({"FP16", "FP32", "FP64"})
_LENGTH = struct.Struct("<I")


def element_count(name: str, shape: Sequence[int]) -> int:
    """The number of elements of a tensor of ``shape`` (every dimension must be >= 0)."""
    n = 1
    for d in shape:
        if d < 0:
            raise InvalidArgumentError(
                f"input {name!r}: shape {list(shape)} has a negative dimension; send the "
                "actual sizes (-1 is only for metadata)"
            )
        n *= d
    return n


def decode_raw(datatype: str, data: bytes, count: int, name: str = "") -> list[Any]:
    """``count`` elements of ``datatype`` from raw bytes (BYTES elements come back as bytes)."""
    if datatype == "BYTES":
        out: list[Any] = []
        offset, size = 0, len(data)
        for _ in range(count):
            if offset + 4 > size:
                raise InvalidArgumentError(
                    f"input {name!r}: raw BYTES content ends after {len(out)} of {count} elements"
                )
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += 4
            if offset + length > size:
                raise InvalidArgumentError(
                    f"input {name!r}: raw BYTES element {len(out)} claims {length} bytes but "
                    f"only {size - offset} remain"
                )
            out.append(data[offset : offset + length])
            offset += length
        if offset != size:
            raise InvalidArgumentError(
                f"input {name!r}: {size - offset} bytes left over after {count} BYTES elements"
            )
        return out
    dtype = np.dtype(_NUMPY[datatype])
    if len(data) != count * dtype.itemsize:
        raise InvalidArgumentError(
            f"input {name!r}: raw content is {len(data)} bytes; {count} {datatype} elements "
            f"need {count * dtype.itemsize}"
        )
    values: list[Any] = np.frombuffer(data, dtype=dtype).tolist()
    return values


def encode_raw(datatype: str, values: Sequence[Any] | np.ndarray) -> bytes:
    """Raw little-endian bytes of ``values`` (str or bytes elements for BYTES; an array is
    written in one copy)."""
    if datatype == "BYTES":
        # Outputs repeat a few class labels: each distinct value is encoded once
        # (a 256-row label tensor took ~40% of a ModelInfer's own time element by element).
        encoded: dict[Any, bytes] = {}
        parts: list[bytes] = []
        for v in values:
            chunk = encoded.get(v)
            if chunk is None:
                b = v if isinstance(v, bytes) else str(v).encode("utf-8")
                chunk = encoded[v] = _LENGTH.pack(len(b)) + b
            parts.append(chunk)
        return b"".join(parts)
    return np.asarray(values, dtype=_NUMPY[datatype]).tobytes()


def decode_typed(
    datatype: str, contents: oip.InferTensorContents, count: int, name: str = ""
) -> list[Any]:
    """``count`` elements from the typed contents field that matches ``datatype``."""
    field = _TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidArgumentError(
            f"input {name!r}: {datatype} can only be sent as raw_input_contents"
        )
    values = list(getattr(contents, field))
    if len(values) != count:
        raise InvalidArgumentError(
            f"input {name!r}: shape says {count} elements but {field} holds {len(values)}"
        )
    return values


def fill_typed(contents: oip.InferTensorContents, datatype: str, values: Sequence[Any]) -> None:
    """Put ``values`` into the typed field of ``contents`` that matches ``datatype``."""
    field = getattr(contents, _TYPED_FIELD[datatype])
    if datatype == "BYTES":
        field.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values)
    else:
        field.extend(values)


def feature_column(feature: ModelFeature, datatype: str, values: list[Any]) -> list[Any]:
    """An input tensor's elements as the Python values feature ``feature`` takes.

    Numeric tensors feed FP64 and INT64 features (an INT64 feature takes floats
    only when they are whole numbers), BYTES tensors feed BYTES features (UTF-8),
    BOOL tensors BOOL features. Anything else is INVALID_ARGUMENT.
    """
    want = feature.datatype
    if want == "FP64" and (datatype in _FLOAT or datatype in _INTEGER):
        return values
    if want == "INT64":
        if datatype in _INTEGER:
            return values
        if datatype in _FLOAT:
            out: list[Any] = []
            for v in values:
                if not (math.isfinite(v) and float(v).is_integer()):
                    raise InvalidArgumentError(
                        f"input {feature.name!r} is INT64; {datatype} value {v!r} is not a "
                        "whole number"
                    )
                out.append(int(v))
            return out
    if want == "BYTES" and datatype == "BYTES":
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(
                f"input {feature.name!r}: a BYTES element is not valid UTF-8 ({exc.reason})"
            ) from None
    if want == "BOOL" and datatype == "BOOL":
        return values
    raise InvalidArgumentError(
        f"input {feature.name!r} has datatype {datatype}; the model takes it as {want}"
        + (" (or any numeric type)" if want in ("FP64", "INT64") else "")
    )


def _decode(
    request: oip.ModelInferRequest, i: int, tensor: Any, count: int, raw: bool
) -> list[Any]:
    name, datatype = tensor.name, tensor.datatype
    if raw:
        if tensor.HasField("contents"):
            raise InvalidArgumentError(
                f"input {name!r} sets contents although raw_input_contents is used; "
                "use one or the other"
            )
        return decode_raw(datatype, request.raw_input_contents[i], count, name)
    return decode_typed(datatype, tensor.contents, count, name)


def matrix_columns(
    name: str,
    datatype: str,
    array: np.ndarray,
    features: Sequence[ModelFeature],
) -> dict[str, np.ndarray]:
    """The feature columns of a matrix input (``array`` shaped ``[rows, len(features)]``).

    Column ``j`` is feature ``j`` of the model, in signature order (what Seldon
    MLServer's scikit-learn runtime and NumPy users send: ``X`` as one tensor).
    The matrix must be numeric and every feature numeric: FP64 features take any
    number, INT64 features integers, or floats that are whole numbers.
    """
    if datatype not in _FLOAT and datatype not in _INTEGER:
        raise InvalidArgumentError(
            f"input {name!r}: a [rows, {len(features)}] matrix input is numeric (FP32, FP64 or "
            f"an integer type), not {datatype}"
        )
    text = [f for f in features if f.datatype not in ("FP64", "INT64")]
    if text:
        raise InvalidArgumentError(
            f"input {name!r}: the model's feature(s) {', '.join(repr(f.name) for f in text)} "
            "are not numeric, so its inputs cannot come as one matrix; send one tensor per "
            "feature"
        )
    # Columns stay arrays (FP64 / INT64 as the features are declared): a scikit-learn
    # or ONNX model reads them back as one matrix without a Python object per value.
    out: dict[str, np.ndarray] = {}
    for j, feature in enumerate(features):
        column = array[:, j]
        if feature.datatype == "INT64":
            if datatype in _FLOAT:
                whole = np.isfinite(column) & (column == np.floor(column))
                if not whole.all():
                    bad = column[~whole][0].item()
                    raise InvalidArgumentError(
                        f"input {name!r}: column {j} is feature {feature.name!r}, which is "
                        f"INT64; {datatype} value {bad!r} is not a whole number"
                    )
            out[feature.name] = column.astype(np.int64)
        else:
            out[feature.name] = column.astype(np.float64)
    return out


def _matrix(
    request: oip.ModelInferRequest, i: int, tensor: Any, shape: list[int], raw: bool
) -> np.ndarray:
    """A matrix input's elements as a ``shape`` array (one copy at most)."""
    name, datatype = tensor.name, tensor.datatype
    count = element_count(name, shape)
    if raw and datatype in _NUMPY:
        if tensor.HasField("contents"):
            raise InvalidArgumentError(
                f"input {name!r} sets contents although raw_input_contents is used; "
                "use one or the other"
            )
        data = request.raw_input_contents[i]
        dtype = np.dtype(_NUMPY[datatype])
        if len(data) != count * dtype.itemsize:
            raise InvalidArgumentError(
                f"input {name!r}: raw content is {len(data)} bytes; {count} {datatype} "
                f"elements (shape {shape}) need {count * dtype.itemsize}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    values = _decode(request, i, tensor, count, raw)
    return np.asarray(values, dtype=_NUMPY.get(datatype, object)).reshape(shape)


def input_columns(
    request: oip.ModelInferRequest, by_name: Mapping[str, ModelFeature], extra: frozenset[str]
) -> tuple[dict[str, list[Any] | np.ndarray], dict[str, list[Any]], int, bool]:
    """``(feature columns, extra columns, rows, raw)`` of a ModelInfer request.

    The features come either as one tensor per feature, each shaped ``[n]`` or
    ``[n, 1]`` with the same ``n`` for all (any subset: absent features are
    missing), or as one 2-D ``[n, k]`` matrix input not named after a feature,
    whose ``k`` columns are every feature of ``by_name`` in its (the model's) order.
    Other inputs must be one of ``extra`` (decoded, undecoded BYTES as str). ``raw``
    tells whether the request used ``raw_input_contents``. Anything else is
    :class:`InvalidArgumentError` naming the input and what was expected.
    """
    raw = len(request.raw_input_contents) > 0
    k = len(by_name)
    if not request.inputs:
        raise InvalidArgumentError(
            f"no inputs: send one input tensor per feature, or one [rows, {k}] matrix of them all"
        )
    if raw and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidArgumentError(
            f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} "
            "inputs; send one per input, in the order of inputs"
        )
    columns: dict[str, list[Any] | np.ndarray] = {}
    extras: dict[str, list[Any]] = {}
    matrix: str | None = None
    rows: int | None = None
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        feature = by_name.get(name)
        if feature is not None and matrix is not None:
            raise InvalidArgumentError(
                f"input {name!r}: feature {name!r} is already a column of matrix input "
                f"{matrix!r}; send one [rows, {k}] matrix or one tensor per feature, not both"
            )
        if name in columns or name in extras or name == matrix:
            raise InvalidArgumentError(f"input {name!r} is sent twice")
        # An input that is neither a feature nor an extra is the matrix of all features
        # when it is 2-D: [n, k], or [n, 1] for a model of one feature.
        is_matrix = (
            feature is None and name not in extra and len(shape) == 2 and (shape[1] != 1 or k == 1)
        )
        if feature is None and name not in extra and not is_matrix:
            raise InvalidArgumentError(
                f"unknown input {name!r}; the model's inputs are: {', '.join(by_name)} (one "
                f"tensor each), or one [rows, {k}] matrix of them in that order"
            )
        if datatype not in SUPPORTED_DATATYPES:
            raise InvalidArgumentError(
                f"input {name!r}: unknown datatype {datatype!r}; use one of "
                f"{', '.join(sorted(SUPPORTED_DATATYPES))}"
            )
        if is_matrix:
            if datatype not in _FLOAT and datatype not in _INTEGER:
                raise InvalidArgumentError(
                    f"input {name!r}: a [rows, {k}] matrix input is numeric (FP32, FP64 or an "
                    f"integer type), not {datatype}"
                )
            if shape[1] != k:
                raise InvalidArgumentError(
                    f"input {name!r}: shape {shape}; a matrix input has one column per feature "
                    f"of the model, in this order: [rows, {k}] of {', '.join(by_name)}"
                )
            if matrix is not None or columns:
                raise InvalidArgumentError(
                    f"input {name!r}: send the features either as one [rows, {k}] matrix input "
                    "or as one tensor per feature, not both"
                )
        elif len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidArgumentError(
                f"input {name!r}: shape {shape}; one feature per input is shaped [rows] or "
                f"[rows, 1] (or send all {k} features as one [rows, {k}] matrix input)"
            )
        count = element_count(name, shape)
        n = shape[0] if is_matrix else count
        if rows is None:
            rows = n
        elif n != rows:
            raise InvalidArgumentError(
                f"input {name!r} has {n} rows but the inputs before it have {rows}"
            )
        if is_matrix:
            array = _matrix(request, i, tensor, shape, raw)
            columns = dict(matrix_columns(name, datatype, array, list(by_name.values())))
            matrix = name
            continue
        values = _decode(request, i, tensor, count, raw)
        if feature is None:
            extras[name] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
            ]
        else:
            columns[name] = feature_column(feature, datatype, values)
    return columns, extras, rows or 0, raw
