"""Signing, verification and the content-addressed store."""

from __future__ import annotations

from pathlib import Path

import pytest
from river import linear_model, preprocessing

from driftline.artifacts import ArtifactStore, digest, dump_model, load_model, sign, verify
from driftline.contracts.errors import IntegrityError, NotFoundError

KEY = "unit-test-key"


def _trained_model() -> object:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i in range(50):
        model.learn_one({"x": float(i), "y": float(i % 7)}, i % 2 == 0)
    return model


def test_round_trip_of_a_signed_river_pipeline() -> None:
    model = _trained_model()
    data = dump_model(model)
    loaded = load_model(data, digest(data), sign(data, KEY), KEY)
    x = {"x": 3.0, "y": 1.0}
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)  # type: ignore[attr-defined]


def test_one_flipped_byte_is_refused_before_unpickling() -> None:
    data = dump_model(_trained_model())
    sha, sig = digest(data), sign(data, KEY)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(IntegrityError, match="digest mismatch"):
        load_model(bytes(tampered), sha, sig, KEY)


def test_unsigned_artifact_is_refused() -> None:
    data = dump_model(_trained_model())
    for missing in ("", None):
        with pytest.raises(IntegrityError, match="unsigned"):
            load_model(data, digest(data), missing, KEY)


def test_signature_under_another_key_is_refused() -> None:
    data = b"payload"
    with pytest.raises(IntegrityError, match="invalid signature"):
        verify(data, digest(data), sign(data, "other-key"), KEY)


def test_tampered_bytes_with_recomputed_digest_fail_the_signature() -> None:
    data = b"payload"
    sig = sign(data, KEY)
    forged = b"pAyload"
    with pytest.raises(IntegrityError, match="invalid signature"):
        verify(forged, digest(forged), sig, KEY)


def test_pickle_payload_is_never_executed_when_verification_fails(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    data = dump_model(Exploit())
    with pytest.raises(IntegrityError):
        load_model(data, digest(data), None, KEY)
    assert not marker.exists()


def test_store_layout_atomic_put_and_verified_get(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = b"x" * 1000
    sha = store.put(data)
    path = tmp_path / "sha256" / sha[:2] / sha[2:]
    assert path.read_bytes() == data
    assert store.put(data) == sha  # idempotent
    assert store.get(sha) == data
    assert [p.name for p in path.parent.iterdir()] == [sha[2:]]  # no temp files left


def test_store_refuses_a_file_changed_on_disk(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sha = store.put(b"abcdef")
    path = store.path_of(sha)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="corrupt or tampered"):
        store.get(sha)


def test_store_unknown_digest_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        ArtifactStore(tmp_path).get("0" * 64)
