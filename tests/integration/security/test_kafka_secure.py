"""The broker in secure mode: each service principal may do what the access table gives
it and nothing else; plaintext, a foreign or expired certificate and a wrong password are
refused. One secure broker for the module; kcat (a client the project did not write)
checks the same from outside.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from driftline.contracts.access import KAFKA_ACCESS
from driftline.contracts.topics import ALL_TOPICS, EVENTS_VALID, MODELS, topic_by_name
from driftline.devtools.infra import KafkaNode, free_port, pki
from driftline.devtools.infra.readiness import kafka_answers
from driftline.features.state_table import ensure_changelog
from driftline.features.worker import CHANGELOG_TOPIC
from driftline.kafkaio import provision_topics
from driftline.security.credentials import Credentials
from driftline.security.kafka_auth import KafkaAuth, kafka_auth_of, kafka_client_options
from driftline.settings import KafkaSettings
from driftline.settings.models import InfraSettings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaNode, Path]]:
    """A secure broker with the ACLs applied and the topics provisioned by admin."""
    root = tmp_path_factory.mktemp("kafka-secure")
    creds = root / "credentials"
    pki.write_credentials(creds)
    infra = InfraSettings()
    port = free_port()
    node = KafkaNode(
        root / "state",
        port=port,
        controller_port=free_port(exclude=frozenset({port})),
        kafka_version=infra.kafka_version,
        jar_cache=infra.jar_cache,
        infra_dir=REPO / "infra",
        secure_credentials=creds,
    )
    node.start(timeout_s=120.0)
    try:
        assert node.apply_acls() > 0
        admin = node.admin_auth()
        settings = KafkaSettings(bootstrap_servers=node.bootstrap_servers)
        asyncio.run(provision_topics(settings, security=admin))
        yield node, creds
    finally:
        node.stop(timeout_s=20.0)


def _auth(creds: Path, identity: str) -> KafkaAuth:
    return kafka_auth_of(Credentials(creds, identity))


async def _produce(node: KafkaNode, auth: KafkaAuth, topic: str, value: bytes) -> None:
    """One keyed record (the changelog is compacted: it takes keyed records only)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=node.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10_000,
        **kafka_client_options(auth),
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _read_all(node: KafkaNode, auth: KafkaAuth, topic: str) -> list[bytes]:
    """Every record of ``topic`` up to its end now, read without a group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=node.bootstrap_servers, group_id=None, **kafka_client_options(auth)
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(topic_by_name(topic).partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[bytes] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(r.value for r in records if r.value is not None)
        return out
    finally:
        await consumer.stop()


def test_each_principal_does_what_the_table_gives_it(secure: tuple[KafkaNode, Path]) -> None:
    node, creds = secure
    admin = node.admin_auth()
    assert admin is not None

    async def run() -> None:
        for declared in ALL_TOPICS:  # something to read everywhere
            await _produce(node, admin, declared.name, b"seed")
        for access in KAFKA_ACCESS:
            auth = _auth(creds, access.principal)
            for topic in access.produces:
                await _produce(node, auth, topic, f"by {access.principal}".encode())
            for topic in access.consumes:
                assert b"seed" in await _read_all(node, auth, topic), (access.principal, topic)
            for prefix in access.groups:
                consumer = AIOKafkaConsumer(
                    access.consumes[0],
                    bootstrap_servers=node.bootstrap_servers,
                    group_id=f"{prefix}-test",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    **kafka_client_options(auth),
                )
                await consumer.start()
                try:
                    assert await consumer.getmany(timeout_ms=10_000)
                    await consumer.commit()
                finally:
                    await consumer.stop()
        # Ingestion's transactions, under its transactional-id prefix.
        producer = AIOKafkaProducer(
            bootstrap_servers=node.bootstrap_servers,
            transactional_id="driftline-ingestion-test",
            **kafka_client_options(_auth(creds, "ingestion")),
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send(EVENTS_VALID.name, b"in a transaction")
        finally:
            await producer.stop()
        assert b"in a transaction" in await _read_all(node, admin, EVENTS_VALID.name)
        assert b"by ingestion" in await _read_all(node, admin, EVENTS_VALID.name)
        # The features worker makes its own changelog (its prefix), nothing else.
        features = _auth(creds, "features")
        await ensure_changelog(node.bootstrap_servers, CHANGELOG_TOPIC, 6, 1, security=features)
        await _produce(node, features, CHANGELOG_TOPIC, b"state")
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(node, _auth(creds, "monitoring"), CHANGELOG_TOPIC, b"forged")

    asyncio.run(run())


def test_ingestion_cannot_write_models(secure: tuple[KafkaNode, Path]) -> None:
    node, creds = secure
    admin = node.admin_auth()
    assert admin is not None

    async def run() -> None:
        before = await _read_all(node, admin, MODELS.name)
        for principal in ("ingestion", "serving", "monitoring", "client"):
            with pytest.raises(TopicAuthorizationFailedError) as err:
                await _produce(node, _auth(creds, principal), MODELS.name, b"forged promotion")
            assert "TOPIC_AUTHORIZATION_FAILED" in repr(err.value) or err.value.errno == 29
        assert await _read_all(node, admin, MODELS.name) == before

    asyncio.run(run())


def test_training_cannot_read_what_it_was_not_given(secure: tuple[KafkaNode, Path]) -> None:
    node, creds = secure

    async def run() -> None:
        with pytest.raises(TopicAuthorizationFailedError):
            await _read_all(node, _auth(creds, "training"), MODELS.name)

    asyncio.run(run())


def test_plaintext_is_refused(secure: tuple[KafkaNode, Path]) -> None:
    node, _ = secure
    assert not kafka_answers(node.bootstrap_servers, timeout_s=5.0)
    assert kafka_answers(node.bootstrap_servers, timeout_s=10.0, security=node.admin_auth())


def _with_certificate(
    tmp_path: Path,
    auth: KafkaAuth,
    ca: pki.CertificateAuthority,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> KafkaAuth:
    """``auth`` presenting a certificate ``ca`` issued (same SCRAM user and password)."""
    key, cert = pki.issue(ca, auth.identity, not_before=not_before, not_after=not_after)
    directory = tmp_path / auth.identity
    pki.write_identity(directory, ca, key, cert, secrets_too=False)
    return replace(auth, cert_file=directory / "tls.crt", key_file=directory / "tls.key")


def test_a_certificate_from_another_ca_is_refused(
    secure: tuple[KafkaNode, Path], tmp_path: Path
) -> None:
    node, creds = secure
    good = _auth(creds, "ingestion")
    foreign = _with_certificate(tmp_path, good, pki.new_ca("Someone else's CA"))
    # Same SCRAM user and password: only the certificate differs.
    assert kafka_answers(node.bootstrap_servers, timeout_s=10.0, security=good)
    assert not kafka_answers(node.bootstrap_servers, timeout_s=5.0, security=foreign)


def test_an_expired_certificate_is_refused(secure: tuple[KafkaNode, Path], tmp_path: Path) -> None:
    node, creds = secure
    now = dt.datetime.now(dt.UTC)
    expired = _with_certificate(
        tmp_path,
        _auth(creds, "ingestion"),
        pki.load_ca(creds),
        not_before=now - dt.timedelta(days=2),
        not_after=now - dt.timedelta(days=1),
    )
    assert not kafka_answers(node.bootstrap_servers, timeout_s=5.0, security=expired)


def test_a_wrong_password_is_refused(secure: tuple[KafkaNode, Path]) -> None:
    node, creds = secure
    wrong = replace(_auth(creds, "ingestion"), password=SecretStr("not-the-password"))
    assert not kafka_answers(node.bootstrap_servers, timeout_s=5.0, security=wrong)


def _kcat(node: KafkaNode, *settings: str) -> subprocess.CompletedProcess[str]:
    args = [a for setting in settings for a in ("-X", setting)]
    return subprocess.run(
        ["kcat", "-b", node.bootstrap_servers, *args, "-L", "-m", "5", "-d", "security"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_sees_the_same(secure: tuple[KafkaNode, Path], tmp_path: Path) -> None:
    """An outside client (librdkafka): plaintext is refused; over TLS it verifies the
    broker's certificate against the CA, and refuses the broker when it trusts another CA.

    (kcat's own SCRAM login, librdkafka 2.0.2 here, is refused by this broker although
    aiokafka's succeeds with the same password: not asserted, see the module's report.)
    """
    node, creds = secure
    plaintext = _kcat(node)
    assert plaintext.returncode != 0
    assert "Failed to acquire metadata" in plaintext.stderr
    tls = [
        "security.protocol=SASL_SSL",
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=ingestion",
        f"ssl.certificate.location={creds / 'ingestion' / 'tls.crt'}",
        f"ssl.key.location={creds / 'ingestion' / 'tls.key'}",
    ]
    password = (creds / "ingestion" / "kafka.password").read_text().strip()
    trusted = _kcat(node, *tls, f"sasl.password={password}", f"ssl.ca.location={creds / 'ca.crt'}")
    assert "Broker SSL certificate verified" in trusted.stderr, trusted.stderr[-2000:]
    other = tmp_path / "other-ca.crt"
    other.write_bytes(pki.new_ca("Someone else's CA").cert_pem())
    distrusted = _kcat(node, *tls, f"sasl.password={password}", f"ssl.ca.location={other}")
    assert distrusted.returncode != 0
    assert "Broker SSL certificate verified" not in distrusted.stderr
    assert "certificate verify failed" in distrusted.stderr, distrusted.stderr[-2000:]
