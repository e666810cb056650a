"""The RPC contracts: OIP wire compatibility, generated code freshness, round trips.

tritonclient's ``service_pb2`` defines the same ``inference.*`` symbols as ours, so
both cannot live in the default descriptor pool of one process. Its descriptors are
therefore exported by a subprocess and loaded into a private pool here.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from driftline.v1 import common_pb2, predictor_pb2, registry_pb2
from inference import grpc_service_pb2 as oip

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GEN_SCRIPT = ROOT / "scripts" / "gen_proto.py"

_EXPORT_TRITON = textwrap.dedent(
    """
    import base64, json
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import service_pb2

    ordered, seen = [], set()

    def visit(fd):
        for dep in fd.dependencies:
            visit(dep)
        if fd.name not in seen:
            seen.add(fd.name)
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)
            ordered.append(base64.b64encode(proto.SerializeToString()).decode())

    visit(service_pb2.DESCRIPTOR)
    print(json.dumps({"file": service_pb2.DESCRIPTOR.name, "files": ordered}))
    """
)


class Triton:
    """tritonclient's OIP messages, from a private descriptor pool."""

    def __init__(self) -> None:
        out = subprocess.run(
            [sys.executable, "-c", _EXPORT_TRITON],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        exported = json.loads(out.stdout)
        self.pool = descriptor_pool.DescriptorPool()
        for encoded in exported["files"]:
            proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(encoded))
            self.pool.Add(proto)
        self.file: FileDescriptor = self.pool.FindFileByName(exported["file"])

    def descriptor(self, full_name: str) -> Descriptor:
        return self.pool.FindMessageTypeByName(full_name)

    def cls(self, full_name: str) -> Any:
        return message_factory.GetMessageClass(self.descriptor(full_name))


@pytest.fixture(scope="module")
def triton() -> Triton:
    return Triton()


def _walk(desc: Descriptor) -> Iterator[Descriptor]:
    yield desc
    for nested in desc.nested_types:
        yield from _walk(nested)


def _field_signature(field: FieldDescriptor) -> tuple[Any, ...]:
    return (
        field.full_name,
        field.number,
        field.type,
        field.is_repeated,
        field.message_type.full_name if field.message_type else None,
        field.enum_type.full_name if field.enum_type else None,
        field.containing_oneof.name if field.containing_oneof else None,
    )


def _ours_as_theirs(ours: Message, theirs_cls: Any) -> Any:
    """Parse our serialized message with tritonclient's class; nothing may be unknown."""
    theirs = theirs_cls.FromString(ours.SerializeToString())
    before = theirs.SerializeToString(deterministic=True)
    theirs.DiscardUnknownFields()
    assert theirs.SerializeToString(deterministic=True) == before, "fields unknown to triton"
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(
        deterministic=True
    )
    return theirs


def _theirs_as_ours(theirs: Any, ours_cls: type[Message]) -> Any:
    """Parse tritonclient's serialized message with ours; nothing may be unknown."""
    ours = ours_cls.FromString(theirs.SerializeToString())
    before = ours.SerializeToString(deterministic=True)
    ours.DiscardUnknownFields()
    assert ours.SerializeToString(deterministic=True) == before, "fields unknown to us"
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    return ours


# --- (a) Open Inference Protocol wire compatibility ------------------------------------


