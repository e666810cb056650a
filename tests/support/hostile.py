"""The hostile-input corpus of issue 14: records that once halted or crashed a consumer.

One corpus for every transport: the unit tests feed it to the ingestion core, the
integration tests produce it to ``driftline.events`` / ``driftline.labels`` with
kcat and post it to the HTTP API.  Each case says what must come of it: the
dead-letter reason, or ``None`` when the record is valid (a hostile envelope
around a valid value).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from driftline.contracts.messages import DlqReason

ROOT = Path(__file__).resolve().parents[2]

Kind = Literal["event", "label"]

BROKER_LIMIT = 1024 * 1024
"""``max.message.bytes`` of the topics (``KafkaSettings().max_message_bytes``)."""

JUST_UNDER_BROKER_LIMIT = 1_000_000
"""A record the broker takes (room left for the key and the record's framing)."""

FRUIT = """\
name: fruit
version: 1
entity: basket
fields:
  weight: {type: float, min: 0}
label: {type: multiclass, classes: [apple, pear]}
"""

PRICES = """\
name: prices
version: 1
entity: house
fields:
  rooms: {type: int, min: 1}
label: {type: regression, min: 0}
"""


def write_label_featuresets(directory: Path) -> Path:
    """A feature-set directory with one label type per task.

    ``loans`` (binary, the example), ``fruit`` (multiclass: apple, pear) and
    ``prices`` (regression, at least 0).
    """
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "featuresets" / "loans.yaml", directory / "loans.yaml")
    (directory / "fruit.yaml").write_text(FRUIT)
    (directory / "prices.yaml").write_text(PRICES)
    return directory


LOANS_FEATURES: dict[str, Any] = {
    "salary": 50000.0,
    "commission": 12000.0,
    "age": 41,
    "elevel": 2,
    "car": 3,
    "zipcode": 4,
    "hvalue": 300000.0,
    "hyears": 10,
    "loan": 120000.0,
}


def event(event_id: str, entity_id: str, **features: Any) -> dict[str, Any]:
    """A valid ``loans`` event, with ``features`` changed."""
    return {
        "event_id": event_id,
        "entity_id": entity_id,
        "timestamp": 1_795_449_600_000,
        "featureset": "loans",
        "features": {**LOANS_FEATURES, **features},
    }


def label(event_id: str, entity_id: str, value: Any, featureset: str = "loans") -> dict[str, Any]:
    """A label of ``featureset`` (valid when ``value`` is of its label type)."""
    return {
        "event_id": event_id,
        "entity_id": entity_id,
        "timestamp": 1_795_449_600_000,
        "featureset": featureset,
        "label": value,
    }


def _raw(doc: dict[str, Any], replace: dict[str, str]) -> bytes:
    """``doc`` as JSON with placeholder strings swapped for raw JSON text (numbers
    ``json`` would not write: 1e400, 5000 digits)."""
    text = json.dumps(doc)
    for placeholder, raw in replace.items():
        text = text.replace(json.dumps(placeholder), raw)
    return text.encode()


@dataclass(frozen=True)
class Case:
    """One hostile record and what must come of it."""

    name: str
    value: bytes | None
    expect: DlqReason | None
    """The dead-letter reason, or None: accepted."""
    key: bytes | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    detail: str = ""
    """Words the dead letter's detail must contain."""
    http: bool = True
    """Whether the case makes sense as an HTTP body (keys and Kafka headers do not)."""
    decodable: bool = True
    """False when the Kafka client cannot decode the record: its dead letter names the
    offset only (the core never sees it)."""


HEADER_FLOOD = [(f"x-flood-{i}".encode(), b"v" * 16) for i in range(400)] + [
    (b"traceparent", b"not-a-traceparent"),
    (b"x-binary", b"\xff\xfe\x80"),
]
"""Hundreds of headers, one of them a malformed trace context, one not text."""


