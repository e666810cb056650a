"""Conversions between registry protobuf messages and the typed models.

Shared by the client and the registry service, so the two sides agree on one
mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from driftline.contracts.messages import Lineage, OffsetRange
from driftline.edge.values import values_from_pb, values_to_pb
from driftline.registry_api.models import (
    AliasChange,
    ArtifactMetadata,
    ModelSummary,
    ModelVersionInfo,
    UnservedRetrain,
    WriterClaim,
    WriterLease,
)
from driftline.v1 import common_pb2, registry_pb2

if TYPE_CHECKING:
    from driftline.registry_api.models import AliasChangeKind, ParamValue, VersionStatus

__all__ = [
    "alias_change_from_pb",
    "alias_change_to_pb",
    "artifact_metadata_from_pb",
    "datetime_from_pb",
    "datetime_to_pb",
    "lineage_from_pb",
    "lineage_to_pb",
    "params_from_pb",
    "params_to_pb",
    "same_named",
    "struct_from_dict",
    "struct_to_dict",
    "summary_from_pb",
    "summary_to_pb",
    "version_from_pb",
    "version_to_pb",
    "writer_claim_from_pb",
    "writer_claim_to_pb",
    "writer_lease_from_pb",
    "writer_lease_to_pb",
]

_STATUS_TO_PB: dict[VersionStatus, int] = {
    "registered": registry_pb2.MODEL_VERSION_STATUS_REGISTERED,
    "rejected": registry_pb2.MODEL_VERSION_STATUS_REJECTED,
    "archived": registry_pb2.MODEL_VERSION_STATUS_ARCHIVED,
}
_STATUS_FROM_PB: dict[int, VersionStatus] = {v: k for k, v in _STATUS_TO_PB.items()}
_KIND_TO_PB: dict[AliasChangeKind, int] = {
    "set": registry_pb2.ALIAS_CHANGE_KIND_SET,
    "rolled_back": registry_pb2.ALIAS_CHANGE_KIND_ROLLED_BACK,
    "deleted": registry_pb2.ALIAS_CHANGE_KIND_DELETED,
}
_KIND_FROM_PB: dict[int, AliasChangeKind] = {v: k for k, v in _KIND_TO_PB.items()}

_VERSION_FIELDS = ("name", "version", "sha256", "signature", "signature_key_id", "created_by")
"""Fields a :class:`ModelVersionInfo` and a protobuf ModelVersion hold alike."""
_ALIAS_CHANGE_FIELDS = ("event_id", "name", "alias", "actor", "reason", "trigger_id")
"""Fields an :class:`AliasChange` and its protobuf message hold alike."""


def same_named(source: object, names: Iterable[str]) -> dict[str, Any]:
    """``{name: source.<name>}`` for each of ``names``: the fields a protobuf message and
    its model hold under one name and type, copied across without spelling out each."""
    return {name: getattr(source, name) for name in names}


def datetime_to_pb(value: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def datetime_from_pb(ts: Timestamp) -> datetime:
    """An aware UTC datetime of a protobuf Timestamp."""
    return ts.ToDatetime(tzinfo=UTC)


def struct_from_dict(data: Mapping[str, Any]) -> Struct:
    """A ``google.protobuf.Struct`` of a JSON-like mapping."""
    s = Struct()
    s.update(dict(data))
    return s


_EXACT_INT = 2**53
"""Every integer up to this magnitude is exact as a double."""


def _whole_numbers_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers_as_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_int(v) for v in value]
    return value


def struct_to_dict(s: Struct) -> dict[str, Any]:
    """A plain dict of a ``google.protobuf.Struct``, whole numbers as ``int``.

    A Struct holds every number as a double, so a spec's ``max_iter: 100`` came back
    as ``100.0``, which scikit-learn refuses for an int parameter when the spec's
    pipeline is built from the registry's copy; a whole number reads back as an int,
    as the same JSON or YAML would (``1.0`` too: every numeric parameter takes an int).
    """
    out: dict[str, Any] = _whole_numbers_as_int(json_format.MessageToDict(s))
    return out


def params_to_pb(params: Mapping[str, ParamValue]) -> dict[str, common_pb2.Value]:
    """``map<string, Value>`` entries of scalar parameters."""
    return values_to_pb(params)


def params_from_pb(params: Mapping[str, common_pb2.Value]) -> dict[str, ParamValue]:
    """Scalar parameters of ``map<string, Value>``."""
    return values_from_pb(params)


def lineage_to_pb(
    lineage: Lineage | None, drift_ids: list[str] | None = None
) -> registry_pb2.Lineage:
    """The protobuf Lineage of the contracts' Lineage (empty when ``None``)."""
    pb = registry_pb2.Lineage(drift_ids=list(drift_ids or ()))
    if lineage is None:
        return pb
    pb.featureset = lineage.featureset
    pb.featureset_version = lineage.featureset_version
    pb.examples = lineage.examples
    pb.trigger_id = lineage.trigger_id or ""
    if lineage.parent_version is not None:
        pb.parent_version = lineage.parent_version
    for r in lineage.offsets:
        pb.offsets.append(
            common_pb2.OffsetRange(topic=r.topic, partition=r.partition, first=r.first, last=r.last)
        )
    if lineage.event_time_from is not None:
        pb.event_time.start.CopyFrom(datetime_to_pb(lineage.event_time_from))
    if lineage.event_time_to is not None:
        pb.event_time.end.CopyFrom(datetime_to_pb(lineage.event_time_to))
    return pb


