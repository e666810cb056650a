"""A service told to stop either stops or, past its grace, says what it waited on and exits."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

SERVICE = textwrap.dedent(
    """
    import asyncio, logging, sys
    from driftline.runtime import run_service

    logging.basicConfig(level=logging.INFO)

    async def main(stop):
        async def stuck_on_a_peer():
            await asyncio.Event().wait()  # never set: a call that does not return

        async def tidy():
            await stop.wait()

        print("ready", flush=True)
        await ({mode})

    sys.exit(run_service("demo-service", main, shutdown_grace_s=0.5))
    """
)


def _run_until_sigterm(mode: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE.format(mode=mode)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_service_that_stops_when_told_exits_cleanly() -> None:
    done = _run_until_sigterm("tidy()")
    assert done.returncode == 0, done.stderr
    assert "did not stop" not in done.stderr


def test_a_service_stuck_past_its_grace_names_what_it_waited_on_and_exits() -> None:
    done = _run_until_sigterm("stuck_on_a_peer()")
    assert done.returncode == 1, done.stderr
    assert "demo-service did not stop within 0.5s of being told to; cancelling it" in done.stderr
    # The chain of awaits down to where the service was stuck.
    assert "main.<locals>.stuck_on_a_peer" in done.stderr
    assert "Event.wait" in done.stderr
