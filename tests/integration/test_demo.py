"""``driftline demo`` end to end: a small scenario through the real platform.

The demo runs as a subprocess (``python -m driftline.cli demo``) that starts the
six services itself, against a Kafka broker and a redis-server of its own: the
services replay whole topics from the start, so records other tests left on the
session broker would become part of the scenario.  Afterwards the test reads the
topics itself and checks that the figures the demo reported are the ones on them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.own_infra import own_kafka_node, own_redis_node, read_topic

from driftline.cli.demo.report import report_summary
from driftline.contracts.messages import (
    DriftEvent,
    DriftKind,
    RegistryEvent,
    RegistryEventKind,
    RetrainRequest,
    prediction_records,
)
from driftline.contracts.topics import DRIFT, MODELS, PREDICTIONS, RETRAIN, Topic
from driftline.devtools.demo_env import isolated_env
from driftline.devtools.infra import KafkaNode, RedisNode

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    """A real broker holding nothing but this module's records."""
    with own_kafka_node(tmp_path_factory.mktemp("demo-kafka")) as node:
        yield node


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    """A real redis-server with no other test's entities in it."""
    with own_redis_node(tmp_path_factory.mktemp("demo-redis")) as node:
        yield node


def _demo_env(kafka: KafkaNode, redis: RedisNode, state: Path) -> dict[str, str]:
    return isolated_env(
        bootstrap_servers=kafka.bootstrap_servers,
        redis_host=redis.host,
        redis_port=redis.port,
        state_dir=state,
    )


async def _read_all(bootstrap: str, topic: Topic) -> list[bytes]:
    return await read_topic(bootstrap, topic, "demo-test-reader")


async def test_demo_closes_the_loop_and_reports_what_is_on_the_topics(
    own_kafka: KafkaNode, own_redis: RedisNode, tmp_path: Path
) -> None:
    report = tmp_path / "out" / "report.md"
    env = _demo_env(own_kafka, own_redis, tmp_path / "state")
    argv = [
        sys.executable,
        "-m",
        "driftline.cli",
        "demo",
        "--events",
        "6000",
        "--rate",
        "100",
        "--drift-at",
        "3000",
        "--label-delay",
        "50",
        "--seed",
        "7",
        "--timeout",
        "600",
        "--report",
        str(report),
    ]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=840, check=False
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((tmp_path / "state" / "logs").glob("*.log"))
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"

    # the report and its plot exist
    assert report.is_file()
    png = report.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    assert "**Loop closed.**" in text
    # the scenario started only once a probe event had reached the online store
    assert "pipeline carrying events" in text
    assert f"![rolling accuracy]({png.name})" in text
    summary = report_summary(text)

    # predictions: what serving answered is what is logged on driftline.predictions
    predictions = [
        r
        for v in await _read_all(own_kafka.bootstrap_servers, PREDICTIONS)
        for r in prediction_records(v)
    ]
    scenario_predictions = [p for p in predictions if p.event_id is not None and not p.shadow]
    answered = int(summary["predictions answered"])
    assert answered > 0
    assert len(scenario_predictions) == answered
    assert int(summary["predictions logged on driftline.predictions"]) == answered
    assert int(summary["failed requests"]) == 0

    # champion changes: the new champion the demo names is one on driftline.models
    models = [
        RegistryEvent.model_validate_json(v)
        for v in await _read_all(own_kafka.bootstrap_servers, MODELS)
    ]
    champions = [
        e.version
        for e in models
        if e.model_name == "loans"
        and e.kind in (RegistryEventKind.ALIAS_SET, RegistryEventKind.ROLLED_BACK)
        and e.alias == "champion"
    ]
    new_champion = summary["new champion"]
    assert new_champion.startswith("v")
    assert int(new_champion[1:]) in champions
    assert summary["champion at drift"] != new_champion
    champion_rows = text.split("## Champion changes during the run", 1)[1].split("## ", 1)[0]
    assert len(re.findall(r"^\| v\d+ \|", champion_rows, flags=re.MULTILINE)) == len(champions)
    # serving answered with the new version, and the log shows it
    assert any(p.model_version == int(new_champion[1:]) for p in predictions)

    # the loop: exactly one retraining request for the drift, and the new champion is the
    # candidate trained for it (its lineage names the request), not a scheduled snapshot
    requests = [
        RetrainRequest.model_validate_json(v)
        for v in await _read_all(own_kafka.bootstrap_servers, RETRAIN)
    ]
    assert [r.model_name for r in requests] == ["loans"]
    [request] = requests
    assert int(summary["retrain requests"]) == 1
    [registered] = [
        e
        for e in models
        if e.kind is RegistryEventKind.REGISTERED
        and e.model_name == "loans"
        and e.version == int(new_champion[1:])
    ]
    assert registered.lineage is not None
    assert registered.lineage.trigger_id == request.request_id
    assert summary["new champion trigger"] == request.request_id
    assert summary["new champion from the retrain request"] == "yes"
    # it learned from the data after the drift onset the request named
    assert request.since_event_time is not None
    assert registered.lineage.event_time_from is not None
    assert registered.lineage.event_time_from >= request.since_event_time

    # drift: the detection the demo reports is on driftline.drift
    drifts = [
        DriftEvent.model_validate_json(v)
        for v in await _read_all(own_kafka.bootstrap_servers, DRIFT)
    ]
    assert any(d.kind is DriftKind.CONCEPT and d.model_name == "loans" for d in drifts)
    detected_at = int(summary["drift detected at event"])
    assert detected_at >= 3000
    assert int(summary["detection delay (events)"]) == detected_at - 3000

    # accuracy falls at the drift and recovers with the new champion
    def acc(key: str) -> float:
        return float(summary[key].split()[0])

    assert acc("accuracy before drift") > acc("accuracy during drift")
    assert acc("accuracy after new champion") > acc("accuracy during drift")
