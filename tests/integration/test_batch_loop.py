"""A batch model's loop closes on a drift scenario: ``driftline demo --model loans-gbm``.

The demo runs as a subprocess that starts the six services itself against a Kafka
broker and a redis-server of its own.  Training loads only the scikit-learn spec
(``examples/models/batch/loans-gbm.yaml``): its first champion is fitted on schedule
from the replayed window, monitoring detects the concept drift in what serving
answers, the retrain request makes training refit on the window after the drift,
the candidate is promoted, and serving (its scikit-learn runtime) answers with it.
The test then reads the topics itself: what the demo reported is what happened.
"""

from __future__ import annotations

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
from driftline.devtools.demo_env import demo_models_dir, isolated_env
from driftline.devtools.infra import KafkaNode, RedisNode

ROOT = Path(__file__).resolve().parents[2]
MODEL = "loans-gbm"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    """A real broker holding nothing but this module's records."""
    with own_kafka_node(tmp_path_factory.mktemp("batch-loop-kafka")) as node:
        yield node


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    """A real redis-server with no other test's entities in it."""
    with own_redis_node(tmp_path_factory.mktemp("batch-loop-redis")) as node:
        yield node


async def _read_all(bootstrap: str, topic: Topic) -> list[bytes]:
    return await read_topic(bootstrap, topic, "batch-loop-reader")


def test_the_demo_trains_only_the_spec_it_is_asked_for() -> None:
    models = ROOT / "examples" / "models"
    assert demo_models_dir(models, "loans") is None  # the River demo: training's default
    assert demo_models_dir(models, MODEL) == (models / "batch").resolve()
    # ... and the default directory does not hold the batch spec, so `make demo` (and any
    # platform on the defaults) never fits it.
    assert not list(models.glob("loans-gbm.y*ml"))


async def test_a_batch_models_loop_closes_and_serving_answers_with_the_refitted_champion(
    own_kafka: KafkaNode, own_redis: RedisNode, tmp_path: Path
) -> None:
    report = tmp_path / "out" / "report.md"
    env = isolated_env(
        bootstrap_servers=own_kafka.bootstrap_servers,
        redis_host=own_redis.host,
        redis_port=own_redis.port,
        state_dir=tmp_path / "state",
    )
    argv = [
        sys.executable, "-m", "driftline.cli", "demo", "--model", MODEL, "--events", "6000",
        "--rate", "100", "--drift-at", "3000", "--label-delay", "50", "--seed", "7",
        "--timeout", "600", "--report", str(report),
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=840, check=False
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((tmp_path / "state" / "logs").glob("*.log"))
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    text = report.read_text()
    assert "**Loop closed.**" in text
    assert f"model `{MODEL}`" in text
    summary = report_summary(text)
    bootstrap = own_kafka.bootstrap_servers

    models = [RegistryEvent.model_validate_json(v) for v in await _read_all(bootstrap, MODELS)]
    registered = {
        e.version: e
        for e in models
        if e.kind is RegistryEventKind.REGISTERED and e.model_name == MODEL
    }
    # Training trained the batch model only (the River spec was not loaded).
    assert {e.model_name for e in models if e.kind is RegistryEventKind.REGISTERED} == {MODEL}
    # Every version is a scikit-learn refit of the spec's pipeline.
    assert registered and all(e.spec.get("framework") == "sklearn" for e in registered.values())
    champions = [
        (e.version, e.trigger)
        for e in models
        if e.model_name == MODEL
        and e.kind in (RegistryEventKind.ALIAS_SET, RegistryEventKind.ROLLED_BACK)
        and e.alias == "champion"
    ]
    # The first champion was fitted on schedule, before the drift.
    first_version, first_trigger = champions[0]
    assert first_trigger is not None and first_trigger.startswith(f"schedule:{MODEL}:")
    first = registered[first_version].lineage
    assert first is not None and first.trigger_id == first_trigger

    # One retrain request for the drift; the new champion is the candidate fitted for it,
    # on the window after the drift onset the request named.
    requests = [RetrainRequest.model_validate_json(v) for v in await _read_all(bootstrap, RETRAIN)]
    assert [r.model_name for r in requests] == [MODEL]
    [request] = requests
    new_champion = summary["new champion"]
    assert summary["champion at drift"] == f"v{first_version}" != new_champion
    version = int(new_champion[1:])
    assert (version, request.request_id) in champions
    lineage = registered[version].lineage
    assert lineage is not None and lineage.trigger_id == request.request_id
    assert request.since_event_time is not None and lineage.event_time_from is not None
    assert lineage.event_time_from >= request.since_event_time
    metrics = registered[version].metrics
    assert metrics["accuracy"] > metrics["champion_holdout_accuracy"]
    assert summary["new champion from the retrain request"] == "yes"

    # Monitoring detected the drift in serving's answers.
    drifts = [DriftEvent.model_validate_json(v) for v in await _read_all(bootstrap, DRIFT)]
    assert any(d.kind is DriftKind.CONCEPT and d.model_name == MODEL for d in drifts)
    assert int(summary["drift detected at event"]) >= 3000

    # Serving answered with the refitted champion (and the log shows it), no request failed.
    predictions = [
        r for v in await _read_all(bootstrap, PREDICTIONS) for r in prediction_records(v)
    ]
    scenario = [p for p in predictions if p.event_id is not None and not p.shadow]
    assert int(summary["predictions answered"]) == len(scenario) > 0
    assert any(p.model_version == version for p in scenario)
    assert {p.model_name for p in scenario} == {MODEL}
    assert int(summary["failed requests"]) == 0

    def acc(key: str) -> float:
        return float(summary[key].split()[0])

    assert acc("accuracy before drift") > acc("accuracy during drift")
    assert acc("accuracy after new champion") > acc("accuracy during drift")
    print("\n".join(f"{k}: {v}" for k, v in summary.items()))
