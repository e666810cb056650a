"""Whatever the bytes and the key, the ingestion core answers, and its dead letter fits.

The property test throws arbitrary bytes (and near-valid records with arbitrary
values, oversized and deeply nested ones) at :meth:`IngestionCore.process`; the
targeted tests pin the reason and detail for each case of the issue's corpus.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from support.hostile import corpus, event, label, write_label_featuresets

from driftline.contracts.messages import DeadLetter, DlqReason, ValidEvent, ValidLabel
from driftline.ingestion.core import (
    KEY_CHARS,
    Accepted,
    Incoming,
    IngestionCore,
    Outcome,
    Rejected,
    Source,
)
from driftline.ingestion.dedup import InMemoryDedupStore
from driftline.kafkaio import encode_value
from driftline.settings import KafkaSettings
from driftline.specs import FeatureSetCatalog, FeatureSetSpec, load_featuresets

LIMITS = KafkaSettings()
MAX_RECORD = LIMITS.max_record_bytes
MAX_MESSAGE = LIMITS.max_message_bytes


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> FeatureSetCatalog:
    """loans (binary labels), fruit (multiclass: apple, pear), prices (regression, >= 0)."""
    return load_featuresets(write_label_featuresets(tmp_path_factory.mktemp("featuresets")))


def make_core(catalog: FeatureSetCatalog, max_record_bytes: int = MAX_RECORD) -> IngestionCore:
    return IngestionCore(catalog, InMemoryDedupStore(3600), max_record_bytes=max_record_bytes)


def item(
    value: bytes | None, kind: str = "event", key: bytes | None = b"k", offset: int = 0
) -> Incoming:
    return Incoming(
        value,
        key,
        Source(
            kind=kind,  # type: ignore[arg-type]
            via="kafka",
            owner=f"t:0:{offset}",
            topic="t",
            partition=0,
            offset=offset,
        ),
    )


def run(core: IngestionCore, items: Sequence[Incoming]) -> list[Outcome]:
    return asyncio.run(core.process(items))


def assert_fits(outcome: Outcome) -> None:
    """The outcome as the writer sends it (value and key) fits a topic's max.message.bytes."""
    if isinstance(outcome, Rejected):
        value = encode_value(outcome.letter)
        DeadLetter.model_validate_json(value)  # it reads back
    else:
        value = encode_value(outcome.record)
    key = outcome.key.encode("utf-8") if outcome.key is not None else b""
    assert len(value) + len(key) < MAX_MESSAGE


# -- the property -------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
_numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=0, max_value=1),
    st.sampled_from([2**63, -(2**63) - 1, 10**300, "maybe", "pear", "plum"]),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid event or label (and its kind) with at most one field replaced."""
    kind, doc = draw(
        st.sampled_from(
            [
                ("event", event("e-1", "c-1")),
                ("label", label("e-1", "c-1", 1, "loans")),
                ("label", label("e-1", "c-1", "pear", "fruit")),
                ("label", label("e-1", "c-1", 2.5, "prices")),
                ("label", {k: v for k, v in label("e-1", "c-1", 1).items() if k != "featureset"}),
            ]
        )
    )
    doc = json.loads(json.dumps(doc))
    fields = ["event_id", "entity_id", "timestamp", "featureset", "label", "features"]
    target = draw(st.sampled_from([None, "salary", "age", "extra", *fields]))
    if target is None:
        return kind, json.dumps(doc).encode()
    value = draw(_numbers if target in ("salary", "age", "label") else _json_values)
    if target in ("salary", "age") and "features" in doc:
        doc["features"][target] = value
    else:
        doc[target] = value
    return kind, json.dumps(doc).encode()


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    """Past the per-record limit, up to the broker's."""
    size = draw(st.integers(min_value=MAX_RECORD + 1, max_value=1_040_000))
    head = draw(st.binary(max_size=64))
    return head + b"\xff" * (size - len(head))


_deep = st.integers(min_value=900, max_value=60_000).map(lambda n: b'{"a":' * n)
_long_numbers = st.integers(min_value=300, max_value=MAX_RECORD // 2).map(
    lambda n: b'{"event_id":"e","entity_id":"c","timestamp":1,"label":' + b"9" * n + b"}"
)