def test_oip_package_and_service_match_published_spec(triton: Triton) -> None:
    assert oip.DESCRIPTOR.package == "inference"
    ours = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.file.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    expected = {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    assert set(ours.methods_by_name) == expected
    for name in expected:
        mine, spec = ours.methods_by_name[name], theirs.methods_by_name[name]
        assert mine.input_type.full_name == spec.input_type.full_name, name
        assert mine.output_type.full_name == spec.output_type.full_name, name
        assert not mine.client_streaming and not mine.server_streaming, name
        assert spec.client_streaming is False and spec.server_streaming is False, name


def test_oip_messages_are_a_field_exact_subset_of_the_spec(triton: Triton) -> None:
    checked = 0
    for top in oip.DESCRIPTOR.message_types_by_name.values():
        for desc in _walk(top):
            spec = triton.descriptor(desc.full_name)
            assert desc.GetOptions().map_entry == spec.GetOptions().map_entry, desc.full_name
            spec_fields = {f.name: f for f in spec.fields}
            for field in desc.fields:
                assert field.name in spec_fields, f"{field.full_name} is not in the spec"
                assert _field_signature(field) == _field_signature(spec_fields[field.name])
                checked += 1
    assert checked > 50
    # The fields the design relies on, by number.
    infer_req = oip.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert infer_req["raw_input_contents"].number == 7
    assert oip.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6


def test_oip_messages_cover_the_spec_except_unused_ones(triton: Triton) -> None:
    """Every field of the messages the six RPCs use is defined, so nothing is dropped."""
    for top in oip.DESCRIPTOR.message_types_by_name.values():
        for desc in _walk(top):
            spec = triton.descriptor(desc.full_name)
            missing = {f.name for f in spec.fields} - {f.name for f in desc.fields}
            assert not missing, f"{desc.full_name} lacks {sorted(missing)}"


def test_triton_model_infer_request_parses_with_ours(triton: Triton) -> None:
    req_cls = triton.cls("inference.ModelInferRequest")
    req = req_cls(model_name="loans", model_version="3", id="req-1")
    req.parameters["priority"].int64_param = 7
    req.parameters["sequence_start"].bool_param = True
    req.parameters["tag"].string_param = "canary"
    req.parameters["temperature"].double_param = 0.25
    req.parameters["big"].uint64_param = 2**63 + 5

    salary = req.inputs.add(name="salary", datatype="FP64", shape=[2, 1])
    salary.contents.fp64_contents.extend([72000.0, 51000.5])
    salary.parameters["unit"].string_param = "EUR"
    age = req.inputs.add(name="age", datatype="INT64", shape=[2, 1])
    age.contents.int64_contents.extend([41, -3])
    car = req.inputs.add(name="car", datatype="BYTES", shape=[2])
    car.contents.bytes_contents.extend([b"sedan", b"\x00\xff"])
    flags = req.inputs.add(name="flags", datatype="BOOL", shape=[2])
    flags.contents.bool_contents.extend([True, False])
    small = req.inputs.add(name="small", datatype="INT32", shape=[1])
    small.contents.int_contents.append(-12)
    usmall = req.inputs.add(name="usmall", datatype="UINT32", shape=[1])
    usmall.contents.uint_contents.append(4_000_000_000)
    ubig = req.inputs.add(name="ubig", datatype="UINT64", shape=[1])
    ubig.contents.uint64_contents.append(2**64 - 1)
    score = req.inputs.add(name="score", datatype="FP32", shape=[1])
    score.contents.fp32_contents.append(0.5)
    out = req.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = 2

    ours = _theirs_as_ours(req, oip.ModelInferRequest)

    assert (ours.model_name, ours.model_version, ours.id) == ("loans", "3", "req-1")
    params = ours.parameters
    assert params["priority"].WhichOneof("parameter_choice") == "int64_param"
    assert params["priority"].int64_param == 7
    assert params["sequence_start"].bool_param is True
    assert params["tag"].string_param == "canary"
    assert params["temperature"].double_param == 0.25
    assert params["big"].uint64_param == 2**63 + 5
    by_name = {t.name: t for t in ours.inputs}
    assert [t.name for t in ours.inputs] == [
        "salary",
        "age",
        "car",
        "flags",
        "small",
        "usmall",
        "ubig",
        "score",
    ]
    assert by_name["salary"].datatype == "FP64"
    assert list(by_name["salary"].shape) == [2, 1]
    assert list(by_name["salary"].contents.fp64_contents) == [72000.0, 51000.5]
    assert by_name["salary"].parameters["unit"].string_param == "EUR"
    assert list(by_name["age"].contents.int64_contents) == [41, -3]
    assert list(by_name["car"].contents.bytes_contents) == [b"sedan", b"\x00\xff"]
    assert list(by_name["flags"].contents.bool_contents) == [True, False]
    assert list(by_name["small"].contents.int_contents) == [-12]
    assert list(by_name["usmall"].contents.uint_contents) == [4_000_000_000]
    assert list(by_name["ubig"].contents.uint64_contents) == [2**64 - 1]
    assert list(by_name["score"].contents.fp32_contents) == [0.5]
    assert [o.name for o in ours.outputs] == ["probabilities"]
    assert ours.outputs[0].parameters["classification"].int64_param == 2
    assert list(ours.raw_input_contents) == []


def test_triton_raw_model_infer_request_parses_with_ours(triton: Triton) -> None:
    import struct

    req = triton.cls("inference.ModelInferRequest")(model_name="loans")
    req.inputs.add(name="salary", datatype="FP32", shape=[1, 2])
    req.inputs.add(name="car", datatype="BYTES", shape=[1])
    fp32 = struct.pack("<2f", 1.5, -2.0)
    car = struct.pack("<I", 5) + b"sedan"
    req.raw_input_contents.extend([fp32, car])
    req.parameters["binary_data_output"].bool_param = True

    ours = _theirs_as_ours(req, oip.ModelInferRequest)

    assert list(ours.raw_input_contents) == [fp32, car]
    assert [(t.name, t.datatype, list(t.shape)) for t in ours.inputs] == [
        ("salary", "FP32", [1, 2]),
        ("car", "BYTES", [1]),
    ]
    assert all(not t.HasField("contents") for t in ours.inputs)
    assert ours.parameters["binary_data_output"].bool_param is True


def test_our_model_infer_response_parses_with_triton(triton: Triton) -> None:
    resp = oip.ModelInferResponse(model_name="loans", model_version="4", id="req-9")
    resp.parameters["variant"].string_param = "challenger"
    resp.parameters["latency_us"].int64_param = 812
    resp.outputs.add(name="label", datatype="INT64", shape=[2])
    prob = resp.outputs.add(name="probabilities", datatype="FP64", shape=[2, 2])
    prob.parameters["classes"].string_param = "0,1"
    resp.raw_output_contents.extend([b"\x01" + b"\x00" * 15, b"\x9a" * 32])

    theirs = _ours_as_theirs(resp, triton.cls("inference.ModelInferResponse"))

    assert (theirs.model_name, theirs.model_version, theirs.id) == ("loans", "4", "req-9")
    assert theirs.parameters["variant"].string_param == "challenger"
    assert theirs.parameters["latency_us"].int64_param == 812
    assert [(o.name, o.datatype, list(o.shape)) for o in theirs.outputs] == [
        ("label", "INT64", [2]),
        ("probabilities", "FP64", [2, 2]),
    ]
    assert theirs.outputs[1].parameters["classes"].string_param == "0,1"
    assert list(theirs.raw_output_contents) == [b"\x01" + b"\x00" * 15, b"\x9a" * 32]

    typed = oip.ModelInferResponse(model_name="loans")
    out = typed.outputs.add(name="score", datatype="FP32", shape=[1])
    out.contents.fp32_contents.append(0.75)
    back = _ours_as_theirs(typed, triton.cls("inference.ModelInferResponse"))
    assert list(back.outputs[0].contents.fp32_contents) == [0.75]


def test_our_model_metadata_response_parses_with_triton(triton: Triton) -> None:
    meta = oip.ModelMetadataResponse(name="loans", versions=["3", "4"], platform="river")
    meta.inputs.add(name="salary", datatype="FP64", shape=[-1, 1])
    meta.inputs.add(name="car", datatype="BYTES", shape=[-1, 1])
    meta.outputs.add(name="label", datatype="INT64", shape=[-1])

    theirs = _ours_as_theirs(meta, triton.cls("inference.ModelMetadataResponse"))

    assert theirs.name == "loans"
    assert list(theirs.versions) == ["3", "4"]
    assert theirs.platform == "river"
    assert [(t.name, t.datatype, list(t.shape)) for t in theirs.inputs] == [
        ("salary", "FP64", [-1, 1]),
        ("car", "BYTES", [-1, 1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in theirs.outputs] == [
        ("label", "INT64", [-1])
    ]


@pytest.mark.parametrize(
    ("ours", "name"),
    [
        (oip.ServerLiveResponse(live=True), "inference.ServerLiveResponse"),
        (oip.ServerReadyResponse(ready=True), "inference.ServerReadyResponse"),
        (oip.ModelReadyRequest(name="loans", version="2"), "inference.ModelReadyRequest"),
        (oip.ModelReadyResponse(ready=True), "inference.ModelReadyResponse"),
        (oip.ModelMetadataRequest(name="loans", version="2"), "inference.ModelMetadataRequest"),
        (
            oip.ServerMetadataResponse(name="driftline", version="0.1.0", extensions=["x"]),
            "inference.ServerMetadataResponse",
        ),
    ],
)
def test_small_oip_messages_round_trip(triton: Triton, ours: Message, name: str) -> None:
    theirs = _ours_as_theirs(ours, triton.cls(name))
    assert _theirs_as_ours(theirs, type(ours)) == ours


# --- (b) generated code is not stale --------------------------------------------------


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(GEN_SCRIPT), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _load_gen_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_gen_proto_under_test", GEN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_reports_stale_and_orphaned_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _load_gen_script()
    out = tmp_path / "src"
    shutil.copytree(gen.OUT_DIR, out)
    (out / "driftline" / "v1" / "predictor_pb2.py").write_text("# edited by hand\n")
    (out / "inference" / "old_pb2.py").write_text("# proto deleted\n")
    (out / "inference" / "helpers.py").write_text("# not generated: ignored\n")
    (out / "inference" / "py.typed").unlink()
    monkeypatch.setattr(gen, "OUT_DIR", out)

    assert gen.check() == 1
    err = capsys.readouterr().err
    assert "driftline/v1/predictor_pb2.py" in err
    assert "inference/old_pb2.py" in err
    assert "inference/py.typed" in err
    assert "helpers.py" not in err
    assert "gen_proto.py" in err

    assert gen.write() == 0
    assert not (out / "inference" / "old_pb2.py").exists()
    assert (out / "inference" / "helpers.py").exists()
    assert not (out / "driftline" / "__init__.py").exists()
    capsys.readouterr()
    assert gen.check() == 0


# --- (c) Driftline contracts round trips -----------------------------------------------


def test_registry_upload_metadata_round_trip() -> None:
    spec = struct_pb2.Struct()
    spec.update({"task": "binary", "pipeline": [{"class": "LogisticRegression", "l2": 0.01}]})
    lineage = registry_pb2.Lineage(
        featureset="loans",
        featureset_version=2,
        offsets=[
            common_pb2.OffsetRange(topic="driftline.features", partition=0, first=10, last=99),
            common_pb2.OffsetRange(topic="driftline.features", partition=1, first=0, last=42),
        ],
        event_time=common_pb2.TimeRange(
            start=Timestamp(seconds=1_795_000_000), end=Timestamp(seconds=1_795_003_600)
        ),
        examples=133,
        parent_version=3,
        trigger_id="retrain-7f3a",
        drift_ids=["drift-1", "drift-2"],
    )
    first = registry_pb2.RegisterVersionRequest(
        metadata=registry_pb2.RegisterVersionMetadata(
            model_name="loans-default",
            metrics={"accuracy": 0.91, "logloss": 0.23},
            lineage=lineage,
            params={
                "model.l2": common_pb2.Value(double_value=0.01),
                "model.epochs": common_pb2.Value(int64_value=3),
                "scaler": common_pb2.Value(string_value="standard"),
                "shuffle": common_pb2.Value(bool_value=False),
            },
            spec=spec,
            artifact_format="river-pickle",
            sha256="ab" * 32,
            size_bytes=2048,
            actor="training",
            idempotency_key="retrain-7f3a",
        )
    )
    chunk = registry_pb2.RegisterVersionRequest(chunk=b"\x80\x05artifact")

    got = registry_pb2.RegisterVersionRequest.FromString(first.SerializeToString())
    assert got.WhichOneof("payload") == "metadata"
    meta = got.metadata
    assert meta.model_name == "loans-default"
    assert dict(meta.metrics) == {"accuracy": 0.91, "logloss": 0.23}
    assert meta.lineage.featureset == "loans"
    assert meta.lineage.featureset_version == 2
    assert [(o.topic, o.partition, o.first, o.last) for o in meta.lineage.offsets] == [
        ("driftline.features", 0, 10, 99),
        ("driftline.features", 1, 0, 42),
    ]
    assert meta.lineage.event_time.start.seconds == 1_795_000_000
    assert meta.lineage.event_time.end.seconds == 1_795_003_600
    assert meta.lineage.examples == 133
    assert meta.lineage.HasField("parent_version")
    assert meta.lineage.parent_version == 3
    assert meta.lineage.trigger_id == "retrain-7f3a"
    assert list(meta.lineage.drift_ids) == ["drift-1", "drift-2"]
    assert meta.params["model.l2"].WhichOneof("kind") == "double_value"
    assert meta.params["model.epochs"].int64_value == 3
    assert meta.params["scaler"].string_value == "standard"
    assert meta.params["shuffle"].WhichOneof("kind") == "bool_value"
    assert meta.params["shuffle"].bool_value is False
    assert json_format.MessageToDict(meta.spec) == {
        "task": "binary",
        "pipeline": [{"class": "LogisticRegression", "l2": 0.01}],
    }
    assert (meta.artifact_format, meta.sha256, meta.size_bytes) == ("river-pickle", "ab" * 32, 2048)
    assert (meta.actor, meta.idempotency_key) == ("training", "retrain-7f3a")
    assert got == first

    got_chunk = registry_pb2.RegisterVersionRequest.FromString(chunk.SerializeToString())
    assert got_chunk.WhichOneof("payload") == "chunk"
    assert got_chunk.chunk == b"\x80\x05artifact"

    no_parent = registry_pb2.Lineage.FromString(registry_pb2.Lineage().SerializeToString())
    assert not no_parent.HasField("parent_version")


def test_registry_rpc_shapes() -> None:
    svc = registry_pb2.DESCRIPTOR.services_by_name["Registry"]
    streaming = {
        m.name: (m.client_streaming, m.server_streaming) for m in svc.methods_by_name.values()
    }
    assert streaming["RegisterVersion"] == (True, False)
    assert streaming["DownloadArtifact"] == (False, True)
    for name in ("GetVersion", "ListVersions", "SetAlias", "Rollback", "GetAliasHistory"):
        assert streaming[name] == (False, False)
    by_alias = registry_pb2.GetVersionRequest(name="loans", alias="champion")
    assert by_alias.WhichOneof("selector") == "alias"
    by_number = registry_pb2.GetVersionRequest(name="loans", version=4)
    assert by_number.WhichOneof("selector") == "version"


def test_predict_request_round_trip() -> None:
    req = predictor_pb2.PredictRequest(
        entity_id="customer-42",
        event_id="e-000123",
        features={
            "salary": common_pb2.Value(double_value=72000.0),
            "age": common_pb2.Value(int64_value=41),
            "car": common_pb2.Value(string_value="sedan"),
            "vip": common_pb2.Value(bool_value=True),
        },
        model_name="loans-default",
        alias="challenger",
    )
    got = predictor_pb2.PredictRequest.FromString(req.SerializeToString())
    assert got.entity_id == "customer-42"
    assert got.HasField("event_id") and got.event_id == "e-000123"
    assert got.features["salary"].double_value == 72000.0
    assert got.features["age"].int64_value == 41
    assert got.features["car"].string_value == "sedan"
    assert got.features["vip"].bool_value is True
    assert got.model_name == "loans-default"
    assert got.WhichOneof("target") == "alias"
    assert got.alias == "challenger"
    assert got == req

    pinned = predictor_pb2.PredictRequest.FromString(
        predictor_pb2.PredictRequest(entity_id="c-1", model_name="m", version=7).SerializeToString()
    )
    assert pinned.WhichOneof("target") == "version"
    assert pinned.version == 7
    assert not pinned.HasField("event_id")

    batch = predictor_pb2.PredictBatchRequest(requests=[req, pinned])
    assert predictor_pb2.PredictBatchRequest.FromString(batch.SerializeToString()) == batch


def test_predict_response_round_trip() -> None:
    resp = predictor_pb2.PredictResponse(
        request_id="r-1",
        model_name="loans-default",
        model_version=5,
        prediction=common_pb2.Value(int64_value=1),
        probabilities={"0": 0.2, "1": 0.8},
        feature_ages_ms={"salary_mean_1h": 1500},
        features={"salary_mean_1h": common_pb2.Value(double_value=65000.0)},
        feature_status={"salary_mean_1h": common_pb2.FEATURE_STATUS_PRESENT},
        variant="champion",
    )
    got = predictor_pb2.PredictResponse.FromString(resp.SerializeToString())
    assert got == resp
    assert got.model_version == 5
    assert got.prediction.int64_value == 1
    assert dict(got.probabilities) == {"0": 0.2, "1": 0.8}
    assert dict(got.feature_ages_ms) == {"salary_mean_1h": 1500}
    assert got.feature_status["salary_mean_1h"] == common_pb2.FEATURE_STATUS_PRESENT
