from __future__ import annotations

from pathlib import Path

import pytest

from driftline.settings import ConfigError, PlatformSettings, load_settings


def test_defaults_are_the_design_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.controller_port == 9093
    assert s.redis.port == 6379
    assert (s.features.grpc_port, s.registry.grpc_port, s.serving.grpc_port) == (
        50051,
        50052,
        50053,
    )
    admin = [
        s.ingestion.admin.port,
        s.features.admin.port,
        s.training.admin.port,
        s.registry.admin.port,
        s.serving.admin.port,
        s.monitoring.admin.port,
    ]
    assert admin == [8081, 8082, 8083, 8084, 8085, 8086]


def test_yaml_error_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: 'h:1'\nserving:\n  grpc_port: 70000\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"{cfg}:4: serving.grpc_port" in str(err.value)


def test_unknown_key_is_rejected_with_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("redis:\n  host: localhost\n  prot: 6380\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"{cfg}:3: redis.prot" in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("redis:\n  host: [unclosed\n  port: 1\n")
    with pytest.raises(ConfigError, match=rf"{cfg}:\d+: not valid YAML"):
        load_settings(cfg)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_environment_beats_file_and_keywords_beat_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("redis:\n  port: 7000\n  host: filehost\n")
    monkeypatch.setenv("DRIFTLINE_REDIS__PORT", "7001")
    s = load_settings(cfg)
    assert (s.redis.host, s.redis.port) == ("filehost", 7001)
    s = load_settings(cfg, redis={"port": 7002})
    assert s.redis.port == 7002


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_SERVING__GRPC_PORT", "many")
    with pytest.raises(ConfigError, match="environment variable DRIFTLINE_SERVING__GRPC_PORT"):
        load_settings()


def test_config_env_variable_points_at_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: 'k:19092'\n")
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(cfg))
    assert load_settings().kafka.bootstrap_servers == "k:19092"


def test_every_field_is_documented() -> None:
    def walk(model: type, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            if not field.description:
                missing.append(prefix + name)
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                missing += walk(ann, f"{prefix}{name}.")
        return missing

    assert walk(PlatformSettings, "") == []


def test_the_moved_record_limit_names_its_new_place(tmp_path: Path) -> None:
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text("ingestion:\n  max_record_bytes: 1000\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "moved to kafka.max_record_bytes" in str(err.value)
    assert f"{cfg}:1: ingestion" in str(err.value)


def test_every_size_limit_follows_the_one_record_limit() -> None:
    small = PlatformSettings(kafka={"max_record_bytes": 64 * 1024}).kafka
    big = PlatformSettings(kafka={"max_record_bytes": 2 * 1024 * 1024}).kafka
    # The floor is Kafka's own default message size, so existing topics keep working.
    assert small.max_message_bytes == 1024 * 1024
    # A record at the limit, base64-encoded in a dead letter with its detail, still fits.
    for kafka in (small, big):
        assert kafka.max_message_bytes >= kafka.max_record_bytes * 4 // 3 + 4096
    assert big.max_message_bytes == 8 * 1024 * 1024
