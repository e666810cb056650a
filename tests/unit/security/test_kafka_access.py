"""The Kafka access table against the services' code, and the ACLs generated from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from driftline.contracts import topics as topics_module
from driftline.contracts.access import KAFKA_ACCESS, access_of
from driftline.contracts.topics import ALL_TOPICS, MODELS, Topic
from driftline.devtools.infra.kafka_security import (
    AclBinding,
    Operation,
    PatternType,
    ResourceType,
    acl_bindings,
)
from driftline.features.worker import APP_ID, CHANGELOG_TOPIC
from driftline.settings import PlatformSettings

SERVICES = Path(__file__).resolve().parents[3] / "services"
SERVICE_NAMES = ("ingestion", "features", "training", "registry", "serving", "monitoring")
TOPIC_CONSTANTS = {name for name, value in vars(topics_module).items() if isinstance(value, Topic)}


def _topics_named_in(service: str) -> set[str]:
    """Names of the declared topics a service's source imports from the contracts."""
    names: set[str] = set()
    for path in (SERVICES / service / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "driftline.contracts.topics":
                for alias in node.names:
                    if alias.name in TOPIC_CONSTANTS:
                        names.add(getattr(topics_module, alias.name).name)
    return names


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_service_names_no_topic_its_access_does_not_grant(service: str) -> None:
    access = access_of(service)
    named = _topics_named_in(service)
    assert named, f"found no topic in {service}'s code: the scan is broken"
    granted = set(access.produces) | set(access.consumes)
    assert named <= granted, f"{service} uses {sorted(named - granted)} without a grant"


def test_every_declared_topic_has_a_producer_and_only_registry_writes_models() -> None:
    for topic in ALL_TOPICS:
        assert any(a.may_write(topic.name) for a in KAFKA_ACCESS), topic.name
    assert [a.principal for a in KAFKA_ACCESS if a.may_write(MODELS.name)] == ["registry"]
    assert not access_of("ingestion").may_write(MODELS.name)


def test_groups_and_ids_match_the_settings_and_the_code() -> None:
    settings = PlatformSettings()
    for service, group in (
        ("ingestion", settings.ingestion.consumer_group),
        ("training", settings.training.consumer_group),
        ("training", f"{settings.training.consumer_group}-retrain"),
        ("monitoring", settings.monitoring.consumer_group),
        ("features", APP_ID),
    ):
        assert any(group.startswith(p) for p in access_of(service).groups), (service, group)
    # ingestion's producer: transactional_id=f"driftline-ingestion-{instance_id}".
    loop = (SERVICES / "ingestion/src/driftline/ingestion/kafka_loop.py").read_text()
    (txn,) = access_of("ingestion").transactional_ids
    assert f'transactional_id=f"{txn}{{cfg.instance_id}}"' in loop
    assert access_of("features").may_write(CHANGELOG_TOPIC)
    assert access_of("features").may_read(CHANGELOG_TOPIC)
    assert not any(a.may_write(CHANGELOG_TOPIC) for a in KAFKA_ACCESS if a.principal != "features")


def test_acl_bindings_follow_the_table() -> None:
    bindings = acl_bindings()
    assert len(bindings) == len(set(bindings))

    def of(principal: str) -> set[AclBinding]:
        return {b for b in bindings if b.principal == f"User:{principal}"}

    writes = {
        b.name
        for b in of("ingestion")
        if b.operation is Operation.WRITE and b.resource_type is ResourceType.TOPIC
    }
    assert writes == {"driftline.events.valid", "driftline.labels.valid", "driftline.dlq"}
    assert AclBinding("User:registry", Operation.WRITE, ResourceType.TOPIC, MODELS.name) in of(
        "registry"
    )
    writers = {
        b.principal
        for b in bindings
        if b.name == MODELS.name and b.operation in (Operation.WRITE, Operation.CREATE)
    }
    assert writers == {"User:registry"}
    assert (
        AclBinding(
            "User:ingestion",
            Operation.WRITE,
            ResourceType.TRANSACTIONAL_ID,
            "driftline-ingestion-",
            PatternType.PREFIXED,
        )
        in bindings
    )
    assert (
        AclBinding(
            "User:training",
            Operation.READ,
            ResourceType.GROUP,
            "driftline-training",
            PatternType.PREFIXED,
        )
        in bindings
    )
    creates = [b for b in bindings if b.operation is Operation.CREATE]
    assert creates == [
        AclBinding(
            "User:features",
            Operation.CREATE,
            ResourceType.TOPIC,
            "driftline-features-",
            PatternType.PREFIXED,
        )
    ]
    # Services may describe every declared topic (provisioning's check); the public client
    # only what it writes, and nobody holds anything on the cluster resource.
    for service in SERVICE_NAMES:
        described = {b.name for b in of(service) if b.operation is Operation.DESCRIBE}
        assert {t.name for t in ALL_TOPICS} <= described
    assert {b.operation for b in of("client")} == {Operation.WRITE}
    assert not [b for b in bindings if b.resource_type is ResourceType.CLUSTER]
    assert not of("admin")


def test_describe_reads_as_an_acl_line() -> None:
    binding = AclBinding(
        "User:ingestion",
        Operation.WRITE,
        ResourceType.TRANSACTIONAL_ID,
        "driftline-ingestion-",
        PatternType.PREFIXED,
    )
    assert binding.describe() == (
        "ALLOW User:ingestion WRITE TRANSACTIONAL_ID driftline-ingestion-*"
    )


def test_an_unknown_principal_is_named() -> None:
    with pytest.raises(KeyError, match="known: ingestion, features"):
        access_of("nobody")
