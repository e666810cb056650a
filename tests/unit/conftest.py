"""Unit tests touch no network: any TCP/UDP ``connect`` fails loudly."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class SocketForbiddenError(RuntimeError):
    """A unit test tried to open a network connection."""


def _guard(sock: socket.socket, address: Any) -> None:
    if sock.family == socket.AF_UNIX:
        return
    raise SocketForbiddenError(
        f"unit tests may not open network connections (tried {address!r}); "
        "move this test to tests/integration and use the kafka / redis_server fixtures"
    )


def _connect(self: socket.socket, address: Any) -> None:
    _guard(self, address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _guard(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _connect_ex)
    yield
