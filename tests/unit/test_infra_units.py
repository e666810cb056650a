"""Pure logic of driftline.devtools.infra and the CLI: templates, pid files, tool hints."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftline.cli import supervisor
from driftline.cli.app import app
from driftline.devtools.infra import (
    InfraError,
    KafkaNode,
    MissingToolError,
    PidRecord,
    RedisNode,
    TemplateError,
    fetch_kafka_jars,
    find_infra_dir,
    new_cluster_id,
    parse_host_port,
    parse_pid_file,
    render_template,
    require_tool,
    running_pid,
    tail_lines,
)
from driftline.devtools.infra.pidfile import process_start_ticks, write_pid_file

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def _properties(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_render_template_fills_placeholders_and_leaves_other_braces() -> None:
    assert render_template("a {x} b {y}{x} ${NOT} {Upper}", {"x": 1, "y": "z"}) == (
        "a 1 b z1 ${NOT} {Upper}"
    )


def test_render_template_rejects_gaps_and_unknown_values() -> None:
    with pytest.raises(TemplateError, match="no value for placeholder"):
        render_template("port {port}", {})
    with pytest.raises(TemplateError, match="unknown placeholder"):
        render_template("port {port}", {"port": 1, "typo": 2})


def test_kafka_config_renders_a_single_node_kraft_server(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, port=19092, controller_port=19093, infra_dir=INFRA)
    node.write_config()
    props = _properties(node.config_file)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "3"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert node.log4j_file.is_file()
    assert not node.formatted


def test_redis_config_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("driftline.devtools.infra.redis_node.require_tool", lambda name, **_: name)
    node = RedisNode(tmp_path, port=16379, infra_dir=INFRA)
    argv = node.prepare()
    assert argv == ["redis-server", str(node.config_file)]
    text = node.config_file.read_text()
    assert "bind 127.0.0.1\n" in text and "port 16379\n" in text
    assert "appendonly yes" in text and "daemonize no" in text
    assert f'dir "{tmp_path / "redis" / "data"}"' in text


def test_pid_file_round_trip_and_garbage() -> None:
    record = PidRecord(pid=4242, start_ticks=99, extra={"name": "kafka", "command": "java a\nb"})
    parsed = parse_pid_file(record.render())
    assert parsed == PidRecord(
        pid=4242, start_ticks=99, extra={"name": "kafka", "command": "java a b"}
    )
    assert parse_pid_file("123\n") == PidRecord(pid=123)
    assert parse_pid_file("  77  \nstart_ticks=oops\nnoise\n") == PidRecord(pid=77)
    for bad in ("", "\n\n", "abc", "-5", "0"):
        assert parse_pid_file(bad) is None


def test_running_pid_matches_only_the_same_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    assert running_pid(pid_file) is None  # missing
    me = os.getpid()
    write_pid_file(pid_file, PidRecord(me, process_start_ticks(me)))
    assert running_pid(pid_file) == me
    ticks = process_start_ticks(me)
    if ticks is not None:  # a recycled pid (other start time) is not ours
        write_pid_file(pid_file, PidRecord(me, ticks + 1))
        assert running_pid(pid_file) is None
    write_pid_file(pid_file, PidRecord(2**22 + 12345))  # no such process
    assert running_pid(pid_file) is None


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_host_port("localhost:1,other:2") == ("localhost", 1)
    assert parse_host_port("[::1]:9092") == ("::1", 9092)
    for bad in ("nohost", "h:", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


def test_cluster_ids_are_kraft_shaped() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_missing_tool_says_what_to_install() -> None:
    with pytest.raises(MissingToolError, match="apt-get install redis-server"):
        require_tool("/nonexistent/redis-server")
    with pytest.raises(MissingToolError, match="apt-get install maven"):
        require_tool("/nonexistent/mvn")
    with pytest.raises(MissingToolError, match="openjdk-17"):
        require_tool("/nonexistent/java")


def test_find_infra_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_infra_dir() == INFRA
    assert find_infra_dir(INFRA) == INFRA
    monkeypatch.setenv("DRIFTLINE_INFRA_DIR", str(INFRA))
    assert find_infra_dir() == INFRA
    with pytest.raises(InfraError, match=r"kafka/pom\.xml"):
        find_infra_dir(tmp_path)


def test_cached_jars_do_not_run_maven(tmp_path: Path) -> None:
    libs = tmp_path / "9.9.9" / "libs"
    libs.mkdir(parents=True)
    (tmp_path / "9.9.9" / ".complete").write_text("done")
    # a nonexistent mvn and pom prove Maven is not touched
    found = fetch_kafka_jars(
        "9.9.9", tmp_path, tmp_path / "no-pom.xml", mvn="/nonexistent/mvn", progress=print
    )
    assert found == libs


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = tail_lines(log, 30).splitlines()
    assert tail[0] == "line 70" and tail[-1] == "line 99" and len(tail) == 30
    assert tail_lines(tmp_path / "missing.log") == ""


def test_unit_tests_cannot_open_sockets() -> None:
    with socket.socket() as sock, pytest.raises(RuntimeError, match="tests/integration"):
        sock.connect(("127.0.0.1", 9))


runner = CliRunner()


def test_cli_config_error_exits_2_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_REDIS__PORT", "99999999")
    result = runner.invoke(app, ["infra", "status"])
    assert result.exit_code == 2
    assert "DRIFTLINE_REDIS__PORT" in result.output
    assert "Traceback" not in result.output


def test_cli_run_refuses_a_service_that_is_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor.importlib.util, "find_spec", lambda name: None)
    result = runner.invoke(app, ["run", "monitoring"])
    assert result.exit_code == 2
    assert "service monitoring is not built yet" in result.output
    result = runner.invoke(app, ["run", "nonsense"])
    assert result.exit_code == 2 and "unknown service" in result.output


def test_cli_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("infra", "run", "up", "down", "status"):
        assert command in result.output


def test_free_port_never_hands_out_a_port_twice_before_its_server_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker's port picked first and a service's picked later, both before either
    binds: the second call must not return the first's port though it is still free."""
    from driftline.devtools.infra import ports

    class SameFirst:
        def __init__(self) -> None:
            self.draws = iter([12345, 12345, 12346])

        def randrange(self, low: int, high: int) -> int:
            return next(self.draws)

    monkeypatch.setattr(ports.random, "SystemRandom", SameFirst)
    monkeypatch.setattr(ports, "port_is_free", lambda host, port: True)
    monkeypatch.setattr(ports, "_HANDED_OUT", type(ports._HANDED_OUT)())
    assert ports.free_port() == 12345
    monkeypatch.setattr(ports.random, "SystemRandom", SameFirst)
    assert ports.free_port() == 12346
