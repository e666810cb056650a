"""OIP tensors: raw and typed contents decode to the same columns; outputs round-trip."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import pytest

from driftline.contracts.errors import InvalidArgumentError
from driftline.serving.loaded_model import LoadedModel, ModelFeature
from driftline.serving.tensor_codec import (
    decode_raw,
    decode_typed,
    encode_raw,
    feature_column,
    fill_typed,
    input_columns,
)
from inference import grpc_service_pb2 as oip

pytestmark = pytest.mark.unit

CASES: list[tuple[str, list[Any]]] = [
    ("FP64", [1.5, -2.25, 1e300]),
    ("FP32", [1.5, -2.25, 0.0]),
    ("INT64", [1, -(2**40), 7]),
    ("INT32", [1, -5, 7]),
    ("UINT8", [0, 255, 7]),
    ("BOOL", [True, False, True]),
    ("BYTES", [b"sedan", b"", "caf\u00e9".encode()]),
]


@pytest.mark.parametrize(("datatype", "values"), CASES)
def test_raw_round_trip(datatype: str, values: list[Any]) -> None:
    assert decode_raw(datatype, encode_raw(datatype, values), len(values)) == values


@pytest.mark.parametrize(("datatype", "values"), CASES)
def test_typed_round_trip(datatype: str, values: list[Any]) -> None:
    contents = oip.InferTensorContents()
    fill_typed(contents, datatype, values)
    assert decode_typed(datatype, contents, len(values)) == values


def test_raw_bytes_layout_is_little_endian_with_length_prefixes() -> None:
    assert encode_raw("BYTES", ["ab", "c"]) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    assert encode_raw("INT64", [1]) == struct.pack("<q", 1)


@pytest.mark.parametrize(
    ("datatype", "data", "count", "needle"),
    [
        ("FP64", b"\x00" * 12, 2, "need 16"),
        ("BYTES", b"\x05\x00\x00\x00ab", 1, "claims 5 bytes"),
        ("BYTES", b"\x01\x00\x00\x00ab", 1, "left over"),
        ("BYTES", b"", 1, "ends after 0 of 1"),
    ],
)
def test_malformed_raw_content_is_invalid(
    datatype: str, data: bytes, count: int, needle: str
) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        decode_raw(datatype, data, count, "x")
    assert needle in err.value.message


def test_feature_column_checks_the_datatype() -> None:
    age = ModelFeature("age", "INT64")
    assert feature_column(age, "FP64", [41.0, 7.0]) == [41, 7]
    with pytest.raises(InvalidArgumentError, match="not a whole number"):
        feature_column(age, "FP64", [41.5])
    with pytest.raises(
        InvalidArgumentError, match="has datatype BYTES; the model takes it as INT64"
    ):
        feature_column(age, "BYTES", [b"41"])
    car = ModelFeature("car", "BYTES")
    assert feature_column(car, "BYTES", [b"sedan"]) == ["sedan"]
    with pytest.raises(InvalidArgumentError, match="BYTES"):
        feature_column(car, "FP64", [1.0])
    assert math.isnan(feature_column(ModelFeature("s", "FP64"), "FP32", [math.nan])[0])


@pytest.fixture
def model(tree_pipeline: Any, make_model: Callable[..., LoadedModel]) -> LoadedModel:
    return make_model(tree_pipeline, 1)


def _request(raw: bool, shape: list[int] | None = None) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="loans-risk")
    for name, datatype, values in (("salary", "FP64", [1.0, 2.0]), ("age", "INT64", [30, 40])):
        t = request.inputs.add(name=name, datatype=datatype, shape=shape or [2, 1])
        if raw:
            request.raw_input_contents.append(encode_raw(datatype, values))
        else:
            fill_typed(t.contents, datatype, values)
    return request


@pytest.mark.parametrize("raw", [True, False])
def test_raw_and_typed_requests_give_the_same_columns(model: LoadedModel, raw: bool) -> None:
    columns, extras, rows, was_raw = input_columns(_request(raw), model.by_name, frozenset())
    assert columns == {"salary": [1.0, 2.0], "age": [30, 40]}
    assert rows == 2 and was_raw is raw and extras == {}


def test_flat_shape_is_accepted(model: LoadedModel) -> None:
    _, _, rows, _ = input_columns(_request(True, [2]), model.by_name, frozenset())
    assert rows == 2


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: setattr(r.inputs[0], "name", "income"), "unknown input 'income'"),
        (lambda r: r.inputs[1].shape.__setitem__(0, 3), "has 3 rows"),
        (lambda r: r.inputs[0].shape.extend([2]), "one feature per input"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP8"), "unknown datatype 'FP8'"),
        (lambda r: r.inputs[0].contents.fp64_contents.append(1.0), "sets contents although raw"),
        (lambda r: r.raw_input_contents.pop(), "1 raw_input_contents for 2 inputs"),
    ],
)
def test_bad_requests_say_what_is_wrong(model: LoadedModel, mutate: Any, needle: str) -> None:
    request = _request(True)
    mutate(request)
    with pytest.raises(InvalidArgumentError) as err:
        input_columns(request, model.by_name, frozenset())
    assert needle in err.value.message
