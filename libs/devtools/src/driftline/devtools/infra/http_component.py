"""What the ops stack's servers share: one HTTP port on loopback that says when it is ready."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from pathlib import Path

from driftline.devtools.infra.component import LocalComponent, PortClaim
from driftline.devtools.infra.errors import MissingToolError
from driftline.devtools.infra.readiness import http_answers
from driftline.devtools.infra.tools import require_tool

__all__ = ["NO_OPS_HINT", "HttpComponent", "PrometheusProjectServer", "or_without_ops"]

NO_OPS_HINT = (
    "or start the platform without the ops stack: --no-ops, or DRIFTLINE_INFRA__OPS__ENABLED=false"
)


@contextlib.contextmanager
def or_without_ops() -> Iterator[None]:
    """Add to a :class:`MissingToolError` that the ops stack can be left out."""
    try:
        yield
    except MissingToolError as exc:
        raise MissingToolError(f"{exc.message}; {NO_OPS_HINT}") from None


class HttpComponent(LocalComponent):
    """A :class:`LocalComponent` reached over HTTP: ready once ``GET <url><ready_path>`` is 200.

    Subclasses name the readiness path, what the port is for and the setting that
    chooses it (so a taken port's error says what to change).
    """

    ready_path: str = "/-/ready"
    what: str
    port_setting: str

    def __init__(self, state_dir: Path, *, host: str, port: int) -> None:
        super().__init__(state_dir)
        self.host = host
        self.port = port
        self.node_dir = self.state_dir / self.name

    @property
    def url(self) -> str:
        """``http://host:port``: the UI and API."""
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.url

    def port_claims(self) -> list[PortClaim]:
        return [PortClaim(self.host, self.port, self.what, self.port_setting)]

    def answering(self) -> bool:
        return http_answers(self.url + self.ready_path)


class PrometheusProjectServer(HttpComponent):
    """Prometheus or Alertmanager: one executable, a rendered config file and a data directory.

    Both take ``--config.file``, ``--web.listen-address`` and ``--web.external-url``
    (the URL their links and notifications carry); a subclass renders the config
    and names its own storage and other flags.
    """

    config_name: str
    executable_setting: str

    def __init__(self, state_dir: Path, *, host: str, port: int, executable: str) -> None:
        super().__init__(state_dir, host=host, port=port)
        self.executable = executable
        self.config_file = self.node_dir / self.config_name
        self.data_dir = self.node_dir / "data"

    @abc.abstractmethod
    def write_config(self) -> Path:
        """Render the config into :attr:`config_file`; return its path."""

    @abc.abstractmethod
    def server_flags(self) -> list[str]:
        """Flags besides config, listen address and external URL (storage…)."""

    def fetch(self) -> Path:
        """The executable's full path (:class:`MissingToolError` says what to install)."""
        with or_without_ops():
            return Path(require_tool(self.executable, setting=self.executable_setting))

    def prepare(self) -> list[str]:
        executable = str(self.fetch())
        self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            executable,
            f"--config.file={self.config_file}",
            f"--web.listen-address={self.host}:{self.port}",
            f"--web.external-url={self.url}/",
            *self.server_flags(),
        ]
