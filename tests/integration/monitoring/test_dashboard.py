"""The ops dashboard in headless Chromium, fed by the monitoring service on the real broker.

The monitor runs as a process against the harness's Kafka.  Before any data the
page shows "no data yet" in every model chart; then a model's registry events,
features, predictions and labels go in — feature ``x`` shifts, the error rate
jumps, a second version becomes champion — and the page, loaded in Debian's
``chromium``, draws every chart with data, the detections on ``x`` (and none on
``y``) and the version step.  A screenshot is saved under the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from support.browser import chromium, dump_dom

from driftline.contracts.messages import (
    FeatureVector,
    Lineage,
    PredictionRecord,
    RegistryEvent,
    RegistryEventKind,
    ValidLabel,
)
from driftline.contracts.topics import FEATURES, LABELS_VALID, MODELS, PREDICTIONS
from driftline.devtools.infra import free_port
from driftline.kafkaio import make_producer, provision_topics, send_model
from driftline.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
BEFORE, AFTER, CHUNK = 1_500, 1_500, 250
PROMOTE_AT = BEFORE + 750
"""Version 2 becomes champion here (after the concept drift has been detected)."""
MODEL_CHARTS = ("accuracy", "drift", "versions", "latency")


# ---------------------------------------------------------------- the service


@pytest.fixture
def monitor(kafka: Any, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The monitoring service as a process; yields its admin URL and consumer group."""
    run = uuid.uuid4().hex[:8]
    port = free_port()
    group = f"monitoring-dash-{run}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DRIFTLINE_MONITORING__ADMIN__PORT=str(port),
        DRIFTLINE_MONITORING__CONSUMER_GROUP=group,
        DRIFTLINE_MONITORING__INSTANCE_ID=run,
        DRIFTLINE_MONITORING__DETECTOR__WARMUP="500",
        DRIFTLINE_MONITORING__DRIFT_WINDOW="300",
        DRIFTLINE_MONITORING__PUBLISH_INTERVAL_S="0.5",
        DRIFTLINE_TELEMETRY__LOG_FORMAT="text",
    )
    log = tmp_path / "monitoring.log"
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.monitoring"], env=env, stdout=out, stderr=out, cwd=ROOT
    )
    # Generous: the shared 2-core machine can take long to import River under load.
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, f"monitoring exited:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"monitoring not ready:\n{log.read_text()}"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", group
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        out.close()


def registry_events(model: str, featureset: str, version: int) -> list[RegistryEvent]:
    """Version ``version`` registered (with its feature set), then made champion."""
    at = datetime.now(UTC)
    lineage = Lineage(featureset=featureset, featureset_version=1)
    return [
        RegistryEvent(
            event_id=f"{model}-reg-{version}",
            kind=RegistryEventKind.REGISTERED,
            model_name=model,
            version=version,
            actor="test",
            at=at,
            lineage=lineage,
        ),
        RegistryEvent(
            event_id=f"{model}-champion-{version}",
            kind=RegistryEventKind.ALIAS_SET,
            model_name=model,
            version=version,
            alias="champion",
            previous_version=version - 1 if version > 1 else None,
            actor="test",
            reason="dashboard test",
            at=at,
        ),
    ]


