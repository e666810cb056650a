"""One-writer roles: a claim on the log fences every mutation made under an older claim.

Training claims the ``training`` role when it becomes the active trainer; the trainer it
replaced (paused, cut off) must then be unable to register, promote or record anything,
on every replica, whatever order the two writers' events reach the log in."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.contracts.errors import FailedPreconditionError, InvalidArgumentError
from driftline.contracts.messages import RegistryEvent, RegistryEventKind
from driftline.registry.core import Registration
from driftline.registry.state import EXTRAS_KEY, RegistryState
from driftline.registry_api.models import WriterLease

from .test_state import T0, LoopbackLog, make_core

pytestmark = pytest.mark.unit


async def test_a_later_claim_fences_the_older_holder(tmp_path: Path) -> None:
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    first = await core.claim_writer("training", "training-a")
    assert (first.epoch, first.holder, first.previous_holder) == (1, "training-a", "")
    v1, created = await core.register(Registration(name="risk", writer=first.lease), b"v1")
    assert created and v1.version == 1
    await core.set_alias("risk", "champion", 1, writer=first.lease)

    second = await core.claim_writer("training", "training-b")
    assert (second.epoch, second.previous_holder) == (2, "training-a")

    # The replaced holder can change nothing any more; each refusal says who took over.
    with pytest.raises(FailedPreconditionError, match=r"claimed by 'training-b' \(epoch 2\)"):
        await core.register(Registration(name="risk", writer=first.lease), b"v2-from-a")
    with pytest.raises(FailedPreconditionError, match="no longer holds the role"):
        await core.set_alias("risk", "challenger", 1, writer=first.lease)
    with pytest.raises(FailedPreconditionError, match="no longer holds the role"):
        await core.record_unserved_retrain("risk", "req-1", "no trainer", writer=first.lease)
    assert core.state.models["risk"].latest == 1
    assert "challenger" not in core.state.models["risk"].aliases

    # The new holder, and anyone writing outside the role (a person), still can.
    v2, _ = await core.register(Registration(name="risk", writer=second.lease), b"v2-from-b")
    assert v2.version == 2
    await core.set_alias("risk", "champion", 2, actor="ops")
    assert core.state.models["risk"].aliases["champion"] == 2

    # Every replica rebuilds the same claims from the log.
    replayed = RegistryState()
    for event in log.events:
        replayed.apply(event)
    assert replayed.snapshot() == core.state.snapshot()
    assert replayed.snapshot()["_writers"]["training"]["epoch"] == 2


async def test_an_event_made_before_a_claim_but_logged_after_it_is_ignored(
    tmp_path: Path,
) -> None:
    """The race the check before publishing cannot see: the log's order decides."""
    log = LoopbackLog()
    core = make_core(tmp_path, log)
    old = await core.claim_writer("training", "training-a")
    await core.register(Registration(name="risk", writer=old.lease), b"v1")
    await core.claim_writer("training", "training-b")
    late = RegistryEvent(
        event_id="late-registration",
        kind=RegistryEventKind.REGISTERED,
        model_name="risk",
        version=2,
        actor="training-a",
        at=T0,
        sha256="ab" * 32,
        signature="cd" * 32,
        spec={EXTRAS_KEY: {"writer": old.lease.model_dump()}},
    )
    outcome = core.state.apply(late)
    assert not outcome.applied and outcome.reason.startswith("fenced:")
    assert core.state.models["risk"].latest == 1
    assert core.state.fenced_events == 1


async def test_a_lease_of_a_claim_never_made_is_refused(tmp_path: Path) -> None:
    core = make_core(tmp_path, LoopbackLog())
    with pytest.raises(FailedPreconditionError, match="claim the role first"):
        await core.register(
            Registration(name="risk", writer=WriterLease(role="training", epoch=1)), b"v1"
        )
    with pytest.raises(InvalidArgumentError, match="holder must be"):
        await core.claim_writer("training", "")
    with pytest.raises(InvalidArgumentError, match="role must be"):
        await core.claim_writer("", "training-a")
    # Roles are independent: a claim of one fences nothing of another.
    other = await core.claim_writer("monitoring", "monitoring-a")
    await core.claim_writer("training", "training-a")
    await core.register(Registration(name="risk"), b"v1")
    await core.record_unserved_retrain("risk", "req-1", "no trainer", writer=other.lease)
    assert [u.request_id for u in core.state.models["risk"].unserved] == ["req-1"]
