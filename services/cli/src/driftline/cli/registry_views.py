"""What ``driftline models list | show | register | promote | rollback | history`` do, as
plain functions.

Each takes the registry's ``target`` (``host:port``), an optional bearer ``token``
and the ``security`` settings (secure mode: mutual TLS as ``admin``, or
``security.identity``) and returns rows (lists of string dicts, ready for a table) or text;
errors are :class:`driftline.contracts.errors.DriftlineError` subclasses with a
message to print.  They are synchronous: each runs its own event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from driftline.registry_api.models import AliasChange, ModelSummary, ModelVersionInfo
from driftline.registry_client.client import RegistryClient
from driftline.registry_client.external import (
    PreparedVersion,
    Promote,
    TrainedOn,
    default_format,
    prepare_artifact,
    register_prepared,
)
from driftline.settings import SecuritySettings, locate, read_yaml_with_lines
from driftline.specs import SpecError, load_model_spec

__all__ = [
    "Row",
    "models_history",
    "models_list",
    "models_promote",
    "models_register",
    "models_rollback",
    "models_show",
    "prepare_registration",
]

Row = dict[str, str]
_T = TypeVar("_T")


def _run(
    target: str,
    token: str | None,
    action: Callable[[RegistryClient], Awaitable[_T]],
    security: SecuritySettings | None = None,
) -> _T:
    async def main() -> _T:
        client = RegistryClient(target, token=token, security=security, identity="admin")
        async with client:
            return await action(client)

    return asyncio.run(main())


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _version_row(v: ModelVersionInfo) -> Row:
    metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items()))
    return {
        "version": str(v.version),
        "aliases": ",".join(v.aliases),
        "framework": v.framework,
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


def _unserved_cell(m: ModelSummary) -> str:
    if not m.unserved_retrains:
        return ""
    last = m.unserved_retrains[-1]
    return f"{len(m.unserved_retrains)} (last {_time(last.at)}: {last.reason})"


def models_list(
    target: str,
    name: str | None = None,
    token: str | None = None,
    security: SecuritySettings | None = None,
) -> list[Row]:
    """Without ``name``: one row per model.  With ``name``: one row per version."""

    async def action(client: RegistryClient) -> list[Row]:
        if name is None:
            return [
                {
                    "model": m.name,
                    "latest": str(m.latest_version),
                    "aliases": ", ".join(f"{a}=v{n}" for a, n in sorted(m.aliases.items())),
                    "framework": m.framework,
                    "unserved retrains": _unserved_cell(m),
                }
                for m in await client.list_models()
            ]
        return [_version_row(v) for v in await client.list_versions(name)]

    return _run(target, token, action, security)


def models_show(
    target: str,
    name: str,
    version: int | None = None,
    alias: str | None = None,
    token: str | None = None,
    security: SecuritySettings | None = None,
) -> str:
    """Every recorded attribute of one version (latest when neither selector), as text."""

    async def action(client: RegistryClient) -> str:
        v = await client.get(name, version=version, alias=alias)
        libraries = ", ".join(f"{k} {val}" for k, val in sorted(v.library_versions.items()))
        lines = [
            f"{v.name} v{v.version}  [{v.status}]  aliases: {', '.join(v.aliases) or '-'}",
            f"created   {_time(v.created_at)} by {v.created_by or '-'}",
            f"framework {v.framework}" + (f" ({libraries})" if libraries else ""),
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
        summary = next((m for m in await client.list_models() if m.name == name), None)
        if summary is not None and summary.unserved_retrains:
            lines.append(
                f"unserved  {len(summary.unserved_retrains)} retrain request(s) since "
                f"v{summary.latest_version} (Driftline cannot retrain it; register a new version):"
            )
            for u in summary.unserved_retrains:
                drift = f" drift {', '.join(u.drift_ids)}" if u.drift_ids else ""
                lines.append(f"          {_time(u.at)} {u.request_id}: {u.reason}{drift}")
        return "\n".join(lines)

    return _run(target, token, action, security)


def prepare_registration(
    name: str,
    spec_path: Path,
    artifact_path: Path,
    *,
    framework: str | None = None,
    artifact_format: str | None = None,
    featuresets_dir: Path | None = None,
) -> PreparedVersion:
    """Read and check a model spec YAML and an artifact file, on this side, before upload.

    Raises :class:`SpecError` (``file:line: where: what``) for a spec that does not load,
    is for another model or names another framework, and
    :class:`driftline.contracts.errors.InvalidArgumentError` for an artifact that does not
    fit its spec (a scikit-learn estimator is loaded here: it is the caller's own file).
    """
    spec = load_model_spec(spec_path)
    data, lines = read_yaml_with_lines(spec_path)

    def at(key: str) -> str:
        return f"{spec_path}:{locate((key,), lines) or 1}: {key}"

    if spec.name != name:
        raise SpecError(f"{at('name')}: the spec is for model {spec.name!r}, not {name!r}")
    if framework is not None and framework != spec.framework:
        named = isinstance(data, dict) and "framework" in data
        said = f"says framework {spec.framework!r}" if named else "names no framework (river)"
        raise SpecError(
            f"{at('framework')}: the spec {said}, but --framework says {framework!r}; "
            f"write `framework: {framework}` in the spec"
        )
    if spec.framework == "river":
        raise SpecError(
            f"{at('framework')}: River models are trained by Driftline from their spec; "
            "register a model trained elsewhere with framework sklearn, onnx or python"
        )
    fmt = artifact_format or default_format(spec.framework, artifact_path)
    return prepare_artifact(
        spec, artifact_path.read_bytes(), artifact_format=fmt, featuresets=featuresets_dir
    )


def models_register(
    target: str,
    prepared: PreparedVersion,
    *,
    promote: Promote | None = None,
    trained_on: str = "",
    metrics: dict[str, float] | None = None,
    actor: str = "cli",
    token: str | None = None,
    security: SecuritySettings | None = None,
) -> str:
    """Upload a prepared version (and promote it); what was registered, as text."""

    async def action(client: RegistryClient) -> str:
        done = await register_prepared(
            client,
            prepared,
            promote=promote,
            trained_on=TrainedOn(export=trained_on) if trained_on else None,
            metrics=metrics,
            actor=actor,
        )
        v = done.version
        libraries = ", ".join(f"{k} {val}" for k, val in sorted(v.library_versions.items()))
        lines = [
            f"registered {v.name} v{v.version}  sha256 {v.sha256}",
            f"  {v.framework} ({v.artifact_format}, {v.size_bytes} bytes); {libraries or '-'}",
        ]
        if done.alias is not None:
            before = f"v{done.previous_version}" if done.previous_version else "unset"
            lines.append(f"  {v.name}:{done.alias} -> v{v.version} (was {before})")
        return "\n".join(lines)

    return _run(target, token, action, security)


def models_promote(
    target: str,
    name: str,
    version: int,
    alias: str = "champion",
    *,
    actor: str = "cli",
    reason: str = "",
    token: str | None = None,
    security: SecuritySettings | None = None,
) -> str:
    """Point ``alias`` at ``version``; returns a one-line summary."""

    async def action(client: RegistryClient) -> str:
        change, _ = await client.set_alias(
            name, alias, version, actor=actor, reason=reason or "promoted from the CLI"
        )
        before = f"v{change.previous_version}" if change.previous_version else "unset"
        return f"{name}:{alias} -> v{change.version} (was {before})"

    return _run(target, token, action, security)


def models_rollback(
    target: str,
    name: str,
    alias: str = "champion",
    *,
    as_of: datetime | None = None,
    actor: str = "cli",
    reason: str = "",
    token: str | None = None,
    security: SecuritySettings | None = None,
) -> str:
    """Roll ``alias`` back (to its previous version, or where it pointed at ``as_of``)."""

    async def action(client: RegistryClient) -> str:
        change, _ = await client.rollback(
            name, alias=alias, as_of=as_of, actor=actor, reason=reason or "rolled back from the CLI"
        )
        return f"{name}:{alias} rolled back to v{change.version} (was v{change.previous_version})"

    return _run(target, token, action, security)


def models_history(
    target: str,
    name: str,
    alias: str = "",
    limit: int = 0,
    token: str | None = None,
    security: SecuritySettings | None = None,
) -> list[Row]:
    """Alias changes of ``name``, oldest first."""

    async def action(client: RegistryClient) -> list[Row]:
        return [_change_row(c) for c in await client.history(name, alias, limit)]

    return _run(target, token, action, security)
