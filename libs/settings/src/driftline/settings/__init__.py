"""Typed settings for every Driftline process.

One :class:`PlatformSettings` model holds the shared sections (Kafka, Redis,
telemetry, local infra) and one section per service.  Values come, in order of
precedence, from keyword arguments, ``DRIFTLINE_*`` environment variables (nested
with ``__``, e.g. ``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS``), and an optional YAML
file named by ``DRIFTLINE_CONFIG``.  A bad value fails at start with the file and
line at fault (see :func:`load_settings`).
"""

from driftline.settings.loader import ConfigError, load_settings, locate, read_yaml_with_lines
from driftline.settings.models import (
    AdminSettings,
    DetectorSettings,
    FeaturesSettings,
    InfraSettings,
    IngestionSettings,
    KafkaSettings,
    MonitoringSettings,
    OnlineStoreSettings,
    OpsSettings,
    PlatformSettings,
    RedisSettings,
    RegistrySettings,
    SecuritySettings,
    ServingSettings,
    TelemetrySettings,
    TrainingSettings,
)

__all__ = [
    "AdminSettings",
    "ConfigError",
    "DetectorSettings",
    "FeaturesSettings",
    "InfraSettings",
    "IngestionSettings",
    "KafkaSettings",
    "MonitoringSettings",
    "OnlineStoreSettings",
    "OpsSettings",
    "PlatformSettings",
    "RedisSettings",
    "RegistrySettings",
    "SecuritySettings",
    "ServingSettings",
    "TelemetrySettings",
    "TrainingSettings",
    "load_settings",
    "locate",
    "read_yaml_with_lines",
]