async def produce_story(bootstrap: str, model: str, featureset: str) -> None:
    """v1 at 5 % error; from BEFORE on ``x`` shifts and the error is 60 %; v2 fixes the error.

    Sent in chunks with pauses, so the monitor's samples spread the story over time.
    """
    rng = random.Random(23)
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), "test-dashboard")
    await producer.start()
    try:
        for ev in registry_events(model, featureset, 1):
            await (await send_model(producer, MODELS, model, ev))
        for start in range(0, BEFORE + AFTER, CHUNK):
            if start == PROMOTE_AT:
                for ev in registry_events(model, featureset, 2):
                    await (await send_model(producer, MODELS, model, ev))
            futures = []
            for i in range(start, start + CHUNK):
                at = T0 + timedelta(seconds=i)
                version = 2 if i >= PROMOTE_AT else 1
                error_rate = 0.6 if BEFORE <= i < PROMOTE_AT else 0.05
                wrong = rng.random() < error_rate
                event_id = f"{model}-e{i}"
                vec = FeatureVector(
                    event_id=event_id,
                    entity_id=f"c{i % 50}",
                    event_time=at,
                    featureset=featureset,
                    featureset_version=1,
                    values={"x": rng.gauss(5.0 if i >= BEFORE else 0.0, 1.0), "y": rng.random()},
                    produced_at=at,
                )
                pred = PredictionRecord(
                    request_id=f"{model}-r{i}",
                    event_id=event_id,
                    entity_id=vec.entity_id,
                    model_name=model,
                    model_version=version,
                    features={},
                    prediction=1,
                    latency_ms=abs(rng.gauss(3.0 if version == 1 else 6.0, 1.0)),
                    served_at=at,
                )
                label = ValidLabel(
                    event_id=event_id,
                    entity_id=vec.entity_id,
                    event_time=at,
                    label=0 if wrong else 1,
                    ingested_at=at,
                )
                futures.append(await send_model(producer, FEATURES, vec.entity_id, vec))
                futures.append(await send_model(producer, PREDICTIONS, vec.entity_id, pred))
                futures.append(await send_model(producer, LABELS_VALID, vec.entity_id, label))
            await asyncio.gather(*futures)
            await asyncio.sleep(0.8)
    finally:
        await producer.stop()


async def caught_up(bootstrap: str, group: str, timeout: float = 180) -> None:
    """Wait until ``group`` has committed up to the end of every input partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await probe.start()
    try:
        parts = [
            TopicPartition(t.name, p)
            for t in (FEATURES, PREDICTIONS, LABELS_VALID)
            for p in range(t.partitions)
        ]
        ends = await probe.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group)
            if all(tp in committed and committed[tp].offset >= ends[tp] for tp in parts):
                return
            assert time.monotonic() < deadline, "the monitor did not catch up"
            await asyncio.sleep(0.5)
    finally:
        await probe.stop()
        await admin.close()


def wait_for_series(url: str, model: str, featureset: str, timeout: float = 60) -> dict[str, Any]:
    """Poll ``/api/timeseries`` until every chart of the story has been sampled."""
    deadline = time.monotonic() + timeout
    while True:
        snap: dict[str, Any] = httpx.get(f"{url}/api/timeseries", timeout=5).json()
        series, markers = snap["series"], snap["markers"]
        versions = series.get(f"champion_version/{model}", [])
        ready = (
            len(series.get("events_per_s/features", [])) >= 2
            and len(series.get(f"accuracy/{model}", [])) >= 2
            and len(series.get(f"psi/{featureset}/x", [])) >= 2
            and len(series.get(f"latency_ms_p50/{model}", [])) >= 2
            and bool(versions)
            and versions[-1][1] == 2.0
            and any(
                m["kind"] == "drift" and m["model"] == model and "x" in m["features"]
                for m in markers
            )
        )
        if ready:
            return snap
        assert time.monotonic() < deadline, f"series incomplete: {sorted(series)}"
        time.sleep(0.5)


# ------------------------------------------------------------------ the browser


@dataclass
class Node:
    """One element of the dumped DOM with what the assertions need."""

    tag: str
    attrs: dict[str, str]
    chart: str | None
    feature: str | None
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


_VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "col", "area", "base"}


class DomIndex(HTMLParser):
    """Every element of a dumped page, each tagged with its chart and drift feature."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.nodes: list[Node] = []
        self.body: dict[str, str] = {}
        self._stack: list[Node] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        parent = self._stack[-1] if self._stack else None
        node = Node(
            tag,
            a,
            a.get("data-chart") or (parent.chart if parent else None),
            a.get("data-feature") or (parent.feature if parent else None),
        )
        if tag == "body":
            self.body = a
        self.nodes.append(node)
        if tag not in _VOID:
            self._stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for node in self._stack:
            node.text.append(data)

    def chart(self, name: str) -> Node:
        """The panel of chart ``name``."""
        return next(n for n in self.nodes if n.attrs.get("data-chart") == name)

    def find(self, *, chart: str, cls: str, feature: str | None = None) -> list[Node]:
        """Elements of class ``cls`` inside ``chart`` (and drift feature ``feature``)."""
        return [
            n
            for n in self.nodes
            if n.chart == chart and cls in n.classes and (feature is None or n.feature == feature)
        ]

    def lines(self, chart: str, feature: str | None = None) -> dict[str, int]:
        """``series name -> points drawn`` of a chart's data lines."""
        found = self.find(chart=chart, cls="series-line", feature=feature)
        return {n.attrs["data-series"]: int(n.attrs["data-points"]) for n in found}


