"""What ``driftline models list | show | promote | rollback | history`` do, as plain functions.

Each takes the registry's ``target`` (``host:port``) and optional bearer
``token`` and returns rows (lists of string dicts, ready for a table) or text;
errors are :class:`driftline.contracts.errors.DriftlineError` subclasses with a
message to print.  They are synchronous: each runs its own event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from driftline.registry_client.client import RegistryClient
from driftline.registry_client.models import AliasChange, ModelVersionInfo

__all__ = [
    "Row",
    "models_history",
    "models_list",
    "models_promote",
    "models_rollback",
    "models_show",
]

Row = dict[str, str]
_T = TypeVar("_T")


def _run(target: str, token: str | None, action: Callable[[RegistryClient], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        async with RegistryClient(target, token=token) as client:
            return await action(client)

    return asyncio.run(main())


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _version_row(v: ModelVersionInfo) -> Row:
    metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items()))
    return {
        "version": str(v.version),
        "aliases": ",".join(v.aliases),
        "status": v.status,
        "created": _time(v.created_at),
        "by": v.created_by,
        "metrics": metrics,
        "trigger": v.trigger_id or "",
        "sha256": v.sha256[:12],
    }


def _change_row(c: AliasChange) -> Row:
    return {
        "at": _time(c.changed_at),
        "alias": c.alias,
        "kind": c.kind,
        "from": "" if c.previous_version is None else str(c.previous_version),
        "to": "" if c.version is None else str(c.version),
        "actor": c.actor,
        "reason": c.reason,
        "trigger": c.trigger_id,
    }


def models_list(target: str, name: str | None = None, token: str | None = None) -> list[Row]:
    """Without ``name``: one row per model.  With ``name``: one row per version."""

    async def action(client: RegistryClient) -> list[Row]:
        if name is None:
            return [
                {
                    "model": m.name,
                    "latest": str(m.latest_version),
                    "aliases": ", ".join(f"{a}=v{n}" for a, n in sorted(m.aliases.items())),
                }
                for m in await client.list_models()
            ]
        return [_version_row(v) for v in await client.list_versions(name)]

    return _run(target, token, action)


def models_show(
    target: str,
    name: str,
    version: int | None = None,
    alias: str | None = None,
    token: str | None = None,
) -> str:
    """Every recorded attribute of one version (latest when neither selector), as text."""

    async def action(client: RegistryClient) -> str:
        v = await client.get(name, version=version, alias=alias)
        lines = [
            f"{v.name} v{v.version}  [{v.status}]  aliases: {', '.join(v.aliases) or '-'}",
            f"created   {_time(v.created_at)} by {v.created_by or '-'}",
            f"artifact  {v.artifact_format or '-'}, {v.size_bytes} bytes, sha256 {v.sha256}",
            f"signature {v.signature} (key id {v.signature_key_id or '-'})",
            "metrics   "
            + (", ".join(f"{k}={val:.6g}" for k, val in sorted(v.metrics.items())) or "-"),
        ]
        if v.lineage is not None:
            lin = v.lineage
            lines.append(
                f"lineage   featureset {lin.featureset} v{lin.featureset_version}, "
                f"{lin.examples} examples, parent {lin.parent_version or '-'}, "
                f"trigger {lin.trigger_id or '-'}"
            )
            if lin.event_time_from or lin.event_time_to:
                start = lin.event_time_from.isoformat() if lin.event_time_from else "…"
                end = lin.event_time_to.isoformat() if lin.event_time_to else "…"
                lines.append(f"          event time {start} .. {end}")
            for r in lin.offsets:
                lines.append(f"          {r.topic}[{r.partition}] offsets {r.first}..{r.last}")
        if v.drift_ids:
            lines.append(f"drift     {', '.join(v.drift_ids)}")
        if v.params:
            lines.append(f"params    {json.dumps(v.params, sort_keys=True)}")
        if v.tags:
            lines.append(f"tags      {json.dumps(v.tags, sort_keys=True)}")
        if v.spec:
            lines.append(f"spec      {json.dumps(v.spec, sort_keys=True)}")
        return "\n".join(lines)

    return _run(target, token, action)


def models_promote(
    target: str,
    name: str,
    version: int,
    alias: str = "champion",
    *,
    actor: str = "cli",
    reason: str = "",
    token: str | None = None,
) -> str:
    """Point ``alias`` at ``version``; returns a one-line summary."""

    async def action(client: RegistryClient) -> str:
        change, _ = await client.set_alias(
            name, alias, version, actor=actor, reason=reason or "promoted from the CLI"
        )
        before = f"v{change.previous_version}" if change.previous_version else "unset"
        return f"{name}:{alias} -> v{change.version} (was {before})"

    return _run(target, token, action)


def models_rollback(
    target: str,
    name: str,
    alias: str = "champion",
    *,
    as_of: datetime | None = None,
    actor: str = "cli",
    reason: str = "",
    token: str | None = None,
) -> str:
    """Roll ``alias`` back (to its previous version, or where it pointed at ``as_of``)."""

    async def action(client: RegistryClient) -> str:
        change, _ = await client.rollback(
            name, alias=alias, as_of=as_of, actor=actor, reason=reason or "rolled back from the CLI"
        )
        return f"{name}:{alias} rolled back to v{change.version} (was v{change.previous_version})"

    return _run(target, token, action)


def models_history(
    target: str, name: str, alias: str = "", limit: int = 0, token: str | None = None
) -> list[Row]:
    """Alias changes of ``name``, oldest first."""

    async def action(client: RegistryClient) -> list[Row]:
        return [_change_row(c) for c in await client.history(name, alias, limit)]

    return _run(target, token, action)
