"""The models this replica serves, by name and alias, and how they are swapped.

A new version is loaded completely (downloaded, verified, deserialised by the
runtime of its framework) before one reference is replaced, so requests never
wait for a load and never see half a model: a request that picked the old
champion finishes with it; the next one gets the new one. asyncio runs one task
at a time, so replacing the alias dict in a single assignment is the whole swap.

A registered version starts loading at once (:meth:`ModelTable.prefetch`): a
promotion follows a registration closely, and when it comes the version is in
memory or on its way, so the swap waits for no more than the rest of that load.

A promotion to a version that cannot be loaded (none such, a tampered artifact,
one its framework's runtime cannot load) changes nothing: the version served
before keeps serving, and a model name appears in the table only once the
registry lists it or one of its versions loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext

from driftline.contracts.errors import DriftlineError, NotFoundError, UnavailableError
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.serving.canary import CanarySetting
from driftline.serving.loaded_model import LoadedModel
from driftline.serving.model_source import ModelSource
from driftline.telemetry.loop import MODEL_NAME, MODEL_VERSION

__all__ = ["ALIAS_DELETED", "FOLLOWED_ALIASES", "FirstAnswers", "ModelTable", "ServedModel"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("driftline.serving")

FOLLOWED_ALIASES: tuple[str, ...] = ("champion", "challenger", "shadow")
"""Aliases serving keeps loaded and follows on ``driftline.models``."""

ALIAS_DELETED = 0
"""The version of an ``alias_set`` event that removes the alias (the registry's
encoding on ``driftline.models``: versions start at 1)."""

_PREFETCHED = 2
"""Prefetched versions kept per model until promoted (older ones are dropped)."""

NOT_FOUND_RETRIES_S: tuple[float, ...] = (0.2, 0.5, 1.0)
"""Pauses before asking the registry again for a version it said it does not have.

