"""Build :class:`PlatformSettings` from keywords, environment and a YAML file.

Errors name the place at fault: ``driftline.yaml:7: serving.grpc_port: Input
should be less than or equal to 65535``, or the environment variable that set it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from driftline.settings.models import PlatformSettings

CONFIG_ENV = "DRIFTLINE_CONFIG"


class ConfigError(ValueError):
    """Settings that cannot be used; the message names file and line (or variable)."""


def read_yaml_with_lines(path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML and return ``(data, lines)``; ``lines`` maps a key path to its 1-based line.

    Raises :class:`ConfigError` with the line of a syntax error.
    """
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError(f"{path}:{line}: not valid YAML: {exc.problem}") from exc
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: yaml.Node | None, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key = (*prefix, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                key = (*prefix, str(i))
                lines[key] = item.start_mark.line + 1
                walk(item, key)

    walk(node, ())
    return data, lines


def locate(loc: tuple[str | int, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    """The line of the deepest prefix of ``loc`` that the file defines."""
    parts = tuple(str(p) for p in loc)
    for end in range(len(parts), 0, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return None


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _env_name(loc: tuple[str | int, ...]) -> str:
    return "DRIFTLINE_" + "__".join(str(p).upper() for p in loc)


def load_settings(config: Path | str | None = None, **overrides: Any) -> PlatformSettings:
    """Build settings; keywords beat ``DRIFTLINE_*`` variables, which beat the YAML file.

    ``config`` (or the ``DRIFTLINE_CONFIG`` variable) names an optional YAML file
    shaped like :class:`PlatformSettings`.  Raises :class:`ConfigError` naming the
    file and line, or the environment variable, of every bad value.
    """
    raw = config if config is not None else os.environ.get(CONFIG_ENV)
    path = Path(raw) if raw else None
    data: Any = {}
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (set by {CONFIG_ENV} or --config)")
        data, lines = read_yaml_with_lines(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:1: the config file must be a mapping of sections")
    file_data: dict[str, Any] = data

    class _Loaded(PlatformSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, file_data))

    try:
        return _Loaded(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) for p in loc)
            env = _env_name(loc)
            line = locate(loc, lines)
            if env in os.environ:
                where = f"environment variable {env}"
            elif line is not None and path is not None:
                where = f"{path}:{line}"
            elif path is not None:
                where = f"{path}"
            else:
                where = "settings"
            problems.append(f"{where}: {dotted}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from exc