def lineage_from_pb(pb: registry_pb2.Lineage) -> tuple[Lineage | None, list[str]]:
    """``(lineage, drift_ids)``; lineage is ``None`` when the message is empty."""
    drift_ids = list(pb.drift_ids)
    if not _has_lineage_content(pb):
        return None, drift_ids
    lineage = Lineage(
        featureset=pb.featureset,
        featureset_version=pb.featureset_version,
        offsets=[
            OffsetRange(topic=r.topic, partition=r.partition, first=r.first, last=r.last)
            for r in pb.offsets
        ],
        event_time_from=(
            datetime_from_pb(pb.event_time.start) if pb.event_time.HasField("start") else None
        ),
        event_time_to=(
            datetime_from_pb(pb.event_time.end) if pb.event_time.HasField("end") else None
        ),
        examples=pb.examples,
        parent_version=pb.parent_version if pb.HasField("parent_version") else None,
        trigger_id=pb.trigger_id or None,
    )
    return lineage, drift_ids


def _has_lineage_content(pb: registry_pb2.Lineage) -> bool:
    copy = registry_pb2.Lineage()
    copy.CopyFrom(pb)
    copy.ClearField("drift_ids")
    return copy.ByteSize() > 0


def version_to_pb(v: ModelVersionInfo) -> registry_pb2.ModelVersion:
    """The protobuf ModelVersion of a :class:`ModelVersionInfo`."""
    pb = registry_pb2.ModelVersion(
        **same_named(v, _VERSION_FIELDS),
        created_at=datetime_to_pb(v.created_at),
        metrics=v.metrics,
        lineage=lineage_to_pb(v.lineage, v.drift_ids),
        aliases=sorted(v.aliases),
        status=_STATUS_TO_PB[v.status],  # type: ignore[arg-type]
        params=params_to_pb(v.params),
        spec=struct_from_dict(v.spec),
        artifact_format=v.artifact_format,
        size_bytes=v.size_bytes,
        tags=v.tags,
        framework=v.framework,
        library_versions=v.library_versions,
    )
    return pb


def version_from_pb(pb: registry_pb2.ModelVersion) -> ModelVersionInfo:
    """The :class:`ModelVersionInfo` of a protobuf ModelVersion."""
    lineage, drift_ids = lineage_from_pb(pb.lineage)
    return ModelVersionInfo(
        **same_named(pb, _VERSION_FIELDS),
        created_at=datetime_from_pb(pb.created_at),
        metrics=dict(pb.metrics),
        lineage=lineage,
        drift_ids=drift_ids,
        aliases=list(pb.aliases),
        status=_STATUS_FROM_PB.get(pb.status, "registered"),
        params=params_from_pb(pb.params),
        spec=struct_to_dict(pb.spec),
        artifact_format=pb.artifact_format,
        size_bytes=pb.size_bytes,
        tags=dict(pb.tags),
        framework=pb.framework or "river",
        library_versions=dict(pb.library_versions),
    )


