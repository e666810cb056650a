"""Send loan applications and their labels to Driftline over HTTP, as a team's producers do.

    uv run python examples/byom/send_loans.py --events 4000

Posts River's Agrawal loan applications (the ``loans`` feature set) to ingestion's
``POST /v1/events`` and, for each batch, their labels (was the loan accepted?) to
``POST /v1/labels``.  Ingestion validates them, the features worker logs each
application's point-in-time feature vector on ``driftline.features``, and
``driftline features export`` joins those with the labels.

The labels follow Agrawal's classification function 2 by default: the rule the
demo's stream starts with, so a model fitted on them is right until the demo's
concept drift.  Event times end now, 10 ms apart; event ids carry a random run id
(ingestion refuses an event id it has seen as a duplicate).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from driftline.devtools.scenario import ScenarioConfig, applications


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Send labelled loan applications to Driftline's ingestion HTTP API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--ingestion", default="http://127.0.0.1:8081", help="ingestion's HTTP address"
    )
    parser.add_argument("--events", type=int, default=4000, help="applications to send")
    parser.add_argument(
        "--function",
        type=int,
        default=2,
        choices=range(10),
        help="Agrawal classification function that labels them (the demo starts with 2)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the applications")
    parser.add_argument("--batch", type=int, default=500, help="records per HTTP request")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("DRIFTLINE_INGESTION__API_KEY"),
        help="ingestion's API key, if it has one (read from $DRIFTLINE_INGESTION__API_KEY)",
    )
    return parser.parse_args(argv)


def post(client: httpx.Client, path: str, records: list[dict[str, Any]]) -> int:
    """POST ``records`` as one JSON array; the number accepted (exits on a refusal)."""
    response = client.post(path, json=records)
    if response.status_code >= 400 and response.status_code != 422:
        sys.exit(f"{path}: HTTP {response.status_code}: {response.text[:500]}")
    answer = response.json()
    for problem in answer.get("rejected", [])[:3]:
        print(f"{path}: rejected: {problem}", file=sys.stderr)
    return int(answer.get("accepted", 0))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    interval = timedelta(milliseconds=10)
    config = ScenarioConfig(
        events=args.events,
        drift_at=args.events,  # no drift: one rule labels them all
        function_before=args.function,
        seed=args.seed,
        start=datetime.now(UTC) - args.events * interval,
        interval=interval,
        event_id_prefix=f"byom-{uuid.uuid4().hex[:8]}",
    )
    headers = {"x-api-key": args.api_key} if args.api_key else {}
    apps = list(applications(config))
    events = labels = 0
    with httpx.Client(base_url=args.ingestion, headers=headers, timeout=30) as client:
        for start in range(0, len(apps), args.batch):
            chunk = apps[start : start + args.batch]
            # Each batch's labels right after its events: the join waits for either half.
            events += post(
                client, "/v1/events", [a.raw_event().model_dump(mode="json") for a in chunk]
            )
            labels += post(
                client, "/v1/labels", [a.raw_label().model_dump(mode="json") for a in chunk]
            )
    print(f"sent {events:,} applications and {labels:,} labels (Agrawal function "
          f"{args.function}) to {args.ingestion}")  # fmt: skip
    return 0 if events == labels == args.events else 1


if __name__ == "__main__":
    sys.exit(main())
