"""A ``redis-server`` with its data, config and log under the state directory."""

from __future__ import annotations

from pathlib import Path

from driftline.devtools.infra.component import LocalComponent, PortClaim
from driftline.devtools.infra.layout import find_infra_dir
from driftline.devtools.infra.readiness import redis_answers
from driftline.devtools.infra.templates import render_template_file
from driftline.devtools.infra.tools import require_tool
from driftline.settings import PlatformSettings

__all__ = ["RedisNode"]


class RedisNode(LocalComponent):
    """One ``redis-server`` (append-only file on) with all state under ``state_dir``."""

    name = "redis"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        executable: str = "redis-server",
        infra_dir: Path | None = None,
    ) -> None:
        super().__init__(state_dir)
        self.host = host
        self.port = port
        self.executable = executable
        self.infra_dir = infra_dir
        self.node_dir = self.state_dir / "redis"
        self.data_dir = self.node_dir / "data"
        self.config_file = self.node_dir / "redis.conf"

    @classmethod
    def from_settings(
        cls, settings: PlatformSettings, *, infra_dir: Path | None = None
    ) -> RedisNode:
        """The server ``driftline infra up`` runs for ``settings``."""
        return cls(
            settings.infra.state_dir,
            host=settings.redis.host,
            port=settings.redis.port,
            executable=settings.infra.redis_server,
            infra_dir=infra_dir,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def port_claims(self) -> list[PortClaim]:
        return [PortClaim(self.host, self.port, "Redis", "DRIFTLINE_REDIS__PORT")]

    def answering(self) -> bool:
        return redis_answers(self.host, self.port)

    def prepare(self) -> list[str]:
        executable = require_tool(self.executable, setting="DRIFTLINE_INFRA__REDIS_SERVER")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        render_template_file(
            find_infra_dir(self.infra_dir) / "redis" / "redis.conf.template",
            self.config_file,
            {
                "host": self.host,
                "port": self.port,
                "data_dir": self.data_dir,
                "pidfile": self.node_dir / "redis-server.pid",
            },
        )
        return [executable, str(self.config_file)]
