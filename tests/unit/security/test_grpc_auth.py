"""The registry's roles, the public APIs' keys and the files they are read from (no sockets:
a call's metadata and verified peer come from a stand-in context)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftline.contracts.errors import (
    FailedPreconditionError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from driftline.devtools.infra.pki import write_credentials
from driftline.ingestion.http_api import ingestion_api_keys
from driftline.registry.grpc_api import METHOD_ROLES
from driftline.registry.service import registry_roles
from driftline.security import grpc_tls
from driftline.security.api_keys import ApiKeyGuard, ApiKeys, HttpApiKeys, key_digest
from driftline.security.auth_files import write_auth_files
from driftline.security.credentials import CredentialsError
from driftline.security.roles import RoleBook, RoleGuard, token_digest
from driftline.serving.grpc_server import api_key_guard
from driftline.settings import PlatformSettings, SecuritySettings
from driftline.v1 import registry_pb2

pytestmark = pytest.mark.unit


class Ctx:
    """A servicer context: the call's metadata and its TLS peer (None: plaintext)."""

    def __init__(self, *metadata: tuple[str, str], peer: str | None = None) -> None:
        self.metadata = metadata
        self.peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {} if self.peer is None else {"x509_common_name": [self.peer.encode()]}


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


BOOK = RoleBook.parse(
    {
        "admin": {"identities": ["admin"]},
        "trainer": {"identities": ["training"]},
        "promoter": {"tokens": {"release": token_digest("p-tok")}},
        "reader": {"identities": ["client"], "tokens": {"dash": token_digest("r-tok")}},
    }
)


def test_every_registry_rpc_needs_a_named_role() -> None:
    rpcs = set(registry_pb2.DESCRIPTOR.services_by_name["Registry"].methods_by_name)
    assert set(METHOD_ROLES) == rpcs
    assert {METHOD_ROLES[m] for m in ("SetAlias", "DeleteAlias", "Rollback")} == {"promoter"}
    assert METHOD_ROLES["RegisterVersion"] == "trainer"


def test_a_token_overrides_the_certificate_and_a_refusal_names_the_role() -> None:
    guard = RoleGuard(BOOK, METHOD_ROLES, certificates=True, open_reads=False)
    guard.authorize("SetAlias", Ctx(bearer("p-tok"), peer="client"))
    guard.authorize("RegisterVersion", Ctx(peer="training"))
    guard.authorize("ListModels", Ctx(peer="training"))  # every role reads
    guard.authorize("Rollback", Ctx(peer="admin"))
    with pytest.raises(PermissionDeniedError) as denied:
        guard.authorize("SetAlias", Ctx(bearer("r-tok"), peer="admin"))
    assert denied.value.message == "SetAlias needs the promoter role; token 'dash' has reader"
    with pytest.raises(PermissionDeniedError, match="certificate 'training' has trainer"):
        guard.authorize("DeleteAlias", Ctx(peer="training"))
    with pytest.raises(UnauthenticatedError, match="bound to no role") as unknown:
        guard.authorize("ListModels", Ctx(bearer("guess"), peer="admin"))
    assert "guess" not in unknown.value.message
    with pytest.raises(UnauthenticatedError, match="must be 'Bearer <token>'"):
        guard.authorize("ListModels", Ctx(("authorization", "Basic abc"), peer="admin"))
    with pytest.raises(UnauthenticatedError, match="'stranger' is bound to no role"):
        guard.authorize("GetVersion", Ctx(peer="stranger"))


def test_plaintext_roles_bind_tokens_only_and_leave_reads_open() -> None:
    guard = RoleGuard(BOOK, METHOD_ROLES, certificates=False, open_reads=True)
    guard.authorize("ListModels", Ctx())
    guard.authorize("SetAlias", Ctx(bearer("p-tok")))
    with pytest.raises(UnauthenticatedError, match="carries no token"):
        guard.authorize("RegisterVersion", Ctx(peer="training"))  # a peer is not trusted


def test_a_roles_file_names_what_is_wrong() -> None:
    with pytest.raises(FailedPreconditionError, match="unknown role 'owner'"):
        RoleBook.parse({"owner": {"identities": ["x"]}})
    with pytest.raises(FailedPreconditionError, match="not a hex SHA-256 digest"):
        RoleBook.parse({"admin": {"tokens": {"ops": "the-token-itself"}}})
    with pytest.raises(FailedPreconditionError, match="takes `identities`"):
        RoleBook.parse({"admin": ["admin"]})


