"""The three-node Kafka cluster's configuration (``infra up --brokers 3``) without running it:
settings validation, each node's rendered ``server.properties``, the port layout, how its
storage is formatted, the platform's choice of Kafka and the CLI flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftline.cli.context import CliState, use_kafka_brokers
from driftline.devtools.infra import (
    InfraError,
    KafkaCluster,
    KafkaNode,
    LocalPlatform,
)
from driftline.devtools.infra.kafka_cluster import CLUSTER_NODE_HEAP, cluster_ports
from driftline.kafkaio.provision import replication_config
from driftline.settings import InfraSettings, PlatformSettings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def _properties(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _settings(tmp_path: Path, **infra: object) -> PlatformSettings:
    return PlatformSettings(
        kafka={"bootstrap_servers": "127.0.0.1:19092", "controller_port": 19093},
        infra={"state_dir": tmp_path, "kafka_brokers": 3, **infra},
    )


def test_kafka_brokers_is_one_or_three() -> None:
    assert InfraSettings().kafka_brokers == 1
    assert InfraSettings(kafka_brokers="3").kafka_brokers == 3  # as the environment gives it
    for wrong in (0, 2, 4):
        with pytest.raises(ValidationError, match=r"kafka_brokers must be 1 .* or 3"):
            InfraSettings(kafka_brokers=wrong)


def test_cluster_ports_are_three_distinct_ports() -> None:
    with pytest.raises(ValidationError, match="kafka_cluster_ports must be three distinct"):
        InfraSettings(kafka_cluster_ports=[19092, 19092, 19093])
    with pytest.raises(ValidationError):
        InfraSettings(kafka_cluster_controller_ports=[19093, 19094])


def test_each_node_renders_a_broker_and_voter_of_one_static_quorum(tmp_path: Path) -> None:
    cluster = KafkaCluster(
        tmp_path,
        ports=[19092, 19192, 19292],
        controller_ports=[19093, 19193, 19293],
        infra_dir=INFRA,
    )
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"
    for node, port, cport in zip(
        cluster.nodes, (19092, 19192, 19292), (19093, 19193, 19293), strict=True
    ):
        node.write_config()
        props = _properties(node.config_file)
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in props
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{port}"
        assert props["log.dirs"] == str(
            tmp_path / "kafka-cluster" / f"node-{node.node_id}" / "data"
        )
        for key in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "share.coordinator.state.topic.replication.factor",
        ):
            assert props[key] == "3", key
        for key in (
            "min.insync.replicas",
            "transaction.state.log.min.isr",
            "share.coordinator.state.topic.min.isr",
        ):
            assert props[key] == "2", key
        assert props["unclean.leader.election.enable"] == "false"
        assert node.log4j_file.is_file()
        assert node.heap == CLUSTER_NODE_HEAP
    # Three processes: own pid files and logs, never the single node's.
    names = {node.name for node in cluster.nodes}
    assert names == {"kafka-cluster-1", "kafka-cluster-2", "kafka-cluster-3"}
    assert len({node.pid_file for node in cluster.nodes}) == 3
    assert KafkaNode(tmp_path).pid_file not in {node.pid_file for node in cluster.nodes}
    assert cluster.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"


def test_every_node_is_formatted_with_the_cluster_id_and_no_standalone(tmp_path: Path) -> None:
    cluster = KafkaCluster(
        tmp_path, ports=[19092, 19192, 19292], controller_ports=[19093, 19193, 19293]
    )
    with pytest.raises(InfraError, match="no cluster id"):
        cluster.nodes[0]._format_identity()
    cluster._ensure_cluster_id()  # what launch() does first
    identities = [node._format_identity() for node in cluster.nodes]
    cluster_id = cluster.cluster_id_file.read_text().strip()
    assert len(cluster_id) == 22
    assert identities == [(cluster_id, [])] * 3  # one cluster; the quorum is the voters list
    # The single node still forms its own quorum.
    assert KafkaNode(tmp_path)._format_identity()[1] == ["--standalone"]


def test_cluster_ports_default_from_node_one_and_are_checked(tmp_path: Path) -> None:
    assert cluster_ports(9092) == [9092, 9192, 9292]
    cluster = KafkaCluster.from_settings(_settings(tmp_path))
    assert [n.port for n in cluster.nodes] == [19092, 19192, 19292]
    assert [n.controller_port for n in cluster.nodes] == [19093, 19193, 19293]
    assert {n.heap for n in cluster.nodes} == {CLUSTER_NODE_HEAP}
    given = KafkaCluster.from_settings(
        _settings(
            tmp_path,
            kafka_cluster_ports=[19092, 20000, 20001],
            kafka_cluster_controller_ports=[19093, 20002, 20003],
            kafka_heap="300m",
        )
    )
    assert [n.port for n in given.nodes] == [19092, 20000, 20001]
    assert [n.controller_port for n in given.nodes] == [19093, 20002, 20003]
    assert {n.heap for n in given.nodes} == {"300m"}
    with pytest.raises(InfraError, match=r"must start with the port of kafka\.bootstrap_servers"):
        KafkaCluster.from_settings(_settings(tmp_path, kafka_cluster_ports=[1, 2, 3]))
    with pytest.raises(InfraError, match="all distinct"):
        KafkaCluster(tmp_path, ports=[1, 2, 3], controller_ports=[3, 4, 5])


def test_the_cluster_has_no_secure_mode(tmp_path: Path) -> None:
    settings = _settings(tmp_path).model_copy(
        update={"security": PlatformSettings().security.model_copy(update={"enabled": True})}
    )
    with pytest.raises(InfraError, match="no secure mode"):
        KafkaCluster.from_settings(settings)


def test_the_platform_runs_the_cluster_when_kafka_brokers_is_three(tmp_path: Path) -> None:
    assert isinstance(LocalPlatform(_settings(tmp_path), ops=False).kafka, KafkaCluster)
    single = _settings(tmp_path, kafka_brokers=1)
    assert isinstance(LocalPlatform(single, ops=False).kafka, KafkaNode)


def test_three_replicas_make_two_in_sync_topics() -> None:
    assert replication_config(3) == {"min.insync.replicas": "2"}
    assert replication_config(1) == {}  # the single node's topics are as they were


def test_brokers_flag_sets_brokers_and_replication_for_every_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The flag writes os.environ (for the processes a command starts): give the test its
    # own copy, so nothing it sets outlives it (a missing variable deleted with
    # monkeypatch.delenv is not restored as missing).
    monkeypatch.setattr(os, "environ", os.environ.copy())
    monkeypatch.delenv("DRIFTLINE_INFRA__KAFKA_BROKERS", raising=False)
    monkeypatch.delenv("DRIFTLINE_KAFKA__DEFAULT_REPLICATION_FACTOR", raising=False)
    cli = CliState()
    use_kafka_brokers(cli, None)
    assert "DRIFTLINE_INFRA__KAFKA_BROKERS" not in os.environ
    use_kafka_brokers(cli, 3)
    settings = cli.settings()
    assert settings.infra.kafka_brokers == 3
    assert settings.kafka.default_replication_factor == 3
