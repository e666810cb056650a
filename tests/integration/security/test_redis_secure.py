"""Redis in secure mode, on one real redis-server (TLS only, client certificates, ACL users).

The server is :class:`RedisNode` with the credentials ``pki.write_credentials`` makes,
as ``driftline infra up --secure`` runs it; every client is built by
:mod:`driftline.security.redis_auth`, as the services build theirs. What must be refused
is: a plaintext client, a certificate from another CA, an expired certificate, a wrong
password, and any identity outside its row of :data:`REDIS_GRANTS`. ``redis-cli`` checks
a few of these from outside Python.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError

from driftline.devtools.infra import RedisNode, free_port, pki
from driftline.devtools.infra.readiness import redis_answers
from driftline.ingestion.dedup import RedisDedupStore
from driftline.online_store import (
    EntityWrite,
    FeatureStatus,
    OnlineStore,
    StoreUnavailable,
    create_online_store,
)
from driftline.online_store.checks import ALL_CHECKS, GENERATION_MARKER_CHECKS, SPEC
from driftline.online_store.redis_store import MARKER_KEY, RedisOnlineStore, entity_key
from driftline.online_store.resp import PipelinedRedis
from driftline.security.redis_auth import RedisAuth, redis_auth, redis_connection
from driftline.settings import PlatformSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("redis-creds")
    pki.write_credentials(root)
    return root


@pytest.fixture(scope="module")
def node(creds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    node = RedisNode(
        tmp_path_factory.mktemp("redis-secure"),
        port=free_port(),
        infra_dir=ROOT / "infra",
        secure_credentials=creds,
    )
    node.start(timeout_s=30.0)
    try:
        yield node
    finally:
        node.stop(timeout_s=10.0)


def _settings(node: RedisNode, creds: Path) -> PlatformSettings:
    return PlatformSettings(
        redis={"host": node.host, "port": node.port},
        security={"enabled": True, "credentials_dir": creds},
    )


def _auth(node: RedisNode, creds: Path, identity: str) -> RedisAuth:
    auth = redis_auth(_settings(node, creds), identity)
    assert auth is not None
    return auth


def _client(node: RedisNode, auth: RedisAuth) -> Redis:
    url, secure = redis_connection(node.url, auth)
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, **secure)


async def _flush(node: RedisNode, creds: Path) -> None:
    admin = _client(node, _auth(node, creds, "admin"))
    try:
        await admin.flushdb()
    finally:
        await admin.aclose()


def _redis_cli(
    node: RedisNode, creds: Path, identity: str, *command: str, tls: bool = True
) -> subprocess.CompletedProcess[str]:
    """``redis-cli`` as ``identity``: its certificate, its password through REDISCLI_AUTH
    (not the command line, which other users can see)."""
    who = creds / identity
    argv = ["redis-cli", "-h", node.host, "-p", str(node.port), "--user", identity]
    if tls:
        argv += [
            "--tls",
            "--cacert",
            str(creds / "ca.crt"),
            "--cert",
            str(who / "tls.crt"),
            "--key",
            str(who / "tls.key"),
        ]
    env = {**os.environ, "REDISCLI_AUTH": (who / "redis.password").read_text().strip()}
    return subprocess.run(
        [*argv, *command], env=env, capture_output=True, text=True, timeout=20, check=False
    )


# -- (a) the features identity runs the real online store over TLS ----------------------


@pytest.mark.parametrize(
    "check", [*ALL_CHECKS, *GENERATION_MARKER_CHECKS], ids=lambda c: c.__name__
)
async def test_the_online_store_passes_its_conformance_suite_as_features(
    check: Callable[[OnlineStore], Awaitable[None]], node: RedisNode, creds: Path
) -> None:
    """Built as the features service builds it (settings, identity ``features``): both
    the redis-py write path and the pipelined read path speak TLS and log in, and the
    ``features`` ACL row covers every command and key the store's scripts use."""
    await _flush(node, creds)
    store = create_online_store(_settings(node, creds))
    assert isinstance(store, RedisOnlineStore)
    try:
        await check(store)
    finally:
        await store.close()


