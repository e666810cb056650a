"""A single-node Apache Kafka (KRaft, broker + controller) run from the Maven-fetched jars."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from driftline.devtools.infra.component import LocalComponent, PortClaim
from driftline.devtools.infra.errors import StartupError
from driftline.devtools.infra.jars import Progress, _stderr, fetch_kafka_jars
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.ports import parse_host_port
from driftline.devtools.infra.readiness import kafka_answers
from driftline.devtools.infra.templates import render_template_file
from driftline.devtools.infra.tools import require_tool
from driftline.settings import InfraSettings, PlatformSettings

__all__ = ["DEFAULT_JVM_OPTIONS", "KafkaNode", "new_cluster_id"]

DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    # C1 only: the local broker starts in about half the time (it is JIT-bound at
    # start); peak throughput is lower, which a laptop-scale platform never reaches.
    "-XX:TieredStopAtLevel=1",
)
"""JVM flags of the local broker besides heap, logging and classpath (``jvm_options``)."""


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID as 22 url-safe base64 characters, not starting with ``-``.

    >>> len(new_cluster_id())
    22
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaNode(LocalComponent):
    """One KRaft node (``process.roles=broker,controller``) with all state under ``state_dir``.

    Usable on its own (tests run it on free ports in a temporary directory)::

        node = KafkaNode(tmp, port=19092, controller_port=19093)
        node.start()
        ... node.bootstrap_servers ...
        node.stop()
    """

    name = "kafka"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        controller_port: int = 9093,
        kafka_version: str | None = None,
        jar_cache: Path | None = None,
        heap: str = "512m",
        infra_dir: Path | None = None,
        java: str = "java",
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        progress: Progress = _stderr,
    ) -> None:
        super().__init__(state_dir)
        defaults = InfraSettings()
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.kafka_version = kafka_version or defaults.kafka_version
        self.jar_cache = (jar_cache or defaults.jar_cache).expanduser()
        self.heap = heap
        self.infra_dir = infra_dir
        self.java = java
        self.jvm_options = list(jvm_options)
        self.progress = progress
        self.node_dir = self.state_dir / "kafka"
        self.data_dir = self.node_dir / "data"
        self.config_file = self.node_dir / "server.properties"
        self.log4j_file = self.node_dir / "log4j2.yaml"

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> KafkaNode:
        """The node ``driftline infra up`` runs for ``settings``."""
        host, port = parse_host_port(settings.kafka.bootstrap_servers)
        return cls(
            settings.infra.state_dir,
            host=host,
            port=port,
            controller_port=settings.kafka.controller_port,
            kafka_version=settings.infra.kafka_version,
            jar_cache=settings.infra.jar_cache,
            heap=settings.infra.kafka_heap,
            infra_dir=infra_dir,
            progress=progress,
        )

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` clients bootstrap from."""
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.bootstrap_servers

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(
                self.host, self.port, "the Kafka broker", "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"
            ),
            PortClaim(
                self.host,
                self.controller_port,
                "the Kafka controller",
                "DRIFTLINE_KAFKA__CONTROLLER_PORT",
            ),
        ]

    def answering(self) -> bool:
        return kafka_answers(self.bootstrap_servers)

    @property
    def formatted(self) -> bool:
        """Whether the storage directory has been formatted (``meta.properties`` exists)."""
        return (self.data_dir / "meta.properties").is_file()

    def libs_dir(self) -> Path:
        """The jar directory, fetched with Maven the first time."""
        pom = find_infra_dir(self.infra_dir) / "kafka" / "pom.xml"
        return fetch_kafka_jars(self.kafka_version, self.jar_cache, pom, progress=self.progress)

    def write_config(self) -> None:
        """Render ``server.properties`` and copy ``log4j2.yaml`` into the node directory."""
        infra = find_infra_dir(self.infra_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        render_template_file(
            infra / "kafka" / "server.properties.template",
            self.config_file,
            {
                "host": self.host,
                "port": self.port,
                "controller_port": self.controller_port,
                "log_dir": self.data_dir,
            },
        )
        shutil.copyfile(infra / "kafka" / "log4j2.yaml", self.log4j_file)

    def _jvm(self, libs: Path, heap: str) -> list[str]:
        return [
            require_tool(self.java),
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            *self.jvm_options,
            "-cp",
            f"{libs}/*",
        ]

    def format_storage(self, libs: Path) -> str:
        """Format the storage directory as a new single-node cluster; return the cluster id."""
        cluster_id = new_cluster_id()
        cmd = [
            *self._jvm(libs, "256m"),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_file),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(f"\n=== driftline: formatting storage (cluster id {cluster_id}) ===\n")
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise StartupError(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit {result.returncode}):\n{tail}"
            )
        return cluster_id

    def prepare(self) -> list[str]:
        libs = self.libs_dir()
        self.write_config()
        if not self.formatted:
            self.format_storage(libs)
        return [*self._jvm(libs, self.heap), "kafka.Kafka", str(self.config_file)]