def corpus(kind: Kind, run: str, *, max_record_bytes: int = 64 * 1024) -> list[Case]:
    """The hostile records for ``kind``; ids and keys start with ``run``."""

    def good(i: str, value: Any = 1, featureset: str = "loans") -> dict[str, Any]:
        if kind == "event":
            return event(f"{run}-h{i}", f"{run}-c{i}")
        return label(f"{run}-h{i}", f"{run}-c{i}", value, featureset)

    def padded(size: int) -> bytes:
        doc = good("pad")
        doc["pad"] = ""
        base = len(json.dumps(doc).encode())
        doc["pad"] = "p" * (size - base)
        raw = json.dumps(doc).encode()
        assert len(raw) == size
        return raw

    def with_number(raw_number: str) -> bytes:
        doc = good("num")
        if kind == "event":
            doc["features"]["salary"] = "@N@"
        else:
            doc["label"] = "@N@"
            doc["featureset"] = "prices"
        return _raw(doc, {"@N@": raw_number})

    cases = [
        Case(
            "just under the broker's limit",
            padded(JUST_UNDER_BROKER_LIMIT),
            DlqReason.TOO_LARGE,
            key=f"{run}-k-under".encode(),
            detail="over the limit",
        ),
        Case(
            "just over the per-record limit",
            padded(max_record_bytes + 1),
            DlqReason.TOO_LARGE,
            key=f"{run}-k-over".encode(),
            detail=f"{max_record_bytes + 1} bytes",
        ),
        Case(
            "deeply nested JSON",
            b"[" * 50_000,
            DlqReason.UNPARSEABLE,
            key=f"{run}-k-deep".encode(),
            detail="nested too deeply",
        ),
        Case(
            "invalid UTF-8",
            b'{"event_id": "\xc3\x28", "entity_id": "\xa0\xa1"}',
            DlqReason.UNPARSEABLE,
            key=f"{run}-k-utf8".encode(),
            detail="not UTF-8",
        ),
        Case(
            "a null value (tombstone)",
            None,
            DlqReason.UNPARSEABLE,
            key=f"{run}-k-null".encode(),
            detail="tombstone",
            http=False,
        ),
        Case(
            "a huge key",
            b"not json at all",
            DlqReason.UNPARSEABLE,
            key=f"{run}-k-huge-".encode() + b"K" * 500_000,
            detail="its key of",
            http=False,
        ),
        Case(
            "a header flood",
            json.dumps({"what": "ever"}).encode(),
            DlqReason.SCHEMA,
            key=f"{run}-k-flood".encode(),
            headers=HEADER_FLOOD,
        ),
        Case(
            "a header name that is not UTF-8",
            json.dumps(good("hdr")).encode(),
            DlqReason.UNPARSEABLE,
            key=f"{run}-k-hdr".encode(),
            headers=[(b"x-\xff\xfe", b"v")],
            detail="cannot decode the record",
            http=False,
            decodable=False,
        ),
        Case(
            "a number out of the float range",
            with_number("1e400"),
            DlqReason.CONSTRAINT,
            key=f"{run}-k-1e400".encode(),
            detail="finite",
        ),
        Case(
            "a 5000-digit integer",
            with_number("7" * 5000),
            DlqReason.UNPARSEABLE,
            key=f"{run}-k-digits".encode(),
            detail="4300 digits",
        ),
        Case(
            "a timestamp out of range",
            json.dumps({**good("ts"), "timestamp": 1e20}).encode(),
            DlqReason.SCHEMA,
            key=f"{run}-k-ts".encode(),
            detail="timestamp",
        ),
    ]
    if kind == "event":
        many = good("wide")
        many["features"] = {f"f{i}": i for i in range(10_000)}
        cases.append(
            Case(
                "10,000 features",
                json.dumps(many).encode(),
                DlqReason.TOO_LARGE
                if len(json.dumps(many)) > max_record_bytes
                else DlqReason.SCHEMA,
                key=f"{run}-k-wide".encode(),
            )
        )
    else:
        cases += [
            Case(
                "a string for a binary model",
                json.dumps(good("maybe", "maybe", "loans")).encode(),
                DlqReason.CONSTRAINT,
                key=f"{run}-k-maybe".encode(),
                detail="not a binary class",
            ),
            Case(
                "NaN for a regression model",
                _raw(good("nan", "@N@", "prices"), {"@N@": "NaN"}),
                DlqReason.CONSTRAINT,
                key=f"{run}-k-nan".encode(),
                detail="not a finite number",
            ),
            Case(
                "an undeclared class for a multiclass model",
                json.dumps(good("plum", "plum", "fruit")).encode(),
                DlqReason.CONSTRAINT,
                key=f"{run}-k-plum".encode(),
                detail="not one of the declared classes",
            ),
            Case(
                "a label naming no feature set when several are registered",
                json.dumps({k: v for k, v in good("nofs").items() if k != "featureset"}).encode(),
                DlqReason.UNKNOWN_FEATURESET,
                key=f"{run}-k-nofs".encode(),
                detail="name one",
            ),
        ]
    return cases


def valid_stream(kind: Kind, run: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` valid records of ``kind`` as ``(key, doc)``; labels spread over the three tasks."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        eid, entity = f"{run}-v{i}", f"{run}-c{i % 7}"
        if kind == "event":
            doc = event(eid, entity, age=20 + i % 60)
        else:
            doc = [
                label(eid, entity, i % 2, "loans"),
                label(eid, entity, ["apple", "pear"][i % 2], "fruit"),
                label(eid, entity, float(i), "prices"),
            ][i % 3]
        out.append((entity, doc))
    return out