_kinds = st.sampled_from(["event", "label"])
_records = near_valid() | st.tuples(
    _kinds,
    st.one_of(
        st.none(),
        st.binary(max_size=512),
        _json_values.map(lambda v: json.dumps(v).encode()),
        oversized(),
        _deep,
        _long_numbers,
    ),
)
_keys = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.integers(min_value=KEY_CHARS - 2, max_value=900_000).map(lambda n: b"\xe2\x82" * (n // 2)),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(record=_records, key=_keys)
def test_any_bytes_give_one_outcome_that_fits(
    catalog: FeatureSetCatalog, record: tuple[str, bytes | None], key: bytes | None
) -> None:
    kind, value = record
    outcomes = run(make_core(catalog), [item(value, kind, key)])
    assert len(outcomes) == 1
    [outcome] = outcomes
    assert isinstance(outcome, Accepted | Rejected)
    note(outcome.reason.value if isinstance(outcome, Rejected) else "accepted")
    assert_fits(outcome)
    if isinstance(outcome, Rejected):
        letter = outcome.letter
        raw = value or b""
        assert letter.original_size == len(raw)
        assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
        assert letter.original() == raw[:MAX_RECORD]
        assert letter.truncated is (len(raw) > MAX_RECORD)
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("t", 0, 0)
        assert letter.kind == kind
        assert letter.detail
    else:
        assert isinstance(outcome.record, ValidEvent if kind == "event" else ValidLabel)


# -- the corpus, case by case -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["event", "label"])
def test_each_hostile_case_is_dead_lettered_with_its_reason(
    catalog: FeatureSetCatalog, kind: str
) -> None:
    # (A record the Kafka client cannot decode never reaches the core.)
    cases = [c for c in corpus(kind, "u") if c.decodable]  # type: ignore[arg-type]
    outcomes = run(make_core(catalog), [item(c.value, kind, c.key, i) for i, c in enumerate(cases)])
    assert len(outcomes) == len(cases)
    for case, outcome in zip(cases, outcomes, strict=True):
        assert isinstance(outcome, Rejected), case.name
        assert outcome.reason is case.expect, (case.name, outcome.letter.detail)
        assert case.detail in outcome.letter.detail, (case.name, outcome.letter.detail)
        assert_fits(outcome)


def test_an_oversized_record_keeps_its_first_bytes_size_digest_and_source(
    catalog: FeatureSetCatalog,
) -> None:
    big = b'{"event_id": "' + b"x" * 999_970 + b'"}'
    [outcome] = run(make_core(catalog), [item(big, offset=41)])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.TOO_LARGE
    letter = outcome.letter
    assert letter.truncated and letter.original() == big[:MAX_RECORD]
    assert letter.original_size == len(big)
    assert letter.original_sha256 == hashlib.sha256(big).hexdigest()
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("t", 0, 41)
    assert len(encode_value(letter)) < MAX_MESSAGE


def test_deep_nesting_under_the_size_limit_is_unparseable_not_a_crash(
    catalog: FeatureSetCatalog,
) -> None:
    core = make_core(catalog, max_record_bytes=256 * 1024)
    [outcome] = run(core, [item(b"[" * 100_000)])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.UNPARSEABLE
    assert "nested too deeply" in outcome.letter.detail


def test_100000_levels_are_over_the_default_limit(catalog: FeatureSetCatalog) -> None:
    [outcome] = run(make_core(catalog), [item(b"[" * 100_000)])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.TOO_LARGE


@pytest.mark.parametrize(
    ("feature", "raw_value", "reason", "detail"),
    [
        ("salary", "1e400", DlqReason.CONSTRAINT, "not a finite number"),
        ("salary", "-1e400", DlqReason.CONSTRAINT, "not a finite number"),
        ("salary", "9" * 400, DlqReason.CONSTRAINT, "not a finite number"),
        ("age", str(2**70), DlqReason.CONSTRAINT, "out of the int64 range"),
        ("age", "7" * 5000, DlqReason.UNPARSEABLE, "more than 4300 digits"),
    ],
)
def test_numbers_no_field_can_take(
    catalog: FeatureSetCatalog, feature: str, raw_value: str, reason: DlqReason, detail: str
) -> None:
    doc = event("e-n", "c-n")
    doc["features"][feature] = "@N@"
    value = json.dumps(doc).replace('"@N@"', raw_value).encode()
    [outcome] = run(make_core(catalog), [item(value)])
    assert isinstance(outcome, Rejected) and outcome.reason is reason
    assert detail in outcome.letter.detail
    assert len(outcome.letter.detail) < 400  # the number is not copied into the detail


@pytest.mark.parametrize("timestamp", [1e20, -1e20, 1e300, 10**400])
def test_timestamps_out_of_range_are_schema_errors(
    catalog: FeatureSetCatalog, timestamp: float
) -> None:
    value = json.dumps({**event("e-t", "c-t"), "timestamp": timestamp}).encode()
    [outcome] = run(make_core(catalog), [item(value)])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.SCHEMA
    assert "timestamp is out of range" in outcome.letter.detail


def test_ten_thousand_features_are_named_in_a_bounded_detail(catalog: FeatureSetCatalog) -> None:
    doc = event("e-w", "c-w")
    doc["features"] = {f"f{i}": i for i in range(10_000)}
    core = make_core(catalog, max_record_bytes=1024 * 1024)
    [outcome] = run(core, [item(json.dumps(doc).encode())])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.SCHEMA
    assert "declares no field 'f0'" in outcome.letter.detail
    assert len(outcome.letter.detail) <= 2000


def test_a_huge_or_broken_key_is_bounded_in_the_letter(catalog: FeatureSetCatalog) -> None:
    huge = b"\xff" + "é".encode() * 450_000
    [garbage, valid] = run(
        make_core(catalog),
        [item(b"junk", key=huge), item(json.dumps(event("e-k", "c-k")).encode(), key=huge)],
    )
    assert isinstance(garbage, Rejected)
    assert garbage.key is not None and len(garbage.key) == KEY_CHARS
    assert garbage.letter.original_key == garbage.key
    assert garbage.key.startswith("\ufffdé")
    assert f"its key of {len(huge)} bytes" in garbage.letter.detail
    # A valid record is keyed by its entity; the key it came with does not matter.
    assert isinstance(valid, Accepted) and valid.key == "c-k"


def test_a_short_invalid_key_is_kept_whole_with_replacement_characters(
    catalog: FeatureSetCatalog,
) -> None:
    [outcome] = run(make_core(catalog), [item(b"junk", key=b"ab\xffcd")])
    assert isinstance(outcome, Rejected) and outcome.key == "ab\ufffdcd"
    assert "its key" not in outcome.letter.detail


def test_a_tombstone_says_so(catalog: FeatureSetCatalog) -> None:
    [outcome] = run(make_core(catalog), [item(None)])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.UNPARSEABLE
    assert "tombstone" in outcome.letter.detail
    assert outcome.letter.original() == b"" and outcome.letter.original_size == 0


# -- labels are checked like events ----------------------------------------------------


@pytest.mark.parametrize(
    ("featureset", "raw_label", "reason", "detail"),
    [
        ("loans", '"maybe"', DlqReason.CONSTRAINT, "'maybe' is not a binary class"),
        ("loans", "2", DlqReason.CONSTRAINT, "not a binary class"),
        ("loans", "0.5", DlqReason.CONSTRAINT, "not a binary class"),
        ("prices", "NaN", DlqReason.CONSTRAINT, "not a finite number"),
        ("prices", "Infinity", DlqReason.CONSTRAINT, "not a finite number"),
        ("prices", "1e400", DlqReason.CONSTRAINT, "not a finite number"),
        ("prices", "-3", DlqReason.CONSTRAINT, "below the minimum"),
        ("prices", '"cheap"', DlqReason.SCHEMA, "expected a number"),
        ("prices", "true", DlqReason.SCHEMA, "expected a number"),
        ("fruit", '"plum"', DlqReason.CONSTRAINT, "not one of the declared classes"),
        ("fruit", "1", DlqReason.CONSTRAINT, "not one of the declared classes"),
        ("boats", "1", DlqReason.UNKNOWN_FEATURESET, "'boats' is not registered"),
    ],
)
def test_labels_of_the_wrong_type_are_dead_lettered(
    catalog: FeatureSetCatalog, featureset: str, raw_label: str, reason: DlqReason, detail: str
) -> None:
    value = json.dumps(label("e-l", "c-l", "@L@", featureset)).replace('"@L@"', raw_label)
    [outcome] = run(make_core(catalog), [item(value.encode(), "label")])
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is reason and detail in outcome.letter.detail, outcome.letter.detail
    assert outcome.letter.kind == "label"


@pytest.mark.parametrize(
    ("featureset", "given", "kept"),
    [
        ("loans", 1, 1),
        ("loans", 0.0, 0),
        ("loans", True, True),
        ("fruit", "pear", "pear"),
        ("prices", 3, 3.0),
        ("prices", 0.25, 0.25),
    ],
)
def test_valid_labels_carry_their_feature_set_and_checked_value(
    catalog: FeatureSetCatalog, featureset: str, given: Any, kept: Any
) -> None:
    value = json.dumps(label("e-v", "c-v", given, featureset)).encode()
    [outcome] = run(make_core(catalog), [item(value, "label")])
    assert isinstance(outcome, Accepted) and isinstance(outcome.record, ValidLabel)
    assert outcome.record.featureset == featureset
    assert outcome.record.label == kept and type(outcome.record.label) is type(kept)
    assert outcome.key == "c-v"


def test_a_label_must_name_its_feature_set_when_several_are_registered(
    catalog: FeatureSetCatalog,
) -> None:
    doc = label("e-f", "c-f", 1)
    del doc["featureset"]
    [outcome] = run(make_core(catalog), [item(json.dumps(doc).encode(), "label")])
    assert isinstance(outcome, Rejected) and outcome.reason is DlqReason.UNKNOWN_FEATURESET
    assert "name one" in outcome.letter.detail


def test_a_feature_set_without_a_label_type_takes_any_finite_label() -> None:
    spec = FeatureSetSpec(name="plain", version=1, entity="e", fields={"x": {"type": "int"}})
    core = make_core(FeatureSetCatalog([spec]))
    ok = json.dumps(label("e-p", "c-p", "anything", "plain")).encode()
    nan = json.dumps(label("e-q", "c-q", "@L@", "plain")).replace('"@L@"', "NaN").encode()
    accepted, rejected = run(core, [item(ok, "label", offset=0), item(nan, "label", offset=1)])
    assert isinstance(accepted, Accepted) and accepted.record.featureset == "plain"
    assert isinstance(rejected, Rejected) and rejected.reason is DlqReason.CONSTRAINT


# -- a record that makes validation raise is isolated ------------------------------------


class _Exploding(FeatureSetCatalog):
    """A catalog whose lookup raises for one feature set, as a bug in a spec would."""

    def resolve(self, name: str | None) -> FeatureSetSpec:
        if name == "fruit":
            raise TypeError("'<' not supported between instances of 'int' and 'str'")
        return super().resolve(name)


def test_an_unexpected_error_dead_letters_only_that_record(catalog: FeatureSetCatalog) -> None:
    core = make_core(_Exploding(list(catalog)))
    values = [
        json.dumps(label("e-a", "c-a", 1, "loans")).encode(),
        json.dumps(label("e-b", "c-b", "pear", "fruit")).encode(),
        json.dumps(label("e-c", "c-c", 2.0, "prices")).encode(),
    ]
    outcomes = run(core, [item(v, "label", offset=i) for i, v in enumerate(values)])
    assert [type(o) for o in outcomes] == [Accepted, Rejected, Accepted]
    bad = outcomes[1]
    assert isinstance(bad, Rejected) and bad.reason is DlqReason.PROCESSING_ERROR
    assert "TypeError: '<' not supported" in bad.letter.detail
    assert bad.letter.source_offset == 1


# -- dedup claims ------------------------------------------------------------------------


def test_a_released_claim_lets_the_same_event_in_from_elsewhere(
    catalog: FeatureSetCatalog,
) -> None:
    core = make_core(catalog)
    raw = json.dumps(event("e-r", "c-r")).encode()

    async def scenario() -> list[Outcome]:
        first = item(raw, offset=1)
        [accepted] = await core.process([first])
        [again] = await core.process([item(raw, offset=1)])  # a retry: same owner
        [dup] = await core.process([item(raw, offset=2)])
        await core.release([first], [accepted])
        [replayed] = await core.process([item(raw, offset=3)])
        return [accepted, again, dup, replayed]

    accepted, again, dup, replayed = asyncio.run(scenario())
    assert isinstance(accepted, Accepted) and isinstance(again, Accepted)
    assert isinstance(dup, Rejected) and dup.reason is DlqReason.DUPLICATE
    assert isinstance(replayed, Accepted)
