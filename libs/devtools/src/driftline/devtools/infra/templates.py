"""Rendering of the ``infra/*.template`` files (``{name}`` placeholders, nothing else),
and writing the generated YAML configurations of the ops stack.

>>> render_template("port {port}", {"port": 6379})
'port 6379'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from driftline.devtools.infra.errors import InfraError

__all__ = [
    "PLACEHOLDER",
    "TemplateError",
    "render_template",
    "render_template_file",
    "write_atomic",
    "write_yaml",
]

PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
"""A placeholder: ``{lower_snake_name}``; other braces are left alone."""


class TemplateError(InfraError):
    """A placeholder has no value, or a value was given that no placeholder uses."""


def render_template(text: str, values: Mapping[str, object], *, source: str = "template") -> str:
    """Substitute every ``{name}`` in ``text``; raise :class:`TemplateError` on a gap or extra."""
    used = set(PLACEHOLDER.findall(text))
    missing = sorted(used - values.keys())
    if missing:
        raise TemplateError(f"{source}: no value for placeholder(s) {', '.join(missing)}")
    unused = sorted(values.keys() - used)
    if unused:
        raise TemplateError(f"{source}: value(s) given for unknown placeholder(s) {unused}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def render_template_file(template: Path, target: Path, values: Mapping[str, object]) -> Path:
    """Render ``template`` into ``target`` (parents created, written atomically)."""
    text = render_template(template.read_text(encoding="utf-8"), values, source=str(template))
    return write_atomic(target, text)


def write_atomic(target: Path, text: str) -> Path:
    """Write ``text`` to ``target`` (parents created) through a temporary file and a rename.

    A process reading ``target`` meanwhile sees the old or the new file, never half of one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def write_yaml(target: Path, data: Mapping[str, Any], *, header: str = "") -> Path:
    """Write ``data`` as YAML (keys in the given order) after the ``header`` comment lines."""
    body = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)
    return write_atomic(target, header + body)