async def test_features_writes_and_reads_over_tls_as_itself(node: RedisNode, creds: Path) -> None:
    await _flush(node, creds)
    store = create_online_store(_settings(node, creds))
    assert isinstance(store, RedisOnlineStore)
    try:
        await store.write(SPEC.name, [EntityWrite("e1", {"x": (1.5, 1_000_000)})])
        [[read]] = await store.read(SPEC, ["e1"], ["x"], now=1.0)
        assert (read.value, read.status) == (1.5, FeatureStatus.PRESENT)
    finally:
        await store.close()
    # From outside Python: nothing the store (and the conformance suite before) ran was
    # denied, who is who, and what features wrote.
    log = _redis_cli(node, creds, "admin", "ACL", "LOG")
    assert "features" not in log.stdout, f"the store ran something its ACL denies:\n{log.stdout}"
    assert _redis_cli(node, creds, "admin", "ACL", "WHOAMI").stdout.strip() == "admin"
    whoami = _redis_cli(node, creds, "features", "ACL", "WHOAMI")
    assert "NOPERM" in whoami.stdout + whoami.stderr, whoami  # features runs no ACL command
    stored = _redis_cli(node, creds, "features", "HMGET", entity_key(SPEC.name, "e1"), "x")
    assert stored.stdout.strip() == "1000000|1.5", stored


async def test_ingestion_dedups_through_its_own_user(node: RedisNode, creds: Path) -> None:
    """The dedup window (SET NX PX GET claims, the release script) as ``ingestion``."""
    redis = _client(node, _auth(node, creds, "ingestion"))
    try:
        dedup = RedisDedupStore(redis, window_s=30)
        assert await dedup.claim_many([("ev-1", "p:0:1"), ("ev-1", "p:0:2")]) == [True, False]
        await dedup.release_many([("ev-1", "p:0:1")])
        assert await dedup.claim_many([("ev-1", "p:0:3")]) == [True]
        assert await redis.ping()
    finally:
        await redis.aclose()


def test_readiness_answers_only_with_a_login(node: RedisNode, creds: Path) -> None:
    assert node.answering()  # admin's certificate and password
    assert redis_answers(node.host, node.port, auth=_auth(node, creds, "features"))
    assert not redis_answers(node.host, node.port, timeout_s=0.5)  # plaintext


# -- (b)-(d) what the TLS port refuses ---------------------------------------------------


async def test_a_plaintext_client_is_refused(node: RedisNode, creds: Path) -> None:
    plain = Redis(host=node.host, port=node.port, socket_timeout=1, socket_connect_timeout=1)
    try:
        with pytest.raises(ConnectionError):
            await plain.ping()
    finally:
        await plain.aclose()
    pipelined = PipelinedRedis(node.url, timeout_s=1)
    try:
        with pytest.raises((ConnectionError, TimeoutError)):
            await pipelined.execute("PING")
    finally:
        await pipelined.close()
    cli = _redis_cli(node, creds, "admin", "PING", tls=False)
    assert "PONG" not in cli.stdout, cli


def _foreign_auth(
    tmp: Path, auth: RedisAuth, ca: pki.CertificateAuthority, **validity: dt.datetime
) -> RedisAuth:
    """``auth`` with a certificate ``ca`` issues (the same user and password)."""
    key, cert = pki.issue(ca, auth.username, **validity)
    directory = tmp / "foreign"
    pki.write_identity(directory, ca, key, cert, secrets_too=False)
    return RedisAuth(
        auth.username, auth.password, auth.ca_file, directory / "tls.crt", directory / "tls.key"
    )


async def _refused(node: RedisNode, auth: RedisAuth) -> None:
    """Neither client gets an answer with ``auth``: the server drops the handshake."""
    client = _client(node, auth)
    try:
        with pytest.raises(ConnectionError):
            await client.ping()
    finally:
        await client.aclose()
    pipelined = PipelinedRedis(node.url, timeout_s=3, **auth.pipelined_kwargs())
    try:
        with pytest.raises(ConnectionError):
            await pipelined.execute("PING")
    finally:
        await pipelined.close()


async def test_a_certificate_from_another_ca_is_refused(
    node: RedisNode, creds: Path, tmp_path: Path
) -> None:
    auth = _auth(node, creds, "features")
    other = pki.new_ca("Someone else's CA")
    await _refused(node, _foreign_auth(tmp_path, auth, other))
    # ... and a client that trusts only that CA refuses the server in turn.
    trusting_other = tmp_path / "other-ca.crt"
    trusting_other.write_bytes(other.cert_pem())
    mistrusting = RedisAuth(
        auth.username, auth.password, trusting_other, auth.cert_file, auth.key_file
    )
    await _refused(node, mistrusting)


