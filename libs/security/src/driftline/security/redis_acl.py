"""Who may do what on Redis in secure mode: one ACL user per identity, from one table.

:data:`REDIS_GRANTS` is the single declaration; the redis-server's ACL file is generated
from it (:func:`acl_file_text`) and the tests check every row against a real server.
Only two services talk to Redis, each through its own key prefix:

==========  ===================  ==========================================================
identity    keys                 commands (and why)
==========  ===================  ==========================================================
features    ``dl:f:*``           the online store: its write and read Lua scripts
                                 (``EVALSHA``, ``SCRIPT LOAD``; inside them ``HMGET``,
                                 ``HSET``, ``PEXPIRE``), the generation marker
                                 ``dl:f:__generation__`` (``GET``, ``SET NX``), ``PING``
ingestion   ``dl:dedup:*``       the dedup window: ``SET NX PX GET`` claims, the release
                                 script (``EVALSHA``, ``SCRIPT EXISTS/LOAD``; inside it
                                 ``GET``, ``DEL``), ``PING`` (its readiness wait)
admin       every key            everything: the CLI and ops (``infra up`` readiness,
                                 ``FLUSHALL`` in drills, tests)
==========  ===================  ==========================================================

Serving reads features through the features service's gRPC API and training, the
registry and monitoring never touch Redis: they have no Redis user at all, so their
credentials do not even log in.  The ``default`` user (what a client that does not
``AUTH`` is) is switched off.  Redis runs a script's ``redis.call`` under the caller's
ACL, so the commands inside the scripts are granted too, and the keys a script is
given (``KEYS``) must match the caller's patterns.

Passwords are written as SHA-256 hashes (``#<hex>``), as ``ACL SAVE`` would: the file
(``0600`` in the server's state directory) holds no password in the clear.

>>> print(acl_line(REDIS_GRANTS[1], SecretStr("pw")))  # doctest: +NORMALIZE_WHITESPACE
user ingestion on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4
 resetkeys ~dl:dedup:* resetchannels -@all +ping +select +get +set +del +evalsha
 +script|load +script|exists
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from driftline.security.credentials import Credentials

__all__ = [
    "DEFAULT_USER_LINE",
    "REDIS_GRANTS",
    "REDIS_PASSWORD_FILE",
    "RedisGrant",
    "acl_file_text",
    "acl_line",
    "grant_for",
]

REDIS_PASSWORD_FILE = "redis.password"
"""The file under ``<credentials_dir>/<identity>/`` holding that identity's Redis password."""

DEFAULT_USER_LINE = "user default off resetkeys resetchannels -@all"
"""A client that does not log in is the ``default`` user: off, it may do nothing."""

_CONNECTION = ("+ping", "+select")
"""What every client sends besides its work: ``PING`` (readiness) and ``SELECT`` (a
``redis.db`` other than 0). ``AUTH`` and ``HELLO`` need no grant."""

_SCRIPTS = ("+evalsha", "+script|load", "+script|exists")
"""Running loaded Lua scripts: redis-py's pipelines check with ``SCRIPT EXISTS`` and load
with ``SCRIPT LOAD``; the store's own read path loads with ``SCRIPT LOAD`` on ``NOSCRIPT``.
``EVAL`` (sending a script's source each time) is used nowhere."""


@dataclass(frozen=True)
class RedisGrant:
    """One Redis ACL user: an identity (its certificate's CN, its credentials directory)
    and what it may touch."""

    identity: str
    keys: tuple[str, ...]
    """Key patterns (``~pattern``; ``%R~``/``%W~`` for read- or write-only)."""
    commands: tuple[str, ...]
    """ACL command rules (``+cmd``, ``+cmd|sub``, ``+@category``) after ``-@all``."""
    channels: tuple[str, ...] = ()
    """Pub/sub channel patterns (``&pattern``); none by default."""
    why: str = ""
    """What the identity uses Redis for (documentation and test failure messages)."""


REDIS_GRANTS: tuple[RedisGrant, ...] = (
    RedisGrant(
        "features",
        keys=("~dl:f:*",),
        commands=(*_CONNECTION, "+get", "+set", "+hmget", "+hset", "+pexpire", *_SCRIPTS),
        why="the online store: entity hashes dl:f:<featureset>:<entity> written and read "
        "by Lua scripts, and the generation marker dl:f:__generation__",
    ),
    RedisGrant(
        "ingestion",
        keys=("~dl:dedup:*",),
        commands=(*_CONNECTION, "+get", "+set", "+del", *_SCRIPTS),
        why="the dedup window: SET NX PX claims on dl:dedup:<event id>, a release script",
    ),
    RedisGrant(
        "admin",
        keys=("~*",),
        commands=("+@all",),
        channels=("&*",),
        why="the CLI and ops: readiness, drills (FLUSHALL), tests",
    ),
)
"""Every Redis user of the platform; an identity not listed has none."""


def grant_for(identity: str) -> RedisGrant | None:
    """The grant of ``identity``, None when it has no Redis user."""
    return next((g for g in REDIS_GRANTS if g.identity == identity), None)


def acl_line(grant: RedisGrant, password: SecretStr) -> str:
    """The ``user ...`` line of ``grant`` with ``password`` stored as its SHA-256 hash."""
    digest = hashlib.sha256(password.get_secret_value().encode("utf-8")).hexdigest()
    parts = [
        "user",
        grant.identity,
        "on",
        f"#{digest}",
        "resetkeys",
        *grant.keys,
        "resetchannels",
        *grant.channels,
        "-@all",
        *grant.commands,
    ]
    return " ".join(parts)


def acl_file_text(
    credentials_root: Path,
    grants: Iterable[RedisGrant] = REDIS_GRANTS,
    *,
    password_of: Callable[[str], SecretStr] | None = None,
) -> str:
    """The ACL file for ``grants``, each password read from
    ``<credentials_root>/<identity>/redis.password`` (or ``password_of(identity)``).

    A missing password is a :class:`~driftline.security.CredentialsError` naming the file.
    """

    def from_files(identity: str) -> SecretStr:
        return Credentials(credentials_root, identity).secret(REDIS_PASSWORD_FILE)

    lookup = password_of or from_files
    lines = [DEFAULT_USER_LINE]  # (an ACL file has no comments)
    lines += [acl_line(grant, lookup(grant.identity)) for grant in grants]
    return "\n".join(lines) + "\n"
