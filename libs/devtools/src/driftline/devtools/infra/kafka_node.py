"""A single-node Apache Kafka (KRaft, broker + controller) run from the Maven-fetched jars."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from driftline.devtools.infra.component import LocalComponent, PortClaim
from driftline.devtools.infra.errors import StartupError
from driftline.devtools.infra.jars import Progress, _stderr, fetch_kafka_jars
from driftline.devtools.infra.kafka_security import (
    BROKER_IDENTITY,
    acl_bindings,
    create_acls,
    ensure_broker_identity,
    scram_users,
)
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.ports import parse_host_port
from driftline.devtools.infra.readiness import _run_sync, coordinators_ready, kafka_answers
from driftline.devtools.infra.templates import render_template, render_template_file
from driftline.devtools.infra.tools import require_tool
from driftline.security.credentials import CA_FILE, Credentials
from driftline.security.kafka_auth import KafkaAuth, kafka_auth_of
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


SECURITY_MODE_FILE = "security-mode"
"""Written next to the storage when it is formatted: ``secure`` or ``plaintext``."""


class KafkaNode(LocalComponent):
    """One KRaft node (``process.roles=broker,controller``) with all state under ``state_dir``.

    Usable on its own (tests run it on free ports in a temporary directory)::

        node = KafkaNode(tmp, port=19092, controller_port=19093)
        node.start()
        ... node.bootstrap_servers ...
        node.stop()

    With ``secure_credentials`` (the credentials directory ``pki.write_credentials``
    fills) it runs secure (``server.secure.properties.template``): the client listener
    is SASL_SSL (SCRAM-SHA-512/256) over TLS with client certificates required, every
    identity with a ``kafka.password`` is a SCRAM user from the start, and nothing is
    allowed that an ACL does not grant (``admin`` and the broker itself are super
    users). Once it answers, :meth:`apply_acls` creates the ACLs of
    :data:`driftline.contracts.access.KAFKA_ACCESS`::

        node = KafkaNode(tmp, port=19092, controller_port=19093, secure_credentials=creds)
        node.start()        # answers a metadata request as admin
        node.apply_acls()   # each service's ACLs (idempotent; run after every start)
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
        secure_credentials: Path | None = None,
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
        self.secure_credentials = (
            secure_credentials.expanduser().absolute() if secure_credentials else None
        )
        self.mode_file = self.node_dir / SECURITY_MODE_FILE

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        infra_dir: Path | None = None,
        progress: Progress = _stderr,
    ) -> KafkaNode:
        """The node ``driftline infra up`` runs for ``settings`` (secure when
        ``security.enabled``, with the credentials of ``security.credentials_dir``)."""
        host, port = parse_host_port(settings.kafka.bootstrap_servers)
        security = settings.security
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
            secure_credentials=security.credentials_dir if security.enabled else None,
        )

    @property
    def secure(self) -> bool:
        """Whether the node runs in secure mode."""
        return self.secure_credentials is not None

    def admin_auth(self) -> KafkaAuth | None:
        """How ``admin`` (a super user) logs in; ``None`` when plaintext."""
        if self.secure_credentials is None:
            return None
        return kafka_auth_of(Credentials(self.secure_credentials, "admin"))

    def apply_acls(self, timeout_s: float = 30.0) -> int:
        """Create, as ``admin``, the ACLs the access table gives each service (secure mode
        only; returns how many: 0 when plaintext). Idempotent: run it after each start."""
        auth = self.admin_auth()
        if auth is None:
            return 0
        return _run_sync(
            lambda: create_acls(self.bootstrap_servers, auth, acl_bindings(), timeout_s)
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
        return kafka_answers(self.bootstrap_servers, security=self.admin_auth())

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
        if self.secure_credentials is not None:
            self._write_secure_config(infra / "kafka" / "server.secure.properties.template")
        else:
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

    def _write_secure_config(self, template: Path) -> None:
        """Render the secure template with the broker's identity into a ``0600`` file."""
        root = self.secure_credentials
        assert root is not None
        broker = ensure_broker_identity(root, [self.host])
        text = render_template(
            template.read_text(encoding="utf-8"),
            {
                "host": self.host,
                "port": self.port,
                "controller_port": self.controller_port,
                "log_dir": self.data_dir,
                "keystore": broker.directory / "tls.p12",
                "keystore_password": broker.secret("tls.p12.password").get_secret_value(),
                "truststore": broker.ca_file,
                "broker_user": BROKER_IDENTITY,
                "broker_password": broker.secret("kafka.password").get_secret_value(),
                "super_users": f"User:admin;User:{BROKER_IDENTITY}",
            },
            source=str(template),
        )
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_name(self.config_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        tmp.chmod(0o600)
        tmp.replace(self.config_file)

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
        """Format the storage directory (for the cluster :meth:`_format_identity` names: a new
        single-node one here); return the cluster id."""
        cluster_id, quorum_args = self._format_identity()
        cmd = [
            *self._jvm(libs, "256m"),
            "kafka.tools.StorageTool",
            "format",
            *quorum_args,
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_file),
        ]
        # Secure mode: every identity's SCRAM user exists from the first start (the tool
        # takes them only as arguments; its output is scrubbed of them before logging).
        passwords: list[str] = []
        if self.secure_credentials is not None:
            for user, secret in scram_users(self.secure_credentials):
                password = secret.get_secret_value()
                passwords.append(password)
                for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                    cmd += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        output = result.stdout + result.stderr
        for password in passwords:
            output = output.replace(password, "**********")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a", encoding="utf-8") as log:
            log.write(f"\n=== driftline: formatting storage (cluster id {cluster_id}) ===\n")
            log.write(output)
        if result.returncode == 0:
            self.mode_file.write_text(self._mode + "\n", encoding="utf-8")
        else:
            tail = "\n".join(output.strip().splitlines()[-30:])
            raise StartupError(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit {result.returncode}):\n{tail}"
            )
        return cluster_id

    def _format_identity(self) -> tuple[str, list[str]]:
        """The cluster id to format with and how the controller quorum forms: a new id, and
        this node alone (``--standalone``). A node of a larger cluster overrides it."""
        return new_cluster_id(), ["--standalone"]

    @property
    def _mode(self) -> str:
        return "secure" if self.secure else "plaintext"

    def _check_mode(self) -> None:
        """Storage formatted in the other mode has no SCRAM users (or has them for
        nothing): refuse to start rather than run a broker nobody can log in to."""
        formatted = (
            self.mode_file.read_text(encoding="utf-8").strip()
            if self.mode_file.is_file()
            else "plaintext"
        )
        if formatted != self._mode:
            raise StartupError(
                f"the Kafka storage in {self.data_dir} was formatted for {formatted} mode, "
                f"not {self._mode} (security.enabled); remove {self.node_dir} (its topics "
                "and records go with it) or switch security.enabled back"
            )

    standalone = True
    """Whether this node is a broker by itself, so that its start waits for the
    coordinators (a cluster's node leaves that to the cluster: ``__transaction_state``
    needs all its brokers)."""

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until it answers; in secure mode then create the access table's ACLs (every
        start path does this: ``infra up``, ``up``, the demo, tests); then, when
        :attr:`standalone`, :meth:`check_coordinators`."""
        deadline = time.monotonic() + timeout_s
        super().wait_ready(timeout_s)
        self.apply_acls()
        if self.standalone:
            self.check_coordinators(max(1.0, deadline - time.monotonic()))

    def check_coordinators(self, timeout_s: float) -> None:
        """Wait until the transaction and group coordinators answer
        (:func:`coordinators_ready`).

        Services join groups and write transactions the moment they are up; this way
        the broker has created ``__transaction_state`` and ``__consumer_offsets`` before,
        not while they start.
        """
        if not coordinators_ready(self.bootstrap_servers, timeout_s, security=self.admin_auth()):
            raise StartupError(
                f"Kafka at {self.bootstrap_servers} answers, but its transaction or group "
                f"coordinator did not within {timeout_s:.0f}s; see {self.log_file}"
            )

    def prepare(self) -> list[str]:
        libs = self.libs_dir()
        if (
            self.secure_credentials is not None
            and not (self.secure_credentials / CA_FILE).is_file()
        ):
            raise StartupError(
                f"secure Kafka: no CA certificate in {self.secure_credentials}; run "
                "`driftline infra up --secure` to write the local credentials"
            )
        self.write_config()
        if self.formatted:
            self._check_mode()
        else:
            self.format_storage(libs)
        return [*self._jvm(libs, self.heap), "kafka.Kafka", str(self.config_file)]
