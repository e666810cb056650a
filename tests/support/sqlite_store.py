"""A second online store, written as an outside package would write one: SQLite.

It uses only the public extension point (:mod:`driftline.online_store`): an
:class:`OnlineStore` subclass, its own settings model and an
:class:`OnlineStoreType` registered under ``sqlite``, so that
``features.online_store: {type: sqlite, path: ...}`` chooses it.  The tests run
the shared conformance suite on it, which is what shows that a store is added by
a class and a setting, with no edit to the features service.

Event-time monotonic writes are one upsert whose ``WHERE`` keeps a newer stored
value; the generation marker is a row of its own table, so it is deleted with
the data when the database file is.  SQLite calls are synchronous: fine for a
test store on a local file, not for a production one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from driftline.online_store import (
    EntityWrite,
    FeatureRead,
    GenerationMarker,
    OnlineStore,
    OnlineStoreType,
    StoreUnavailable,
    register_online_store,
)
from driftline.online_store.base import MISSING, classify
from driftline.settings import PlatformSettings
from driftline.specs import FeatureSetSpec

__all__ = ["SQLITE", "SqliteOnlineStore", "SqliteStoreSettings", "register"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    featureset TEXT NOT NULL, entity TEXT NOT NULL, name TEXT NOT NULL,
    t_us INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (featureset, entity, name)
);
CREATE TABLE IF NOT EXISTS generation (id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT);
"""

_UPSERT = """
INSERT INTO features (featureset, entity, name, t_us, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (featureset, entity, name) DO UPDATE SET t_us = excluded.t_us, value = excluded.value
WHERE excluded.t_us >= features.t_us
"""


class SqliteStoreSettings(BaseModel):
    """Parameters of ``features.online_store`` when its ``type`` is ``sqlite``."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    """The database file (created if missing)."""
    timeout_s: float = Field(default=5.0, gt=0)
    """How long a call waits for a lock held by another connection."""


class _SqliteMarker(GenerationMarker):
    def __init__(self, store: SqliteOnlineStore) -> None:
        self._store = store

    async def read(self) -> str | None:
        with self._store.transaction() as db:
            row = db.execute("SELECT token FROM generation WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    async def claim(self, token: str) -> str:
        with self._store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO generation (id, token) VALUES (1, ?)", (token,))
            row = db.execute("SELECT token FROM generation WHERE id = 1").fetchone()
        return str(row[0])


class SqliteOnlineStore(OnlineStore):
    """Feature values as rows ``(featureset, entity, name) -> (event time, JSON value)``."""

    def __init__(self, path: Path, *, timeout_s: float = 5.0) -> None:
        self.where = f"SQLite at {path}"
        self._db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self.generation_marker = _SqliteMarker(self)

    def transaction(self) -> _Transaction:
        """The connection inside one transaction; a SQLite error becomes StoreUnavailable."""
        return _Transaction(self._db, self.where)

    async def write(self, featureset: str, writes: Sequence[EntityWrite]) -> None:
        rows = [
            (featureset, w.entity_id, name, t_us, json.dumps(value))
            for w in writes
            for name, (value, t_us) in w.values.items()
        ]
        with self.transaction() as db:
            db.executemany(_UPSERT, rows)

    async def read(
        self,
        featureset: FeatureSetSpec,
        entity_ids: Sequence[str],
        names: Sequence[str],
        now: float,
    ) -> list[list[FeatureRead]]:
        if not entity_ids:
            return []
        wanted = sorted(set(entity_ids))
        marks = ",".join("?" * len(wanted))
        with self.transaction() as db:
            found = db.execute(
                f"SELECT entity, name, t_us, value FROM features "
                f"WHERE featureset = ? AND entity IN ({marks})",
                (featureset.name, *wanted),
            ).fetchall()
        stored = {(entity, name): (t_us, value) for entity, name, t_us, value in found}
        out = []
        for entity_id in entity_ids:
            row = []
            for name in names:
                hit = stored.get((entity_id, name))
                if hit is None:
                    row.append(MISSING)
                else:
                    row.append(classify(json.loads(hit[1]), hit[0], featureset.ttl, now))
            out.append(row)
        return out

    async def ping(self) -> None:
        with self.transaction() as db:
            db.execute("SELECT 1")

    async def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection, where: str) -> None:
        self._db, self._where = db, where

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self._where}: {exc}") from exc
        return self._db

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self._db.execute("COMMIT")
            return
        self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailable(f"{self._where}: {exc}") from exc


def _create(params: SqliteStoreSettings, platform: PlatformSettings) -> SqliteOnlineStore:
    return SqliteOnlineStore(params.path, timeout_s=params.timeout_s)


SQLITE = OnlineStoreType(SqliteStoreSettings, _create)
"""The ``sqlite`` store type (what a package would name in its entry point)."""


def register() -> None:
    """Register :data:`SQLITE` as ``sqlite`` (again, if a test already did)."""
    register_online_store("sqlite", SQLITE, replace=True)