def text_of(node: Node) -> str:
    return "".join(node.text)


# -------------------------------------------------------------------- the test


async def test_the_dashboard_charts_the_live_streams_in_headless_chromium(
    kafka: Any, monitor: tuple[str, str], tmp_path: Path
) -> None:
    url, group = monitor
    bootstrap = kafka.bootstrap_servers
    await provision_topics(KafkaSettings(bootstrap_servers=bootstrap))
    model = f"dash-{uuid.uuid4().hex[:6]}"
    featureset = f"fs-{model}"
    page = f"{url}/?model={model}"

    root = httpx.get(f"{url}/", timeout=5)
    assert root.status_code == 200 and "text/html" in root.headers["content-type"]
    assert httpx.get(f"{url}/dashboard", timeout=5).text == root.text
    assert not re.search(r'(src|href)="(https?:)?//', root.text), "the page loads nothing remote"

    # Before any data of this model: every model chart says so.
    empty = DomIndex(dump_dom(tmp_path, page))
    assert int(empty.body["data-refreshes"]) >= 1, "the page never drew"
    for name in MODEL_CHARTS:
        panel = empty.chart(name)
        assert "no data yet" in text_of(panel), name
        assert not empty.lines(name), name

    await produce_story(bootstrap, model, featureset)
    await caught_up(bootstrap, group)
    wait_for_series(url, model, featureset)

    dom = DomIndex(dump_dom(tmp_path, page))
    assert int(dom.body["data-refreshes"]) >= 1
    for name in ("events", *MODEL_CHARTS):
        assert "no data yet" not in text_of(dom.chart(name)), name
        assert dom.find(chart=name, cls="x-axis") and dom.find(chart=name, cls="y-tick"), name
        assert dom.find(chart=name, cls="legend"), name

    events = dom.lines("events")
    assert set(events) == {"features", "predictions", "labels"}
    assert min(events.values()) >= 2

    assert dom.lines("accuracy").get(model, 0) >= 2
    assert dom.find(chart="accuracy", cls="marker-drift"), "the concept drift is not marked"
    assert model in text_of(dom.chart("accuracy"))

    drift_x = dom.lines("drift", feature=f"{featureset}/x")
    drift_y = dom.lines("drift", feature=f"{featureset}/y")
    assert drift_x.get("PSI", 0) >= 2 and drift_x.get("KS", 0) >= 2
    assert drift_y.get("PSI", 0) >= 2
    assert dom.find(chart="drift", cls="marker-drift", feature=f"{featureset}/x")
    assert not dom.find(chart="drift", cls="marker-drift", feature=f"{featureset}/y")
    assert dom.find(chart="drift", cls="threshold", feature=f"{featureset}/x")

    assert dom.lines("versions").get(model, 0) >= 2
    version_flags = {text_of(n) for n in dom.find(chart="versions", cls="flag-label")}
    assert {"v1", "v2"} <= version_flags

    latency = dom.lines("latency")
    assert latency.get(f"{model} p50", 0) >= 2 and latency.get(f"{model} p99", 0) >= 2

    assert "champion change" in text_of(dom.chart("events-log"))

    shot = tmp_path / "dashboard.png"
    chromium(tmp_path, "--virtual-time-budget=7000", f"--screenshot={shot}", page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000, "the screenshot is (nearly) blank"
    print(f"dashboard screenshot: {shot}")