The registry answers from its own reading of ``driftline.models``, and serving reads
the same log: a version serving has just read about (its registration, then its
promotion a few milliseconds later) can be asked for before the registry has read it
back, and the first answer is NOT_FOUND.  Taking that answer as final dropped such a
promotion for good (serving kept the previous champion while the registry named the
new one); a version that really does not exist is refused after these ~1.7 s."""


class FirstAnswers:
    """Swaps waiting for the first request their version answers, to join it to their trace.

    The retraining loop's trace ends where serving swaps the promoted version in
    (under the span of the ``driftline.models`` record); the first request that
    version answers belongs to its caller's trace.  A span ``first prediction
    <model> v<N>`` in the swap's trace, linked to that request's span, joins the two
    (:data:`~driftline.telemetry.loop`).  Only sampled swaps wait; the oldest of
    more than ``capacity`` (versions never asked for) are forgotten.
    """

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._waiting: OrderedDict[tuple[str, int], SpanContext] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def expect(self, name: str, version: int) -> None:
        """Remember the current span (a swap's) as the parent of ``version``'s first answer."""
        swap = trace.get_current_span().get_span_context()
        if not (swap.is_valid and swap.trace_flags.sampled):
            return  # swapped at start-up, or not sampled: nothing to join
        self._waiting[(name, version)] = swap
        self._waiting.move_to_end((name, version))
        while len(self._waiting) > self.capacity:
            self._waiting.popitem(last=False)

    def answered(self, name: str, version: int, request_id: str) -> None:
        """``version`` answered ``request_id`` in the current span: if it is its first
        answer since a traced swap, record that in the swap's trace."""
        swap = self._waiting.pop((name, version), None)
        if swap is None:
            return
        request = trace.get_current_span().get_span_context()
        span = _tracer.start_span(
            f"first prediction {name} v{version}",
            context=trace.set_span_in_context(NonRecordingSpan(swap)),
            links=[Link(request)] if request.is_valid else None,
            attributes={
                MODEL_NAME: name,
                MODEL_VERSION: version,
                "driftline.request_id": request_id,
            },
        )
        span.end()


@dataclass
class ServedModel:
    """One model name: its loaded aliases, its canary and recently pinned versions."""

    name: str
    canary: CanarySetting
    aliases: dict[str, LoadedModel] = field(default_factory=dict)
    pinned: OrderedDict[int, LoadedModel] = field(default_factory=OrderedDict)
    prefetched: OrderedDict[int, LoadedModel] = field(default_factory=OrderedDict)
    """Registered versions loaded ahead of a promotion (the newest few)."""

    def loaded(self, version: int) -> LoadedModel | None:
        """A version already in memory (under an alias, pinned or prefetched), if any."""
        for m in self.aliases.values():
            if m.version == version:
                return m
        return self.pinned.get(version) or self.prefetched.get(version)


class ModelTable:
    """Every served model; the core asks it which :class:`LoadedModel` answers a request."""

    def __init__(
        self,
        source: ModelSource,
        *,
        only: Sequence[str] = (),
        pinned_cache_size: int = 8,
        canary: CanarySetting | None = None,
        on_change: Callable[[], None] | None = None,
        on_load: Callable[[str], None] | None = None,
    ) -> None:
        self._source = source
        self._only = frozenset(only)
        self._pinned_cache_size = pinned_cache_size
        self._default_canary = canary or CanarySetting()
        self._on_change = on_change
        self._on_load = on_load
        self._models: dict[str, ServedModel] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[LoadedModel]] = {}
        self.first_answers = FirstAnswers()
        """Traced swaps waiting for their version's first answer (the core reports it)."""
        self.synced = False
        """True once the registry's current aliases have been loaded at least once."""

    # -- reading (request path) -------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Served model names, sorted."""
        return sorted(self._models)

    @property
    def ready(self) -> bool:
        """True when at least one model has a champion loaded."""
        return any("champion" in m.aliases for m in self._models.values())

    def follows(self, name: str) -> bool:
        """Whether this replica serves model ``name`` (every model when no list is configured)."""
        return not self._only or name in self._only

    def get(self, name: str) -> ServedModel:
        """The served model ``name``.

        An empty name means the only served model. Raises :class:`UnavailableError`
        before the first registry sync and :class:`NotFoundError` for a name not served.
        """
        served = self._models.get(name)
        if served is not None:
            return served
        if not name and len(self._models) == 1:
            return next(iter(self._models.values()))
        if not self.synced:
            raise UnavailableError(
                "serving has not loaded its models from the registry yet; retry shortly"
            )
        if not name:
            raise NotFoundError(
                "no model_name given and this server serves "
                f"{len(self._models)} models ({', '.join(self.names) or 'none'}); name one"
            )
        raise NotFoundError(
            f"model {name!r} is not served here; served models: {', '.join(self.names) or 'none'}"
        )

    def alias(self, name: str, alias: str) -> LoadedModel:
        """The version loaded under ``alias``.

        Raises :class:`UnavailableError` when the model has no champion loaded yet,
        :class:`NotFoundError` when another alias is not set.
        """
        served = self.get(name)
        model = served.aliases.get(alias)
        if model is not None:
            return model
        if alias == "champion":
            raise UnavailableError(
                f"model {served.name!r} has no champion loaded yet; promote a version "
                "(driftline models promote) or retry shortly"
            )
        raise NotFoundError(
            f"model {served.name!r} has no {alias!r} alias loaded; loaded aliases: "
            f"{', '.join(sorted(served.aliases)) or 'none'}"
        )

    async def version(self, name: str, version: int) -> LoadedModel:
        """A pinned version: from memory, or loaded once from the registry and cached (LRU)."""
        served = self.get(name)
        found = served.loaded(version)
        if found is not None:
            if version in served.pinned:
                served.pinned.move_to_end(version)
            return found
        model = await asyncio.shield(self._load(served.name, version))
        served.pinned[version] = model
        while len(served.pinned) > self._pinned_cache_size:
            served.pinned.popitem(last=False)
        return model

    def _load(self, name: str, version: int) -> asyncio.Future[LoadedModel]:
        """The one load of ``name`` v``version`` in flight (started if there is none)."""
        key = (name, version)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._source.load(name, version=version))
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        return pending

    # -- changing (lifecycle) ---------------------------------------------------------

    async def warm_up(self) -> None:
        """Pay the model source's one-off start-up costs (see :meth:`ModelSource.warm_up`)."""
        await self._source.warm_up()

    def prefetch(self, name: str, version: int) -> None:
        """Start loading a just-registered version in the background; returns at once.

        Its promotion, if it comes, then finds it loaded (or joins the load in
        flight). A failed prefetch is logged; the promotion loads it again.
        """
        known = self._models.get(name)
        in_memory = known is not None and known.loaded(version) is not None
        if in_memory or (name, version) in self._pending:
            return

        def keep(done: asyncio.Future[LoadedModel]) -> None:
            if done.cancelled():
                return
            exc = done.exception()
            if exc is not None:
                log.warning("prefetch of model %r v%d failed (retried if it is promoted): %s",
                            name, version, exc)  # fmt: skip
                return
            # The model is listed from its first loaded version on: a registration of a
            # model the registry does not have must not add a name to the table.
            new = name not in self._models
            served = self._served(name)
            served.prefetched[version] = done.result()
            while len(served.prefetched) > _PREFETCHED:
                served.prefetched.popitem(last=False)
            if new:
                self._changed()

        self._load(name, version).add_done_callback(keep)

    def set_canary(self, name: str, canary: CanarySetting) -> ServedModel:
        """Replace the canary of model ``name``."""
        served = self.get(name)
        served.canary = canary
        return served

    def _served(self, name: str) -> ServedModel:
        served = self._models.get(name)
        if served is None:
            served = ServedModel(name, self._default_canary)
            self._models[name] = served
        return served

    async def sync(self) -> None:
        """Load every followed alias of every served model as the registry has them now.

        Raises :class:`UnavailableError` when the registry cannot be reached, or a
        version cannot be loaded because the registry or the feature store is down
        (call it again: what loaded stays loaded); a version that fails to load for
        good (missing, tampered, not deserialisable) is logged and skipped.
        """
        listing = await self._source.list_models()
        for name, aliases in sorted(listing.items()):
            if not self.follows(name):
                continue
            self._served(name)
            for alias, version in sorted(aliases.items()):
                if alias in FOLLOWED_ALIASES or alias == self._models[name].canary.alias:
                    try:
                        await self._swap_in(name, alias, version)
                    except UnavailableError:
                        # The registry or the feature store is not up yet: the whole sync
                        # is tried again (what loaded stays), rather than serving without
                        # this champion until its next promotion.
                        raise
                    except DriftlineError as exc:
                        log.error("cannot load model %r v%d for %r: %s", name, version, alias,
                                  exc.message)  # fmt: skip
                    except Exception:
                        # An artifact that verifies but does not unpickle must not stop
                        # the others from loading.
                        log.exception("cannot deserialize model %r v%d for %r", name, version,
                                      alias)  # fmt: skip
        for name in self._only:
            self._served(name)
        self.synced = True
        self._changed()

    async def point(self, name: str, alias: str, version: int) -> bool:
        """Load ``version`` (unless in memory) and then swap it in under ``alias``.

        Returns whether the alias now points at ``version``; a failed load leaves
        the previous version serving and is logged.
        """
        try:
            return await self._swap_in(name, alias, version)
        except DriftlineError as exc:
            log.error("cannot load model %r v%d for %r: %s", name, version, alias, exc.message)
        except Exception:
            # An artifact that verifies but does not unpickle (a River class
            # missing here, say) must not stop the others from loading.
            log.exception("cannot deserialize model %r v%d for %r", name, version, alias)
        return False

    async def _swap_in(self, name: str, alias: str, version: int) -> bool:
        """:meth:`point`, raising what the load raised (nothing changes then)."""
        served = self._models.get(name)
        current = served.aliases.get(alias) if served is not None else None
        if current is not None and current.version == version:
            return True
        model = served.loaded(version) if served is not None else None
        if model is not None and served is not None and served.prefetched.get(version) is model:
            self._loaded("loaded")  # loaded ahead, for this promotion
        elif model is None:
            try:
                model = await self._load_named(name, version)
            except Exception:
                self._loaded("failed")
                raise
            self._loaded("loaded")
        # Created only now that it has a version to serve (see the module docstring);
        # read again: the table may have changed during the load.
        served = self._served(name)
        current = served.aliases.get(alias)
        # The swap: one assignment of a new dict; readers hold the old one or the new one.
        served.aliases = {**served.aliases, alias: model}
        served.prefetched.pop(version, None)
        self.first_answers.expect(name, version)
        log.info(
            "model %r alias %r -> v%d (was %s)",
            name,
            alias,
            version,
            f"v{current.version}" if current else "unset",
        )
        self._changed()
        return True

    async def _load_named(self, name: str, version: int) -> LoadedModel:
        """Load a version a ``driftline.models`` event (or the registry) named; a NOT_FOUND
        answer is asked again after each of :data:`NOT_FOUND_RETRIES_S` (see there)."""
        for pause in (*NOT_FOUND_RETRIES_S, None):
            try:
                # A prefetch of the same version in flight is joined, not repeated.
                return await asyncio.shield(self._load(name, version))
            except NotFoundError as exc:
                if pause is None:
                    raise
                log.info("model %r v%d not found in the registry yet (%s); asking again in "
                         "%.1fs", name, version, exc.message, pause)  # fmt: skip
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _unset(self, name: str, alias: str) -> bool:
        served = self._models.get(name)
        current = served.aliases.get(alias) if served is not None else None
        if served is None or current is None:
            return False
        served.aliases = {a: m for a, m in served.aliases.items() if a != alias}
        log.info(
            "model %r alias %r removed in the registry (was v%d)", name, alias, current.version
        )
        self._changed()
        return True

    async def apply(self, event: RegistryEvent) -> bool:
        """Follow one ``driftline.models`` event; True when the alias it moves points at its
        version now (or, for a deletion, is gone).

        An event naming a version that cannot be served raises, and what was served
        stays served: :class:`NotFoundError` (no such model or version),
        :class:`IntegrityError` (the artifact fails verification),
        :class:`UnavailableError` (the registry or feature store is unreachable: apply
        the event again later), or whatever unpickling the artifact raised.
        """
        if not self.follows(event.model_name):
            return False
        if event.kind == RegistryEventKind.REGISTERED:
            self.prefetch(event.model_name, event.version)
            return False
        if event.kind not in (RegistryEventKind.ALIAS_SET, RegistryEventKind.ROLLED_BACK):
            return False
        alias = event.alias or "champion"
        served = self._models.get(event.model_name)
        canary = served.canary if served is not None else self._default_canary
        if alias not in FOLLOWED_ALIASES and alias != canary.alias:
            return False
        if event.kind == RegistryEventKind.ALIAS_SET and event.version == ALIAS_DELETED:
            return self._unset(event.model_name, alias)
        if event.version < 1:
            raise NotFoundError(
                f"model {event.model_name!r} has no version {event.version} (versions start at 1)"
            )
        return await self._swap_in(event.model_name, alias, event.version)

    def loaded_aliases(self) -> dict[str, dict[str, int]]:
        """model -> alias -> loaded version (for metrics and logs)."""
        return {
            name: {a: m.version for a, m in served.aliases.items()}
            for name, served in self._models.items()
        }

    def _loaded(self, outcome: str) -> None:
        if self._on_load is not None:
            self._on_load(outcome)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
