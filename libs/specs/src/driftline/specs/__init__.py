"""Declarations ML engineers write in YAML: feature sets (and, later, model specs)."""

from driftline.specs.durations import parse_duration
from driftline.specs.featureset import (
    AggregationSpec,
    FeatureSetCatalog,
    FeatureSetSpec,
    FieldSpec,
    SpecError,
    load_featureset,
    load_featuresets,
)
from driftline.specs.label import LabelSpec, RecordRejected, default_label_spec
from driftline.specs.model import (
    ALLOWED_COMPONENTS,
    ALLOWED_METRICS,
    ModelSpec,
    PromotionSpec,
    RetrainingPolicy,
    load_model_spec,
    load_model_specs,
    metric_key,
)

__all__ = [
    "ALLOWED_COMPONENTS",
    "ALLOWED_METRICS",
    "AggregationSpec",
    "FeatureSetCatalog",
    "FeatureSetSpec",
    "FieldSpec",
    "LabelSpec",
    "ModelSpec",
    "PromotionSpec",
    "RecordRejected",
    "RetrainingPolicy",
    "SpecError",
    "default_label_spec",
    "load_featureset",
    "load_featuresets",
    "load_model_spec",
    "load_model_specs",
    "metric_key",
    "parse_duration",
]
