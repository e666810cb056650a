"""The one factory of every Kafka client's security options."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from driftline.devtools.infra import pki
from driftline.security.credentials import CredentialsError
from driftline.security.kafka_auth import kafka_auth, kafka_client_options
from driftline.settings import SecuritySettings


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("creds")
    pki.write_credentials(root, ["ingestion", "admin"])
    return root


def test_plaintext_when_secure_mode_is_off(credentials: Path) -> None:
    off = SecuritySettings(enabled=False, credentials_dir=credentials)
    assert kafka_auth(off, "ingestion") is None
    assert kafka_client_options(None) == {}


def test_options_are_sasl_ssl_as_the_identity_over_mutual_tls(credentials: Path) -> None:
    security = SecuritySettings(
        enabled=True, credentials_dir=credentials, kafka_sasl_mechanism="SCRAM-SHA-256"
    )
    auth = kafka_auth(security, "ingestion")
    assert auth is not None
    options = kafka_client_options(auth)
    password = (credentials / "ingestion" / "kafka.password").read_text().strip()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "ingestion"
    assert options["sasl_plain_password"] == password
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    # The CA is the one trusted, and nothing else.
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "Driftline local CA"),),)
    ]


def test_the_identity_setting_overrides_the_service_name(credentials: Path) -> None:
    security = SecuritySettings(enabled=True, credentials_dir=credentials, identity="admin")
    auth = kafka_auth(security, "ingestion")
    assert auth is not None and auth.identity == "admin"


def test_no_secret_in_repr_or_str(credentials: Path) -> None:
    auth = kafka_auth(SecuritySettings(enabled=True, credentials_dir=credentials), "ingestion")
    assert auth is not None
    password = auth.password.get_secret_value()
    assert password and password not in repr(auth) and password not in str(auth)
    assert "**********" in repr(auth)


def test_a_missing_password_is_named_with_the_setting(tmp_path: Path) -> None:
    pki.write_credentials(tmp_path, ["serving"])
    (tmp_path / "serving" / "kafka.password").unlink()
    with pytest.raises(CredentialsError, match=r"serving's kafka\.password is missing") as err:
        kafka_auth(SecuritySettings(enabled=True, credentials_dir=tmp_path), "serving")
    assert "DRIFTLINE_SECURITY__CREDENTIALS_DIR" in str(err.value)
