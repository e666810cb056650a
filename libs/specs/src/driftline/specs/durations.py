"""Durations written as ``30s``, ``5m``, ``1h``, ``7d``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration; a bare number is seconds.

    >>> parse_duration("5m"), parse_duration("1h"), parse_duration(90)
    (300.0, 3600.0, 90.0)
    """
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or text like '5m'")
    if isinstance(text, int | float):
        if text <= 0:
            raise ValueError("a duration must be positive")
        return float(text)
    m = _PATTERN.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 5m, 1h or 7d")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise ValueError("a duration must be positive")
    return value