def artifact_metadata_from_pb(pb: registry_pb2.ArtifactMetadata) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` of its protobuf message."""
    return ArtifactMetadata(
        model_version=version_from_pb(pb.model_version),
        **same_named(
            pb,
            ("size_bytes", "sha256", "signature", "signature_algorithm", "signature_key_id"),
        ),
        artifact_format=pb.artifact_format,
    )


def alias_change_to_pb(c: AliasChange) -> registry_pb2.AliasChange:
    """The protobuf AliasChange of an :class:`AliasChange`."""
    pb = registry_pb2.AliasChange(
        **same_named(c, _ALIAS_CHANGE_FIELDS),
        kind=_KIND_TO_PB[c.kind],  # type: ignore[arg-type]
        changed_at=datetime_to_pb(c.changed_at),
    )
    if c.version is not None:
        pb.version = c.version
    if c.previous_version is not None:
        pb.previous_version = c.previous_version
    return pb


def alias_change_from_pb(pb: registry_pb2.AliasChange) -> AliasChange:
    """The :class:`AliasChange` of its protobuf message."""
    return AliasChange(
        **same_named(pb, _ALIAS_CHANGE_FIELDS),
        kind=_KIND_FROM_PB.get(pb.kind, "set"),
        version=pb.version if pb.HasField("version") else None,
        previous_version=pb.previous_version if pb.HasField("previous_version") else None,
        changed_at=datetime_from_pb(pb.changed_at),
    )


def summary_to_pb(m: ModelSummary) -> registry_pb2.ModelSummary:
    """The protobuf ModelSummary of a :class:`ModelSummary`."""
    return registry_pb2.ModelSummary(
        name=m.name,
        latest_version=m.latest_version,
        aliases=m.aliases,
        framework=m.framework,
        unserved_retrains=[
            registry_pb2.UnservedRetrain(
                request_id=u.request_id,
                reason=u.reason,
                at=datetime_to_pb(u.at),
                drift_ids=u.drift_ids,
            )
            for u in m.unserved_retrains
        ],
    )


def summary_from_pb(pb: registry_pb2.ModelSummary) -> ModelSummary:
    """The :class:`ModelSummary` of its protobuf message (framework ``river`` when empty)."""
    return ModelSummary(
        name=pb.name,
        latest_version=pb.latest_version,
        aliases=dict(pb.aliases),
        framework=pb.framework or "river",
        unserved_retrains=[
            UnservedRetrain(
                request_id=u.request_id,
                reason=u.reason,
                at=datetime_from_pb(u.at),
                drift_ids=list(u.drift_ids),
            )
            for u in pb.unserved_retrains
        ],
    )


def writer_lease_to_pb(lease: WriterLease | None) -> registry_pb2.WriterLease | None:
    """A mutation's writer role on the wire (``None``: the mutation is not fenced)."""
    return None if lease is None else registry_pb2.WriterLease(role=lease.role, epoch=lease.epoch)


def writer_lease_from_pb(message: Any) -> WriterLease | None:
    """The ``writer`` field of a mutation request; ``None`` when it is not set."""
    if not message.HasField("writer"):
        return None
    return WriterLease(role=message.writer.role, epoch=message.writer.epoch)


def writer_claim_to_pb(claim: WriterClaim) -> registry_pb2.WriterClaim:
    """A claim of a one-writer role, for the ``ClaimWriter`` answer."""
    return registry_pb2.WriterClaim(
        role=claim.role,
        epoch=claim.epoch,
        holder=claim.holder,
        previous_holder=claim.previous_holder,
    )


def writer_claim_from_pb(pb: registry_pb2.WriterClaim) -> WriterClaim:
    """The ``ClaimWriter`` answer as a :class:`WriterClaim`."""
    return WriterClaim(
        role=pb.role, epoch=pb.epoch, holder=pb.holder, previous_holder=pb.previous_holder
    )
