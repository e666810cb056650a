"""What the registry checks before it registers a version — without running any of its code.

A version names its framework (the runtime that will serve it), its artifact
format and, in its spec, the feature set and features it reads.  Before anything
is stored or written to the log, :func:`admit` refuses with
:class:`InvalidArgumentError` naming what is wrong:

* a framework no runtime serves, or a format its runtime does not read;
* a spec that cannot describe the model's inputs: no feature set, an unknown task,
  a feature the feature set lacks, labels of another task;
* a feature whose declared type the model cannot take (a string feature for an
  ONNX matrix, or for a scikit-learn estimator fitted on an array);
* an ONNX graph whose inputs do not match the features (one ``[N, k]`` matrix with
  ``k`` = the number of features, or one input per feature of a compatible type),
  or bytes that are not an ONNX model (parsed with ``onnx.load_from_string``, which
  runs nothing);
* a pickle that is cut short or is not a pickle (its opcodes are read with
  :mod:`pickletools`, never executed);
* a ``python_class`` that is not an import path (it is not imported here).

Nothing is unpickled or imported from the artifact: serving verifies the signature
and loads it; the registry only reads what can be read safely.  River versions
(what training registers) are checked only where that cannot refuse a version
that was accepted before: their format, and their features when the feature set
is one the registry knows.
"""

from __future__ import annotations

import logging
import pickletools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.model_runtimes import Datatype, frameworks, runtime_for
from driftline.registry_api.models import SKLEARN_INPUT_TAG
from driftline.specs import FeatureSetCatalog, FeatureSetSpec, SpecError, load_featuresets

__all__ = [
    "Admitted",
    "FeatureSets",
    "admit",
    "feature_datatypes",
]

log = logging.getLogger(__name__)

RIVER = "river"
TASKS = ("binary", "multiclass", "regression")
_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Za-z_]\w*$")
_MAX_LIBRARIES = 64
_MAX_LIBRARY_CHARS = 200

_FIELD_DATATYPES: dict[str, Datatype] = {
    "float": "FP64",
    "int": "INT64",
    "string": "BYTES",
    "bool": "BOOL",
}
_TYPE_WORDS: dict[Datatype, str] = {
    "FP64": "a float",
    "INT64": "an int",
    "BYTES": "a string",
    "BOOL": "a bool",
}


def feature_datatypes(featureset: FeatureSetSpec) -> dict[str, Datatype]:
    """Each feature's OIP datatype as the feature store declares it: raw fields by their
    type; ``count`` aggregates INT64, ``last`` its field's type, the others FP64."""
    out: dict[str, Datatype] = {n: _FIELD_DATATYPES[f.type] for n, f in featureset.fields.items()}
    for agg in featureset.aggregations:
        if agg.fn == "count":
            out[agg.name] = "INT64"
        elif agg.fn == "last" and agg.field is not None:
            out[agg.name] = _FIELD_DATATYPES[featureset.fields[agg.field].type]
        else:
            out[agg.name] = "FP64"
    return out


