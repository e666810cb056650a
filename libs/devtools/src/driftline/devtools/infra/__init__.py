"""driftline.devtools.infra: the real local platform (Apache Kafka in KRaft mode, redis-server,
and the ops stack: Prometheus, Alertmanager with a local alert sink, Jaeger).

- :class:`LocalPlatform` is what ``driftline infra up|down|status`` drives;
- :class:`OpsStack` holds :class:`PrometheusNode`, :class:`AlertmanagerNode`,
  :class:`AlertSinkNode` and :class:`JaegerNode` (built with Go once by
  :func:`ensure_jaeger`); each runs standalone too;
- :class:`KafkaNode` and :class:`RedisNode` run standalone with any state
  directory and ports (the test harness and benchmarks use free ports in a
  temporary directory);
- :class:`KafkaCluster` is three KRaft nodes (each a broker and a controller voter)
  forming one Kafka cluster, for ``infra up --brokers 3``;
- :class:`RedisCluster` is six ``redis-server`` processes joined into a Redis Cluster
  (three masters, a replica each), for ``infra up --redis-cluster``;
- :func:`kafka_answers` / :func:`redis_answers` are what the launcher polls (a
  service waits with ``driftline.kafkaio.wait_for_kafka`` and
  ``driftline.runtime.wait_for_redis``);
- :func:`ensure_kafka_jars` fetches the broker jars with Maven once per version;
- :func:`ensure_helm` builds Helm with Go once per version (the chart's tests use it).
"""

from driftline.devtools.infra.alert_sink_node import AlertSinkNode
from driftline.devtools.infra.alertmanager_node import AlertmanagerNode, alertmanager_config
from driftline.devtools.infra.component import (
    ComponentStatus,
    LocalComponent,
    PortClaim,
    StartOutcome,
)
from driftline.devtools.infra.errors import (
    InfraError,
    MissingToolError,
    PortInUseError,
    StartupError,
)
from driftline.devtools.infra.helm_build import ensure_helm, fetch_helm, helm_binary
from driftline.devtools.infra.http_component import HttpComponent
from driftline.devtools.infra.jaeger_build import ensure_jaeger, fetch_jaeger, jaeger_binary
from driftline.devtools.infra.jaeger_node import JaegerNode
from driftline.devtools.infra.jars import ensure_kafka_jars, fetch_kafka_jars, kafka_libs_dir
from driftline.devtools.infra.kafka_cluster import (
    KafkaCluster,
    KafkaClusterNode,
    free_kafka_cluster_ports,
)
from driftline.devtools.infra.kafka_node import DEFAULT_JVM_OPTIONS, KafkaNode, new_cluster_id
from driftline.devtools.infra.layout import INFRA_DIR_ENV, find_infra_dir
from driftline.devtools.infra.ops import (
    LINKS_ENV,
    OTLP_ENDPOINT_ENV,
    OpsStack,
    dashboard_links_env,
    trace_export_env,
)
from driftline.devtools.infra.pidfile import PidRecord, parse_pid_file, read_pid_file, running_pid
from driftline.devtools.infra.platform import LocalPlatform, provision_platform_topics
from driftline.devtools.infra.ports import (
    ensure_port_free,
    free_port,
    free_ports,
    parse_host_port,
    port_is_free,
)
from driftline.devtools.infra.process import ManagedProcess, StopOutcome, tail_lines
from driftline.devtools.infra.prometheus_node import (
    PrometheusNode,
    render_prometheus_config,
    service_targets,
)
from driftline.devtools.infra.readiness import (
    http_answers,
    kafka_answers,
    redis_answers,
    redis_cluster_ok,
)
from driftline.devtools.infra.redis_cluster import RedisCluster, free_cluster_ports
from driftline.devtools.infra.redis_node import RedisNode
from driftline.devtools.infra.templates import TemplateError, render_template
from driftline.devtools.infra.tools import require_tool

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "INFRA_DIR_ENV",
    "LINKS_ENV",
    "OTLP_ENDPOINT_ENV",
    "AlertSinkNode",
    "AlertmanagerNode",
    "ComponentStatus",
    "HttpComponent",
    "InfraError",
    "JaegerNode",
    "KafkaCluster",
    "KafkaClusterNode",
    "KafkaNode",
    "LocalComponent",
    "LocalPlatform",
    "ManagedProcess",
    "MissingToolError",
    "OpsStack",
    "PidRecord",
    "PortClaim",
    "PortInUseError",
    "PrometheusNode",
    "RedisCluster",
    "RedisNode",
    "StartOutcome",
    "StartupError",
    "StopOutcome",
    "TemplateError",
    "alertmanager_config",
    "dashboard_links_env",
    "ensure_helm",
    "ensure_jaeger",
    "ensure_kafka_jars",
    "ensure_port_free",
    "fetch_helm",
    "fetch_jaeger",
    "fetch_kafka_jars",
    "find_infra_dir",
    "free_cluster_ports",
    "free_kafka_cluster_ports",
    "free_port",
    "free_ports",
    "helm_binary",
    "http_answers",
    "jaeger_binary",
    "kafka_answers",
    "kafka_libs_dir",
    "new_cluster_id",
    "parse_host_port",
    "parse_pid_file",
    "port_is_free",
    "provision_platform_topics",
    "read_pid_file",
    "redis_answers",
    "redis_cluster_ok",
    "render_prometheus_config",
    "render_template",
    "require_tool",
    "running_pid",
    "service_targets",
    "tail_lines",
    "trace_export_env",
]
