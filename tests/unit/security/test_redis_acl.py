"""Redis secure mode without a server: the ACL table against the code that uses Redis,
the generated ACL file, the client factory and the node's rendered configuration."""

from __future__ import annotations

import hashlib
import re
import stat
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from pydantic import SecretStr

from driftline.devtools.infra import RedisNode, pki
from driftline.ingestion.dedup import RedisDedupStore
from driftline.online_store import redis_store
from driftline.online_store.redis_store import MARKER_KEY, STORE_IDENTITY, entity_key
from driftline.security import CredentialsError
from driftline.security.redis_acl import (
    DEFAULT_USER_LINE,
    REDIS_GRANTS,
    acl_file_text,
    acl_line,
    grant_for,
)
from driftline.security.redis_auth import redis_auth, redis_connection
from driftline.settings import PlatformSettings, SecuritySettings

REPO = Path(__file__).resolve().parents[3]


def _patterns(identity: str) -> list[str]:
    grant = grant_for(identity)
    assert grant is not None, f"{identity} has no Redis user"
    return [p.split("~", 1)[1] for p in grant.keys]


def _granted(identity: str, command: str) -> bool:
    grant = grant_for(identity)
    assert grant is not None
    return f"+{command.lower()}" in grant.commands or "+@all" in grant.commands


def _script_commands(script: str) -> set[str]:
    return {c.lower() for c in re.findall(r"redis\.call\('(\w+)'", script)}


def test_every_row_is_an_identity_with_credentials() -> None:
    identities = [g.identity for g in REDIS_GRANTS]
    assert len(set(identities)) == len(identities)
    assert set(identities) <= set(pki.DEFAULT_IDENTITIES)
    assert "default" not in identities
    for identity in ("serving", "monitoring", "training", "registry", "client"):
        assert grant_for(identity) is None, f"{identity} does not use Redis"


def test_the_online_store_keys_and_scripts_are_features_and_only_features() -> None:
    keys = [entity_key("fs", "e-1"), entity_key("a:b", "x y"), MARKER_KEY]
    assert STORE_IDENTITY == "features"
    for key in keys:
        assert any(fnmatchcase(key, p) for p in _patterns("features")), key
        assert not any(fnmatchcase(key, p) for p in _patterns("ingestion")), key
    used = _script_commands(redis_store._WRITE_SCRIPT) | _script_commands(redis_store._READ_SCRIPT)
    assert used == {"hmget", "hset", "pexpire"}
    for command in (*used, "evalsha", "script|load", "get", "set", "ping"):
        assert _granted("features", command), command
    for command in ("eval", "flushall", "flushdb", "keys", "del", "acl|setuser", "config|set"):
        assert not _granted("features", command), command


def test_the_dedup_window_is_ingestion_and_only_ingestion() -> None:
    key = "dl:dedup:" + "event-1"
    assert any(fnmatchcase(key, p) for p in _patterns("ingestion"))
    assert not any(fnmatchcase(key, p) for p in _patterns("features"))
    used = _script_commands(RedisDedupStore._RELEASE)
    assert used == {"get", "del"}
    for command in (*used, "set", "evalsha", "script|load", "script|exists", "ping"):
        assert _granted("ingestion", command), command
    for command in ("hmget", "hset", "flushall", "keys", "eval"):
        assert not _granted("ingestion", command), command


def test_the_acl_file_hashes_every_password_and_disables_default(tmp_path: Path) -> None:
    pki.write_credentials(tmp_path)
    text = acl_file_text(tmp_path)
    lines = text.splitlines()
    assert lines[0] == DEFAULT_USER_LINE and "off" in lines[0].split()
    assert [line.split()[1] for line in lines[1:]] == [g.identity for g in REDIS_GRANTS]
    assert not any(line.lstrip().startswith("#") for line in lines)  # no comments allowed
    for grant in REDIS_GRANTS:
        password = (tmp_path / grant.identity / "redis.password").read_text().strip()
        assert password not in text
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in text
    line = acl_line(grant_for("features"), SecretStr("pw"))  # type: ignore[arg-type]
    assert line.index("-@all") < line.index("+hmget")  # deny first, then allow
    assert "resetkeys ~dl:f:*" in line and "resetchannels -@all" in line


def test_a_missing_password_names_its_file(tmp_path: Path) -> None:
    pki.write_credentials(tmp_path, ["features", "admin"])
    with pytest.raises(CredentialsError, match=r"ingestion's redis.password is missing"):
        acl_file_text(tmp_path)


def test_the_factory_leaves_plaintext_alone_and_hides_the_password(tmp_path: Path) -> None:
    assert redis_auth(PlatformSettings(), "features") is None
    assert redis_connection("redis://h:1/2", None) == ("redis://h:1/2", {})
    pki.write_credentials(tmp_path, ["ingestion"])
    auth = redis_auth(SecuritySettings(enabled=True, credentials_dir=tmp_path), "ingestion")
    assert auth is not None and auth.username == "ingestion"
    password = (tmp_path / "ingestion" / "redis.password").read_text().strip()
    assert password not in repr(auth) and password not in str(auth)
    url, kwargs = redis_connection("redis://h:1/2", auth)
    assert url == "rediss://h:1/2"
    assert kwargs["password"] == password and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    assert auth.redis_kwargs()["ssl"] is True
    context = auth.pipelined_kwargs()["ssl"]
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
    other = redis_auth(
        SecuritySettings(enabled=True, credentials_dir=tmp_path, identity="ingestion"), "x"
    )
    assert other is not None and other.username == "ingestion"  # security.identity wins
    with pytest.raises(ValueError, match="unix://") as bad:
        redis_connection("unix://user:secret@/tmp/s", auth)
    assert "secret" not in str(bad.value)


def test_the_secure_node_renders_tls_only_with_a_private_acl_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("driftline.devtools.infra.redis_node.require_tool", lambda name, **_: name)
    creds = tmp_path / "creds"
    pki.write_credentials(creds)
    node = RedisNode(
        tmp_path / "state", port=16380, infra_dir=REPO / "infra", secure_credentials=creds
    )
    node.prepare()
    main = node.config_file.read_text()
    assert main.rstrip().endswith(f'include "{node.secure_config_file}"')
    secure = node.secure_config_file.read_text()
    for line in (
        "port 0",
        "tls-port 16380",
        "tls-auth-clients yes",
        f'tls-ca-cert-file "{creds / "ca.crt"}"',
        f'tls-cert-file "{creds / "redis" / "tls.crt"}"',
        f'aclfile "{node.acl_file}"',
    ):
        assert f"\n{line}\n" in secure, line
    assert stat.S_IMODE(node.acl_file.stat().st_mode) == 0o600
    assert node.acl_file.read_text() == acl_file_text(creds)
    first = (creds / "redis" / "tls.crt").read_bytes()
    node.prepare()  # a restart keeps the server certificate
    assert (creds / "redis" / "tls.crt").read_bytes() == first
    settings = PlatformSettings(security={"enabled": True, "credentials_dir": creds})
    assert RedisNode.from_settings(settings).secure
    assert not RedisNode.from_settings(PlatformSettings()).secure
    plain = RedisNode(tmp_path / "plain", port=16381, infra_dir=REPO / "infra")
    plain.prepare()
    directives = [
        line.split()[0]
        for line in plain.config_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "include" not in directives and not any(d.startswith("tls-") for d in directives)
    assert "port" in directives
