"""Loopback ports: parsing ``host:port``, checking one is free, picking free ones."""

from __future__ import annotations

import errno
import random
import socket
from collections import OrderedDict

from driftline.devtools.infra.errors import PortInUseError

__all__ = ["ensure_port_free", "free_port", "free_ports", "parse_host_port", "port_is_free"]


def parse_host_port(address: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split ``host:port`` (first entry of a comma-separated list; ``[v6]:port`` allowed).

    >>> parse_host_port("127.0.0.1:9092,other:9092")
    ('127.0.0.1', 9092)
    >>> parse_host_port(":19092")
    ('127.0.0.1', 19092)
    """
    first = address.split(",")[0].strip()
    host, sep, port_text = first.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{address!r}: port {port} is out of range")
    host = host.strip("[]") or default_host
    return host, port


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP server could bind ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def ensure_port_free(host: str, port: int, *, what: str, setting: str) -> None:
    """Raise :class:`PortInUseError` naming ``setting`` when ``host:port`` is taken."""
    if not port_is_free(host, port):
        raise PortInUseError(
            f"port {port} on {host} (for {what}) is already in use by another process; "
            f"stop that process or choose another port with {setting}",
            host=host,
            port=port,
            setting=setting,
        )


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: OrderedDict[int, None] = OrderedDict()
"""Ports :func:`free_port` gave out in this process, newest last (at most
:data:`_REMEMBERED`): a port is free until its server binds it, so two calls made
before either server started (a broker's port, then a service's) must not return
the same one."""

_REMEMBERED = 4096


def free_port(host: str = "127.0.0.1", *, exclude: frozenset[int] = frozenset()) -> int:
    """A port free on ``host`` now, outside the kernel's ephemeral range (for tests and benches),
    and not given out by an earlier call of this process.

    A port from the ephemeral range (what binding port 0 returns) can be taken
    by any outgoing connection -- a Kafka client's, say -- between the moment it
    is picked and the moment its server binds it; a random port below that
    range is only taken by another server.
    """
    low = max(_ephemeral_low(), 11000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, low)
        if port not in exclude and port not in _HANDED_OUT and port_is_free(host, port):
            return _hand_out(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:  # the low range is crowded: fall back to the kernel's choice
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            picked: int = sock.getsockname()[1]
        if picked not in exclude and picked not in _HANDED_OUT:
            return _hand_out(picked)


def _hand_out(port: int) -> int:
    _HANDED_OUT[port] = None
    while len(_HANDED_OUT) > _REMEMBERED:
        _HANDED_OUT.popitem(last=False)
    return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now (see :func:`free_port`)."""
    chosen: list[int] = []
    while len(chosen) < count:
        chosen.append(free_port(host, exclude=frozenset(chosen)))
    return chosen
