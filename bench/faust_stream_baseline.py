"""A faust-streaming agent that does nothing, timed over a topic already filled.

Run by ``bench_features.py`` as a subprocess (Faust owns its process's event
loop and command line): it reads ``--events`` records of ``--topic`` from the
start with ``stream.take_events`` in batches, as the features worker did when it
ran on Faust, and writes one JSON object to ``--out``: events/s and CPU µs per event (Faust
redirects standard output into its logs).  This is
the figure behind the worker's move to a plain aiokafka consumer group.

    uv run python bench/faust_stream_baseline.py --bootstrap HOST:PORT --topic T --events N --out F
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import faust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--out", required=True, help="file to write the JSON result to")
    args = parser.parse_args()
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/driftline-bench-faust-{os.getpid()}",
    )
    topic = app.topic(
        args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    seen = {"n": 0, "t0": 0.0, "cpu0": 0.0}

    @app.agent(topic)
    async def noop(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(1000, within=0.005):
            if seen["n"] == 0:
                seen["t0"] = time.perf_counter()
                cpu = os.times()
                seen["cpu0"] = cpu.user + cpu.system
            seen["n"] += len(events)
            if seen["n"] >= args.events:
                elapsed = time.perf_counter() - seen["t0"]
                cpu = os.times()
                used = cpu.user + cpu.system - seen["cpu0"]
                line = {
                    "events": seen["n"],
                    "events_per_s": round(seen["n"] / elapsed, 1),
                    "cpu_us_per_event": round(used / seen["n"] * 1e6, 1),
                }
                with open(args.out, "w") as f:
                    f.write(json.dumps(line))
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "error"]
    app.main()


if __name__ == "__main__":
    main()
