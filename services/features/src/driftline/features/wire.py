"""``GetOnlineFeaturesResponse`` encoded straight to protobuf wire bytes.

A response of 100 entities of 16 features holds 1,600 ``FeatureValue``
messages. Filling them through the protobuf runtime costs ~1 µs of Python per
value (a wrapper object per message, one call per field); most of each value's
bytes are the same from one value to the next (its name and status, and the
event time it shares with the entity's other features), so here they are
encoded once and reused, and only the value itself is packed per feature.
The result parses to exactly the message the runtime would have built: the
tests hold it to that.

Wire format (proto3): a field is a varint key ``number << 3 | wire type``
(0 varint, 1 fixed 64-bit, 2 length-delimited) then its payload; zero scalars
are left out, set message fields are always written.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import grpc

from driftline.features.lookup import LookupResult
from driftline.features.online_store import FeatureRead, FeatureStatus
from driftline.v1 import common_pb2, feature_store_pb2

__all__ = ["encode_entities", "encode_failure", "encode_response", "encode_result", "varint"]

_ONE_BYTE = [bytes((i,)) for i in range(128)]
_pack_double = struct.Struct("<d").pack

_STATUS = {
    FeatureStatus.PRESENT: common_pb2.FEATURE_STATUS_PRESENT,
    FeatureStatus.MISSING: common_pb2.FEATURE_STATUS_MISSING,
    FeatureStatus.STALE: common_pb2.FEATURE_STATUS_STALE,
}

# Keys: FeatureValue.name (1, LEN), value (2, LEN), status (3, VARINT),
# event_time (4, LEN), age_ms (5, VARINT); Value.double_value (1, I64),
# int64_value (2, VARINT), string_value (3, LEN), bool_value (4, VARINT);
# Timestamp.seconds (1, VARINT), nanos (2, VARINT); EntityFeatures.entity_id
# (1, LEN), features (2, LEN); GetOnlineFeaturesResponse.entities (4, LEN).
_VALUE_DOUBLE = b"\x12\x09\x09"  # value: 9 bytes, double_value: 8 bytes follow
_VALUE_TRUE = b"\x12\x02\x20\x01"
_VALUE_FALSE = b"\x12\x02\x20\x00"


def varint(n: int) -> bytes:
    """``n`` as a protobuf varint (a negative int64 as its 64-bit two's complement).

    >>> varint(1), varint(300), len(varint(-1))
    (b'\\x01', b'\\xac\\x02', 10)
    """
    if 0 <= n < 128:
        return _ONE_BYTE[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_prefixed(key: bytes, payload: bytes) -> bytes:
    return key + varint(len(payload)) + payload


def _value_bytes(v: Any) -> bytes:
    """The ``value`` field of a FeatureValue holding ``v`` (empty: unset)."""
    kind = type(v)
    if kind is float:
        return _VALUE_DOUBLE + _pack_double(v)
    if kind is int:
        return _len_prefixed(b"\x12", b"\x10" + varint(v))
    if kind is bool:
        return _VALUE_TRUE if v else _VALUE_FALSE
    if v is None:
        return b""
    text = v if kind is str else str(v)
    return _len_prefixed(b"\x12", _len_prefixed(b"\x1a", text.encode("utf-8")))


def _timestamp(t_us: int) -> bytes:
    """A ``google.protobuf.Timestamp`` of ``t_us`` (epoch microseconds)."""
    seconds, micros = divmod(t_us, 1_000_000)
    return (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(micros * 1000) if micros else b""
    )


def _time_bytes(t_us: int, read_at_us: int) -> bytes:
    """``event_time`` then ``age_ms`` of a value written at ``t_us``."""
    age = (read_at_us - t_us) // 1000
    return _len_prefixed(b"\x22", _timestamp(t_us)) + (b"\x28" + varint(age) if age else b"")


_STATUS_BYTES = {s: b"\x18" + varint(code) for s, code in _STATUS.items()}
_KEYS: dict[tuple[str, ...], tuple[list[bytes], list[bytes]]] = {}


def _keys_of(names: tuple[str, ...]) -> tuple[list[bytes], list[bytes]]:
    """Per name: its encoded ``name`` field, and that followed by ``status: PRESENT``.

    Cached: a one-entity read would otherwise spend most of its time here.
    """
    keys = _KEYS.get(names)
    if keys is None:
        if len(_KEYS) >= 256:
            _KEYS.clear()
        name_keys = [_len_prefixed(b"\x0a", n.encode("utf-8")) for n in names]
        present = _STATUS_BYTES[FeatureStatus.PRESENT]
        keys = _KEYS[names] = (name_keys, [k + present for k in name_keys])
    return keys


def encode_entities(
    names: Sequence[str],
    entity_ids: Sequence[str],
    rows: Sequence[Sequence[FeatureRead]],
    read_at_us: int,
) -> bytes:
    """The ``entities`` field (4) of a GetOnlineFeaturesResponse: one EntityFeatures per row."""
    name_keys, present_keys = _keys_of(tuple(names))
    status_bytes = _STATUS_BYTES
    present = FeatureStatus.PRESENT
    one_byte, pack_double = _ONE_BYTE, _pack_double
    out: list[bytes] = []
    for entity_id, row in zip(entity_ids, rows, strict=True):
        parts = [_len_prefixed(b"\x0a", entity_id.encode("utf-8"))]
        append = parts.append
        last_t: int | None = None
        timing = b""
        for i, r in enumerate(row):
            t_us = r.event_time_us
            if t_us is None:  # MISSING: the name and the status only
                body = name_keys[i] + status_bytes[r.status]
            else:
                if t_us != last_t:  # an entity's features mostly share one event time
                    last_t = t_us
                    timing = _time_bytes(t_us, read_at_us)
                if r.status is present:
                    v = r.value
                    value = _VALUE_DOUBLE + pack_double(v) if type(v) is float else _value_bytes(v)
                    body = present_keys[i] + value + timing
                else:
                    body = name_keys[i] + status_bytes[r.status] + timing
            size = len(body)
            append(b"\x12")
            append(one_byte[size] if size < 128 else varint(size))
            append(body)
        entity = b"".join(parts)
        out.append(b"\x22")
        out.append(varint(len(entity)))
        out.append(entity)
    return b"".join(out)


_HEADS: dict[tuple[str, int, tuple[str, ...]], bytes] = {}


def encode_response(result: LookupResult) -> bytes:
    """The whole GetOnlineFeaturesResponse of a lookup."""
    read_at_us = round(result.read_at * 1e6)
    key = (result.spec.name, result.spec.version, tuple(result.names))
    head = _HEADS.get(key)
    if head is None:  # featureset, version and names: the same for every read of them
        if len(_HEADS) >= 256:
            _HEADS.clear()
        head = _HEADS[key] = feature_store_pb2.GetOnlineFeaturesResponse(
            featureset=result.spec.name,
            featureset_version=result.spec.version,
            feature_names=result.names,
        ).SerializeToString()
    return (
        head
        + _len_prefixed(b"\x2a", _timestamp(read_at_us))  # read_at (5, LEN)
        + encode_entities(result.names, result.entity_ids, result.rows, read_at_us)
    )


# OnlineFeaturesResult: id (1, VARINT), code (2, VARINT), message (3, LEN),
# response (4, LEN).
_CODES = {code.name: code.value[0] for code in grpc.StatusCode}


def encode_result(read_id: int, response: bytes) -> bytes:
    """The OnlineFeaturesResult of a read answered with ``response`` (GetOnlineFeaturesResponse
    bytes, as :func:`encode_response` makes them)."""
    return b"\x08" + varint(read_id) + _len_prefixed(b"\x22", response)


def encode_failure(read_id: int, code: str, message: str) -> bytes:
    """The OnlineFeaturesResult of a read that failed with gRPC status ``code`` (its name)."""
    return feature_store_pb2.OnlineFeaturesResult(
        id=read_id, code=_CODES[code], message=message
    ).SerializeToString()
