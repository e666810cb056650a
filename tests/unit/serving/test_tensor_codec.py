"""OIP tensors: raw and typed contents decode to the same columns; outputs round-trip."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
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


# -- one [n, k] matrix input (what MLServer's sklearn runtime and tritonclient users send) --

LOANS = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")


def _matrix_rows(n: int) -> list[list[float]]:
    """``n`` rows of the 9 loans features (whole numbers where the feature is INT64)."""
    return [
        [50_000.0 + i, 0.5 * i, 20 + i, i % 5, i % 20, i % 9, 1e5 + i, i % 30, 2_500.25 * i]
        for i in range(n)
    ]


def _matrix_request(
    rows: list[list[float]], datatype: str, raw: bool, name: str = "input-0"
) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="loans-risk")
    flat = [v for row in rows for v in row]
    t = request.inputs.add(name=name, datatype=datatype, shape=[len(rows), len(rows[0])])
    if raw:
        request.raw_input_contents.append(encode_raw(datatype, flat))
    else:
        fill_typed(t.contents, datatype, flat)
    return request


def _lists(columns: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else list(v) for k, v in columns.items()}


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_a_matrix_input_gives_the_per_feature_columns(
    model: LoadedModel, raw: bool, datatype: str
) -> None:
    rows = _matrix_rows(4)
    columns, extras, n, was_raw = input_columns(
        _matrix_request(rows, datatype, raw), model.by_name, frozenset()
    )
    assert (n, was_raw, extras) == (4, raw, {})
    assert list(columns) == list(LOANS) == list(model.feature_names)
    # The same request as one tensor per feature decodes to the very same columns.
    per_feature = oip.ModelInferRequest(model_name="loans-risk")
    for j, name in enumerate(LOANS):
        t = per_feature.inputs.add(name=name, datatype=datatype, shape=[4, 1])
        fill_typed(t.contents, datatype, [r[j] for r in rows])
    expected, _, _, _ = input_columns(per_feature, model.by_name, frozenset())
    assert _lists(columns) == expected
    # A matrix's columns stay arrays (no Python object per value): INT64 features as
    # int64, FP64 ones as float64; as lists they are ints and floats.
    assert columns["age"].dtype == np.int64 and columns["salary"].dtype == np.float64
    assert _lists(columns)["age"] == [20, 21, 22, 23]
    assert all(type(v) is int for v in _lists(columns)["age"])
    assert _lists(columns)["salary"] == [50_000.0, 50_001.0, 50_002.0, 50_003.0]


@pytest.mark.parametrize("raw", [True, False])
def test_an_integer_matrix_is_accepted(model: LoadedModel, raw: bool) -> None:
    rows = [[int(v) for v in row] for row in _matrix_rows(3)]
    columns, _, n, _ = input_columns(
        _matrix_request(rows, "INT64", raw), model.by_name, frozenset()
    )
    got = _lists(columns)
    assert n == 3 and got["zipcode"] == [0, 1, 2] and got["salary"][2] == 50_002


def test_a_matrix_may_come_with_entity_ids(model: LoadedModel) -> None:
    request = _matrix_request(_matrix_rows(2), "FP64", raw=False)
    ids = request.inputs.add(name="entity_id", datatype="BYTES", shape=[2])
    fill_typed(ids.contents, "BYTES", ["c-1", "c-2"])
    columns, extras, n, _ = input_columns(request, model.by_name, frozenset({"entity_id"}))
    assert n == 2 and extras == {"entity_id": ["c-1", "c-2"]} and len(columns) == 9


def _with(mutate: Callable[[oip.ModelInferRequest], Any]) -> oip.ModelInferRequest:
    request = _matrix_request(_matrix_rows(2), "FP64", raw=True)
    mutate(request)
    return request


def _add_feature_tensor(request: oip.ModelInferRequest) -> None:
    request.inputs.add(name="salary", datatype="FP64", shape=[2, 1])
    request.raw_input_contents.append(encode_raw("FP64", [1.0, 2.0]))


def _feature_tensor_first(request: oip.ModelInferRequest) -> None:
    matrix = oip.ModelInferRequest()
    matrix.CopyFrom(request)
    del request.inputs[:]
    del request.raw_input_contents[:]
    _add_feature_tensor(request)
    request.inputs.append(matrix.inputs[0])
    request.raw_input_contents.append(matrix.raw_input_contents[0])


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        # 8 columns for 9 features: the input, what it got and what the model takes.
        (
            _matrix_request([r[:8] for r in _matrix_rows(2)], "FP64", raw=True),
            "input 'input-0': shape [2, 8]; a matrix input has one column per feature of "
            "the model, in this order: [rows, 9] of salary, commission, age",
        ),
        (
            _matrix_request([[*r, 1.0] for r in _matrix_rows(2)], "FP32", raw=False),
            "shape [2, 10]",
        ),
        (
            _with(lambda r: r.inputs[0].shape.extend([1])),
            "unknown input 'input-0'; the model's inputs are: salary",
        ),
        (
            _with(lambda r: setattr(r.inputs[0], "datatype", "BYTES")),
            "input 'input-0': a [rows, 9] matrix input is numeric (FP32, FP64 or an integer "
            "type), not BYTES",
        ),
        (
            _with(lambda r: setattr(r.inputs[0], "datatype", "BOOL")),
            "matrix input is numeric",
        ),
        (
            _with(lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-8])),
            "input 'input-0': raw content is 136 bytes; 18 FP64 elements (shape [2, 9]) need 144",
        ),
        (
            _matrix_request([[*r[:2], 20.5, *r[3:]] for r in _matrix_rows(2)], "FP64", raw=True),
            "input 'input-0': column 2 is feature 'age', which is INT64; FP64 value 20.5 is not "
            "a whole number",
        ),
        (
            _with(_add_feature_tensor),
            "input 'salary': feature 'salary' is already a column of matrix input 'input-0'",
        ),
        (
            _with(_feature_tensor_first),
            "input 'input-0': send the features either as one [rows, 9] matrix input or as one "
            "tensor per feature, not both",
        ),
        (
            _with(lambda r: r.inputs[0].shape.__setitem__(0, -1)),
            "input 'input-0': shape [-1, 9] has a negative dimension",
        ),
    ],
)
def test_bad_matrix_inputs_say_what_is_wrong(
    model: LoadedModel, request_: oip.ModelInferRequest, needle: str
) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        input_columns(request_, model.by_name, frozenset())
    assert needle in err.value.message


def test_two_matrices_are_refused(model: LoadedModel) -> None:
    request = _matrix_request(_matrix_rows(2), "FP64", raw=False)
    second = request.inputs.add(name="input-1", datatype="FP64", shape=[2, 9])
    fill_typed(second.contents, "FP64", [v for row in _matrix_rows(2) for v in row])
    with pytest.raises(InvalidArgumentError, match="input 'input-1': send the features either"):
        input_columns(request, model.by_name, frozenset())


def test_a_model_with_a_text_feature_takes_no_matrix() -> None:
    text = LoadedModel.build(
        "m", 1, None, spec={"features": ["salary", "car"], "task": "binary"},
        feature_types={"salary": "FP64", "car": "BYTES"},
    )  # fmt: skip
    request = _matrix_request([[1.0, 2.0]], "FP64", raw=False)
    with pytest.raises(InvalidArgumentError, match="feature\\(s\\) 'car' are not numeric"):
        input_columns(request, text.by_name, frozenset())


def test_a_one_feature_model_takes_an_n_by_1_matrix() -> None:
    one = LoadedModel.build(
        "m", 1, None, spec={"features": ["salary"], "task": "binary"},
        feature_types={"salary": "FP64"},
    )  # fmt: skip
    columns, _, n, _ = input_columns(
        _matrix_request([[1.0], [2.0]], "FP32", raw=False), one.by_name, frozenset()
    )
    assert (_lists(columns), n) == ({"salary": [1.0, 2.0]}, 2)