def test_registry_roles_follow_the_settings(tmp_path: Path) -> None:
    assert registry_roles(PlatformSettings()) is None  # plaintext: registry.token alone
    creds = tmp_path / "credentials"
    secure = SecuritySettings(enabled=True, credentials_dir=creds)
    guard = registry_roles(PlatformSettings(security=secure, registry={"token": "legacy"}))
    assert guard is not None
    assert guard.book.identity_roles("training") == {"trainer", "promoter"}
    assert guard.book.token_roles(token_digest("legacy")) == ("registry.token", {"admin"})
    # With the credentials written, the registry's own roles.yaml is read.
    write_credentials(creds, ["admin", "client", "registry"])
    write_auth_files(creds)
    guard = registry_roles(PlatformSettings(security=secure))
    assert guard is not None
    client_token = (creds / "client" / "token").read_text().strip()
    assert guard.book.token_roles(token_digest(client_token)) == ("client", {"reader"})
    assert client_token not in (creds / "registry" / "roles.yaml").read_text()
    # A plaintext registry with a roles file binds its tokens.
    plain = registry_roles(PlatformSettings(registry={"roles_file": creds / "registry/roles.yaml"}))
    assert plain is not None
    plain.authorize("ListModels", Ctx())
    with pytest.raises(PermissionDeniedError, match="needs the promoter role"):
        plain.authorize("SetAlias", Ctx(bearer(client_token)))


def test_api_keys_in_secure_mode() -> None:
    keys = ApiKeys.parse(f"{key_digest('k-1')} partner\n")
    guard = ApiKeyGuard(keys, service="serving", certificates=True, admin_methods={"SetCanary"})
    guard.authorize("Predict", Ctx(("x-api-key", "k-1"), peer="client"))
    guard.authorize("Predict", Ctx(peer="monitoring"))  # a service's certificate: no key
    guard.authorize("SetCanary", Ctx(peer="admin"))
    with pytest.raises(UnauthenticatedError, match="send it as 'x-api-key' metadata"):
        guard.authorize("ModelInfer", Ctx(peer="client"))
    with pytest.raises(UnauthenticatedError, match="not one of serving's") as wrong:
        guard.authorize("Predict", Ctx(("x-api-key", "k-2"), peer="client"))
    assert "k-2" not in wrong.value.message
    with pytest.raises(PermissionDeniedError, match="SetCanary needs a Driftline service's"):
        guard.authorize("SetCanary", Ctx(("x-api-key", "k-1"), peer="client"))


def test_api_keys_in_plaintext_mode_are_asked_of_everyone() -> None:
    keys = ApiKeys.parse(key_digest("k-1"))
    guard = ApiKeyGuard(keys, service="serving", certificates=False, admin_methods={"SetCanary"})
    guard.authorize("SetCanary", Ctx(("x-api-key", "k-1")))
    with pytest.raises(UnauthenticatedError):
        guard.authorize("Predict", Ctx(peer="admin"))  # no TLS: a peer name proves nothing


def test_keys_files_follow_the_settings(tmp_path: Path) -> None:
    assert api_key_guard(PlatformSettings()) is None
    assert ingestion_api_keys(PlatformSettings()) is None
    legacy = ingestion_api_keys(PlatformSettings(ingestion={"api_key": "s3cret"}))
    assert legacy is not None and legacy.accepts("s3cret") and not legacy.accepts(None)
    creds = tmp_path / "credentials"
    write_credentials(creds, ["client", "serving", "ingestion"])
    write_auth_files(creds)
    secure = PlatformSettings(security=SecuritySettings(enabled=True, credentials_dir=creds))
    key = (creds / "client" / "api.key").read_text().strip()
    guard = api_key_guard(secure)
    assert guard is not None and guard.keys.name_of(key) == "client"
    http = ingestion_api_keys(secure)
    assert http is not None and http.accepts(key) and not http.accepts("nope")
    with pytest.raises(FailedPreconditionError, match="line 1: expected"):
        ApiKeys.parse(key)  # a key itself is not a digest line
    assert HttpApiKeys().accepts("anything") is False


async def test_the_factory_is_plaintext_when_secure_mode_is_off_and_names_a_missing_file(
    tmp_path: Path,
) -> None:
    async with grpc_tls.channel("127.0.0.1:1", None, "client") as chan:
        assert type(chan).__name__ == "Channel"
    missing = SecuritySettings(enabled=True, credentials_dir=tmp_path)
    with pytest.raises(CredentialsError, match=r"ca\.crt"):
        grpc_tls.channel("127.0.0.1:1", missing, "client")


def test_peer_identity_reads_the_verified_common_name() -> None:
    ctx: Any = Ctx(peer="serving")
    assert grpc_tls.peer_identity(ctx) == "serving"
    assert grpc_tls.peer_identity(Ctx()) is None