async def test_an_expired_certificate_is_refused(
    node: RedisNode, creds: Path, tmp_path: Path
) -> None:
    auth = _auth(node, creds, "features")
    now = dt.datetime.now(dt.UTC)
    # The control: a fresh certificate made the same way is accepted.
    fresh = _foreign_auth(tmp_path / "fresh", auth, pki.load_ca(creds))
    pipelined = PipelinedRedis(node.url, timeout_s=3, **fresh.pipelined_kwargs())
    try:
        assert await pipelined.execute("PING") == b"PONG"
    finally:
        await pipelined.close()
    expired = _foreign_auth(
        tmp_path,
        auth,
        pki.load_ca(creds),  # the platform's own CA: only the dates are wrong
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    await _refused(node, expired)


# -- (e) each identity only its row of the table ----------------------------------------


async def test_ingestion_cannot_touch_the_online_store(node: RedisNode, creds: Path) -> None:
    await _flush(node, creds)
    key = entity_key(SPEC.name, "e1")
    store = RedisOnlineStore(node.url, auth=_auth(node, creds, "ingestion"))
    try:
        with pytest.raises(StoreUnavailable, match="no permissions"):
            await store.write(SPEC.name, [EntityWrite("e1", {"x": (1.0, 1)})])
        with pytest.raises(StoreUnavailable, match="no permissions"):
            await store.read(SPEC, ["e1"], ["x"], now=1.0)
        assert store.generation_marker is not None
        with pytest.raises(StoreUnavailable, match="no permissions"):
            await store.generation_marker.claim("mine")
    finally:
        await store.close()
    redis = _client(node, _auth(node, creds, "ingestion"))
    try:
        for command in (("HGET", key, "x"), ("DEL", MARKER_KEY), ("FLUSHALL",), ("KEYS", "*")):
            with pytest.raises(NoPermissionError):
                await redis.execute_command(*command)
    finally:
        await redis.aclose()
    cli = _redis_cli(node, creds, "ingestion", "HSET", key, "x", "1|1")
    assert "NOPERM" in cli.stdout + cli.stderr, cli
    admin = _client(node, _auth(node, creds, "admin"))
    try:
        assert await admin.exists(key, MARKER_KEY) == 0
    finally:
        await admin.aclose()


async def test_features_cannot_touch_the_dedup_window(node: RedisNode, creds: Path) -> None:
    redis = _client(node, _auth(node, creds, "features"))
    try:
        with pytest.raises(NoPermissionError):
            await redis.set("dl:dedup:ev-1", "p:0:1")
        with pytest.raises(NoPermissionError):
            await redis.execute_command("FLUSHDB")
    finally:
        await redis.aclose()


@pytest.mark.parametrize("identity", ["serving", "monitoring", "training", "registry", "client"])
async def test_identities_without_a_row_cannot_log_in(
    identity: str, node: RedisNode, creds: Path
) -> None:
    """Serving reads features through the features service, not Redis: no Redis user,
    so it can neither read nor write the online store; nor can the others."""
    auth = _auth(node, creds, identity)
    client = _client(node, auth)
    try:
        with pytest.raises(AuthenticationError):
            await client.set(entity_key(SPEC.name, "e1"), "x")
    finally:
        await client.aclose()


async def test_the_default_user_is_off(node: RedisNode, creds: Path) -> None:
    """A valid certificate without a login is the ``default`` user, which can do nothing."""
    auth = _auth(node, creds, "features")
    anonymous = {**auth.pipelined_kwargs(), "username": None, "password": None}
    pipelined = PipelinedRedis(node.url, timeout_s=3, **anonymous)
    try:
        with pytest.raises(AuthenticationError, match="NOAUTH"):
            await pipelined.execute("PING")
    finally:
        await pipelined.close()


# -- (f) a wrong password, and it is never repeated ---------------------------------------


async def test_a_wrong_password_is_refused_without_repeating_it(
    node: RedisNode, creds: Path
) -> None:
    wrong = "not-the-password-9f3b7c"
    auth = _auth(node, creds, "features").with_password(wrong)
    assert wrong not in repr(auth)
    client = _client(node, auth)
    try:
        with pytest.raises(AuthenticationError) as refused:
            await client.ping()
    finally:
        await client.aclose()
    pipelined = PipelinedRedis(node.url, timeout_s=3, **auth.pipelined_kwargs())
    try:
        with pytest.raises(AuthenticationError) as refused_too:
            await pipelined.execute("PING")
    finally:
        await pipelined.close()
    store = RedisOnlineStore(node.url, auth=auth)
    try:
        with pytest.raises(Exception) as unavailable:
            await store.read(SPEC, ["e1"], ["x"], now=1.0)
    finally:
        await store.close()
    real = _auth(node, creds, "features").password.get_secret_value()
    for error in (refused.value, refused_too.value, unavailable.value):
        text = f"{error!s} {error!r}"
        assert "WRONGPASS" in text or "invalid username-password" in text, text
        assert wrong not in text and real not in text, text
