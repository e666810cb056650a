"""Declarations ML engineers write in YAML: feature sets (and, later, model specs)."""

from driftline.specs.durations import parse_duration
from driftline.specs.featureset import (
    AggregationSpec,
    FeatureSetCatalog,
    FeatureSetSpec,
    FieldSpec,
    RecordRejected,
    SpecError,
    load_featureset,
    load_featuresets,
)

__all__ = [
    "AggregationSpec",
    "FeatureSetCatalog",
    "FeatureSetSpec",
    "FieldSpec",
    "RecordRejected",
    "SpecError",
    "load_featureset",
    "load_featuresets",
    "parse_duration",
]