class FeatureSets:
    """The feature sets of ``registry.featuresets_dir``, re-read when a file changes.

    Read at each registration (cheap: a few small YAML files, skipped while no file
    changed), so a feature set added to the directory is known without a restart.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, float, int], ...] | None = None
        self._catalog: FeatureSetCatalog | None = None

    def catalog(self) -> FeatureSetCatalog | None:
        """The catalog, or None when no directory is configured or it does not exist.

        Raises :class:`FailedPreconditionError` naming the file and line of a feature set
        that does not load (the registry's configuration is at fault, not the caller).
        """
        if self.directory is None or not self.directory.is_dir():
            return None
        files = sorted([*self.directory.glob("*.yaml"), *self.directory.glob("*.yml")])
        stamp = tuple((str(f), f.stat().st_mtime, f.stat().st_size) for f in files)
        if stamp != self._stamp:
            try:
                self._catalog = load_featuresets(self.directory)
            except SpecError as exc:
                raise FailedPreconditionError(
                    f"the registry's feature sets ({self.directory}) do not load, so no "
                    f"version can be checked against them: {exc}"
                ) from exc
            self._stamp = stamp
        return self._catalog


@dataclass(frozen=True)
class Admitted:
    """What is recorded for an admitted version."""

    framework: str
    artifact_format: str
    """As sent; for a non-River version without one, its runtime's first format."""
    spec: dict[str, Any]
    """The spec to record: for a non-River version ``framework`` is set and ``features``
    is filled in from the feature set when the spec named none."""
    library_versions: dict[str, str]


def admit(
    name: str,
    *,
    framework: str,
    artifact_format: str,
    spec: Mapping[str, Any],
    data: bytes,
    tags: Mapping[str, str],
    library_versions: Mapping[str, str],
    featuresets: FeatureSets,
) -> Admitted:
    """Check a version before it is registered; what to record, or why not.

    Raises :class:`InvalidArgumentError` naming the framework, format, feature or
    input at fault, :class:`FailedPreconditionError` when the registry cannot check
    (its feature-set directory is missing or broken).
    """
    libraries = _library_versions(library_versions)
    spec_framework = spec.get("framework")
    if spec_framework is not None and not isinstance(spec_framework, str):
        raise InvalidArgumentError(f"spec framework must be a string, not {spec_framework!r}")
    if framework and spec_framework and framework != spec_framework:
        raise InvalidArgumentError(
            f"the version's framework is {framework!r} but its spec says {spec_framework!r}; "
            "send one framework"
        )
    chosen = framework or spec_framework or RIVER
    known = frameworks()
    if chosen not in known:
        raise InvalidArgumentError(
            f"framework {chosen!r} is not one this registry knows; known: {', '.join(known)}"
        )
    runtime = runtime_for(chosen)
    fmt = artifact_format
    if fmt and fmt not in runtime.formats:
        raise InvalidArgumentError(
            f"artifact format {fmt!r} is not one the {chosen} runtime reads; it reads "
            f"{', '.join(runtime.formats)}"
        )
    if chosen == RIVER:
        _check_river(spec, featuresets)
        return Admitted(chosen, fmt, dict(spec), libraries)
    fmt = fmt or runtime.formats[0]
    user_spec = dict(spec)
    if not user_spec:
        raise InvalidArgumentError(
            f"a {chosen} version needs its model spec (name, featureset, task, features): "
            "the registry checks the model's inputs against its feature set and serving "
            "reads them from it"
        )
    spec_name = user_spec.get("name")
    if spec_name is not None and spec_name != name:
        raise InvalidArgumentError(
            f"the spec is for model {spec_name!r}, not {name!r}; register it under its own name"
        )
    task = user_spec.get("task")
    if task not in TASKS:
        raise InvalidArgumentError(f"spec task {task!r} is not one of {', '.join(TASKS)}")
    featureset = _featureset_of(user_spec, featuresets)
    if featureset.label is not None and featureset.label.type != task:
        raise InvalidArgumentError(
            f"model {name} is a {task} model, but feature set {featureset.name} declares "
            f"{featureset.label.type} labels ({featureset.label.describe()})"
        )
    features = _features_of(user_spec, featureset)
    types = feature_datatypes(featureset)
    wanted = {f: types[f] for f in features}
    _check_classes(user_spec, task)
    if chosen == "python":
        _check_python_class(user_spec.get("python_class"))
    elif chosen == "sklearn":
        _check_sklearn(fmt, data, wanted, tags, featureset)
    elif chosen == "onnx":
        _check_onnx(data, features, wanted, featureset)
    user_spec["framework"] = chosen
    user_spec["features"] = features
    return Admitted(chosen, fmt, user_spec, libraries)


# -- the parts ------------------------------------------------------------------------


def _library_versions(raw: Mapping[str, str]) -> dict[str, str]:
    if len(raw) > _MAX_LIBRARIES:
        raise InvalidArgumentError(
            f"library_versions lists {len(raw)} libraries; at most {_MAX_LIBRARIES}"
        )
    for key, value in raw.items():
        if not key or len(key) > _MAX_LIBRARY_CHARS or len(value) > _MAX_LIBRARY_CHARS:
            raise InvalidArgumentError(
                f"library_versions entry {key[:50]!r}: a name and version of 1-"
                f"{_MAX_LIBRARY_CHARS} characters"
            )
    return dict(raw)


def _check_river(spec: Mapping[str, Any], featuresets: FeatureSets) -> None:
    # Training checks a River spec against its feature set itself; here only what is
    # plainly wrong is refused, and only for a feature set the registry knows, so that a
    # registration accepted before (a test's own feature set, no spec) still is.
    fs_name = spec.get("featureset")
    raw = spec.get("features")
    if not isinstance(fs_name, str) or not isinstance(raw, list):
        return
    if not all(isinstance(f, str) for f in raw):
        return
    catalog = featuresets.catalog()
    featureset = catalog.get(fs_name) if catalog is not None else None
    if featureset is None:
        return
    _missing(spec, raw, featureset)


def _featureset_of(spec: Mapping[str, Any], featuresets: FeatureSets) -> FeatureSetSpec:
    fs_name = spec.get("featureset")
    if not isinstance(fs_name, str) or not fs_name:
        raise InvalidArgumentError(
            "the spec names no featureset: say which feature set the model reads"
        )
    catalog = featuresets.catalog()
    if catalog is None:
        raise FailedPreconditionError(
            f"the registry cannot check the model against feature set {fs_name!r}: its "
            f"feature-set directory {featuresets.directory} does not exist "
            "(DRIFTLINE_REGISTRY__FEATURESETS_DIR)"
        )
    featureset = catalog.get(fs_name)
    if featureset is None:
        known = ", ".join(sorted(f.name for f in catalog)) or "none"
        raise InvalidArgumentError(
            f"feature set {fs_name!r} is not one the registry knows (known: {known})"
        )
    return featureset


def _features_of(spec: Mapping[str, Any], featureset: FeatureSetSpec) -> list[str]:
    raw = spec.get("features")
    if raw is None or raw == []:
        return featureset.feature_names
    if not isinstance(raw, list) or not all(isinstance(f, str) and f for f in raw):
        raise InvalidArgumentError("spec features must be a list of feature names")
    if len(set(raw)) != len(raw):
        twice = sorted({f for f in raw if raw.count(f) > 1})
        raise InvalidArgumentError(f"spec features list {', '.join(map(repr, twice))} twice")
    _missing(spec, raw, featureset)
    return list(raw)


def _missing(spec: Mapping[str, Any], features: Iterable[str], featureset: FeatureSetSpec) -> None:
    missing = [f for f in features if f not in featureset.feature_names]
    if missing:
        model = spec.get("name") or "the model"
        raise InvalidArgumentError(
            f"{model} needs feature {', '.join(map(repr, missing))}, which feature set "
            f"{featureset.name} v{featureset.version} lacks; it has: "
            f"{', '.join(featureset.feature_names)}"
        )


def _check_classes(spec: Mapping[str, Any], task: str) -> None:
    classes = spec.get("classes")
    if classes is None:
        return
    if task == "regression":
        raise InvalidArgumentError("a regression model has no classes; drop spec classes")
    if not isinstance(classes, list) or not classes:
        raise InvalidArgumentError("spec classes must be a non-empty list")
    if len({str(c) for c in classes}) != len(classes):
        raise InvalidArgumentError(f"spec classes {classes} name a class twice")
    if task == "binary" and len(classes) != 2:
        raise InvalidArgumentError(
            f"a binary model has 2 classes; spec classes lists {len(classes)}: {classes}"
        )


def _check_python_class(path: Any) -> None:
    if not isinstance(path, str) or not _CLASS_PATH.match(path):
        raise InvalidArgumentError(
            f"python_class {path!r} is not an import path like 'package.module.ClassName'"
        )


def _type_of(feature: str, datatype: Datatype, featureset: FeatureSetSpec) -> str:
    return f"feature {feature!r} is {_TYPE_WORDS[datatype]} in feature set {featureset.name}"


# -- scikit-learn -----------------------------------------------------------------------

# What a joblib file starts with: a pickle (protocol 2+), or one of the compressors
# joblib writes (zlib, gzip, bz2, xz, lzma, lz4).
_JOBLIB_MAGIC = (
    b"\x80",
    b"\x78",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
)


def _check_sklearn(
    fmt: str,
    data: bytes,
    wanted: Mapping[str, Datatype],
    tags: Mapping[str, str],
    featureset: FeatureSetSpec,
) -> None:
    if fmt == "sklearn-pickle":
        _check_pickle(data)
    elif fmt == "sklearn-joblib" and not data.startswith(_JOBLIB_MAGIC):
        raise InvalidArgumentError(
            "the artifact is not a joblib file (it starts with neither a pickle nor a "
            "compressor's header); save the estimator with joblib.dump"
        )
    if tags.get(SKLEARN_INPUT_TAG) == "dataframe":
        return  # fitted on a DataFrame: every column reaches it as it is, strings too
    strings = [f for f, t in wanted.items() if t == "BYTES"]
    if strings:
        raise InvalidArgumentError(
            f"{_type_of(strings[0], 'BYTES', featureset)}, but a scikit-learn estimator "
            "fitted on an array takes numbers only; fit it on a pandas DataFrame (and "
            "register it with `driftline models register` or register_model, which record "
            f"that as tag {SKLEARN_INPUT_TAG}=dataframe) or leave the feature out"
        )


def _check_pickle(data: bytes) -> None:
    # pickletools reads the opcodes without executing any: a cut-short or foreign file
    # fails here instead of in serving.
    try:
        for _op, _arg, _pos in pickletools.genops(data):
            pass
    except Exception as exc:
        raise InvalidArgumentError(
            f"the artifact is not a whole pickle ({type(exc).__name__}: {str(exc)[:200]}); "
            "send the bytes pickle.dump (or joblib.dump with format sklearn-joblib) wrote"
        ) from None


# -- ONNX -----------------------------------------------------------------------------

# ONNX TensorProto element types the ONNX runtime feeds, and which features fit them.
_ONNX_TYPES: dict[int, str] = {
    1: "float",
    11: "double",
    7: "int64",
    6: "int32",
    9: "bool",
    8: "string",
}
_FITS: dict[Datatype, frozenset[str]] = {
    "FP64": frozenset({"float", "double"}),
    "INT64": frozenset({"float", "double", "int64", "int32"}),
    "BOOL": frozenset({"bool", "float", "double", "int64", "int32"}),
    "BYTES": frozenset({"string"}),
}


@dataclass(frozen=True)
class _OnnxInput:
    name: str
    elem: str
    dims: tuple[int | str | None, ...]


def _onnx_inputs(data: bytes) -> list[_OnnxInput]:
    import onnx
    from onnx import checker

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise InvalidArgumentError(
            f"the artifact is not an ONNX model: it does not parse as one ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from None
    graph = model.graph
    if model.ir_version <= 0 or not graph.output:
        raise InvalidArgumentError(
            "the artifact is not an ONNX model: it has no IR version or no graph outputs"
        )
    try:
        checker.check_model(model)
    except Exception as exc:
        raise InvalidArgumentError(
            f"the artifact is not a valid ONNX model: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    initialized = {i.name for i in graph.initializer}
    out: list[_OnnxInput] = []
    for node in graph.input:
        if node.name in initialized:
            continue  # older exporters list weights among the inputs
        if node.type.WhichOneof("value") != "tensor_type":
            raise InvalidArgumentError(
                f"the ONNX model's input {node.name!r} is not a tensor; Driftline feeds tensors"
            )
        tensor = node.type.tensor_type
        elem = _ONNX_TYPES.get(tensor.elem_type)
        if elem is None:
            raise InvalidArgumentError(
                f"the ONNX model's input {node.name!r} has element type "
                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}; supported: "
                f"{', '.join(sorted(set(_ONNX_TYPES.values())))}"
            )
        dims: list[int | str | None] = []
        for d in tensor.shape.dim:
            kind = d.WhichOneof("value")
            dims.append(d.dim_value if kind == "dim_value" else d.dim_param if kind else None)
        out.append(_OnnxInput(node.name, elem, tuple(dims)))
    if not out:
        raise InvalidArgumentError("the ONNX model has no inputs")
    return out


def _check_onnx(
    data: bytes, features: list[str], wanted: Mapping[str, Datatype], featureset: FeatureSetSpec
) -> None:
    inputs = _onnx_inputs(data)
    names = set(features)
    if len(inputs) == 1 and inputs[0].name not in names:
        matrix = inputs[0]
        if len(matrix.dims) != 2:
            raise InvalidArgumentError(
                f"the ONNX model's one input {matrix.name!r} has {len(matrix.dims)} dimensions; "
                "a matrix input is [N, k] with one column per feature (or name one input after "
                "each feature)"
            )
        width = matrix.dims[1]
        if isinstance(width, int) and width > 0 and width != len(features):
            raise InvalidArgumentError(
                f"the ONNX model's input {matrix.name!r} takes {width} columns but the model "
                f"reads {len(features)} features ({', '.join(features)}); list the features "
                "of the training matrix, in its column order, in the spec"
            )
        if matrix.elem == "string":
            raise InvalidArgumentError(
                f"the ONNX model's input {matrix.name!r} is a string matrix; Driftline feeds a "
                "matrix of numbers (name one input after each string feature instead)"
            )
        for feature in features:
            if matrix.elem not in _FITS[wanted[feature]]:
                raise InvalidArgumentError(
                    f"{_type_of(feature, wanted[feature], featureset)}, but the ONNX model's "
                    f"input {matrix.name!r} is a matrix of {matrix.elem}"
                )
        return
    unknown = [i.name for i in inputs if i.name not in names]
    if unknown:
        raise InvalidArgumentError(
            f"the ONNX model's input {', '.join(map(repr, unknown))} is not a feature of the "
            f"model ({', '.join(features)}); name each input after a feature, or give the "
            "model one [N, k] matrix input"
        )
    for node in inputs:
        column = len(node.dims) == 2 and (
            node.dims[1] in (1, None) or isinstance(node.dims[1], str)
        )
        if len(node.dims) != 1 and not column:
            raise InvalidArgumentError(
                f"the ONNX model's input {node.name!r} is shaped {list(node.dims)}; one "
                "feature's input is [N] or [N, 1]"
            )
        datatype = wanted[node.name]
        if node.elem not in _FITS[datatype]:
            raise InvalidArgumentError(
                f"{_type_of(node.name, datatype, featureset)}, but the ONNX model's input "
                f"{node.name!r} is {node.elem}"
            )
