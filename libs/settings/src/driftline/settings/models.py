"""The settings models.  Every field has a docstring: it is the documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES: tuple[str, ...] = (
    "ingestion",
    "features",
    "training",
    "registry",
    "serving",
    "monitoring",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class KafkaSettings(_Section):
    """How to reach Kafka and how the local broker is laid out."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of brokers clients connect to."""
    controller_port: int = Field(default=9093, ge=1, le=65535)
    """KRaft controller listener port of the local broker (``driftline infra``)."""
    client_id: str = "driftline"
    """Prefix for client ids, so broker logs name the service."""
    startup_wait_s: float = Field(default=30.0, gt=0)
    """How long a service waits for Kafka at start before exiting non-zero."""
    request_timeout_ms: int = Field(default=30_000, gt=0)
    """Client request timeout."""
    default_replication_factor: int = Field(default=1, ge=1)
    """Replication factor used when provisioning topics (1 for a single node)."""
    max_record_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest raw event or label accepted, in bytes; a larger one is dead-lettered as
    ``too_large`` with its first ``max_record_bytes`` kept. Every other size limit follows
    from it (see :attr:`max_message_bytes`), so they never disagree."""
    stall_after_s: float = Field(default=60.0, gt=0)
    """A consumer whose partition has failed at the same offset for this long reports a
    stall: an ERROR log line with the offset and error, ``driftline_consumer_stalled``
    set to 1, and the ``ConsumerStalled`` alert."""

    @property
    def max_message_bytes(self) -> int:
        """The largest Kafka record (and HTTP ingest body): ``max(1 MiB, 4 * max_record_bytes)``.

        It is the ``max.message.bytes`` of every topic provisioning creates, every
        producer's ``max_request_size`` and the HTTP ingest API's body limit: room
        for a record at the limit once validated and re-encoded, and for the dead
        letter of a larger one (its first ``max_record_bytes``, base64, plus detail).

        >>> KafkaSettings().max_message_bytes
        1048576
        >>> KafkaSettings(max_record_bytes=1 << 20).max_message_bytes
        4194304
        """
        return max(1024 * 1024, 4 * self.max_record_bytes)


class RedisSettings(_Section):
    """How to reach the Redis online store."""

    host: str = "127.0.0.1"
    """Redis host."""
    port: int = Field(default=6379, ge=1, le=65535)
    """Redis port."""
    db: int = Field(default=0, ge=0)
    """Logical database number."""
    startup_wait_s: float = Field(default=15.0, gt=0)
    """How long a service waits for Redis at start before exiting non-zero."""
    cluster: bool = False
    """The Redis at ``host:port`` is a node of a Redis Cluster: clients discover the
    others from it (``CLUSTER SLOTS``) and follow its redirections; ``db`` must be 0."""

    @model_validator(mode="after")
    def _cluster_has_db_0(self) -> RedisSettings:
        if self.cluster and self.db != 0:
            raise ValueError(
                "redis.db must be 0 when redis.cluster is true (a Redis Cluster "
                "has database 0 only)"
            )
        return self

    @property
    def url(self) -> str:
        """The ``redis://`` URL for these settings."""
        return f"redis://{self.host}:{self.port}/{self.db}"


class TelemetrySettings(_Section):
    """Traces, metrics and logs."""

    otlp_endpoint: str | None = None
    """OTLP/gRPC collector endpoint (``http://host:4317``); traces are exported only when set."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Minimum level of log records written."""
    log_format: Literal["json", "text"] = "json"
    """``json``: one JSON object a line carrying the trace id; ``text`` for humans."""
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Fraction of new traces that are sampled (children follow their parent)."""
    untraced_sample_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    """Fraction of records arriving at ingestion without a trace context (no ``traceparent``
    Kafka header or HTTP header) that start a trace of their own (head sampling), so the
    data path ingestion → features → serving is visible without instrumenting every
    producer. Records that carry a context follow its sampling decision instead."""


class OpsSettings(_Section):
    """The ops stack of the local platform: Prometheus, Alertmanager, an alert sink, Jaeger.

    ``driftline infra up`` / ``up`` / ``demo`` start it beside Kafka and Redis (on
    loopback, state under ``infra.state_dir``) unless ``enabled`` is false or
    ``--no-ops`` is given. Alertmanager's default port is not 9093, the Kafka
    controller's (``kafka.controller_port``).
    """

    enabled: bool = True
    """Whether the local platform starts the ops stack (``--no-ops`` turns it off once)."""
    prometheus: str = "prometheus"
    """The Prometheus server executable (Debian's ``prometheus`` package)."""
    alertmanager: str = "prometheus-alertmanager"
    """The Alertmanager executable (Debian's ``prometheus-alertmanager``; upstream
    calls it ``alertmanager``)."""
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    """Prometheus' web UI and API (``http://127.0.0.1:9090``)."""
    alertmanager_port: int = Field(default=9095, ge=1, le=65535)
    """Alertmanager's web UI and API."""
    alert_sink_port: int = Field(default=9096, ge=1, le=65535)
    """The local webhook receiver that writes every Alertmanager notification to
    ``<state_dir>/alertmanager/notifications.jsonl`` (what ``driftline alerts`` reads)."""
    alert_webhook_url: str | None = None
    """A webhook Alertmanager also notifies (fired and resolved), besides the local sink."""
    scrape_interval_s: float = Field(default=5.0, gt=0, le=300)
    """How often Prometheus scrapes every service and evaluates the alert rules."""
    retention: str = "2d"
    """How long Prometheus keeps samples (``--storage.tsdb.retention.time``)."""
    jaeger_version: str = "1.75.0"
    """Jaeger (``github.com/jaegertracing/jaeger/cmd/jaeger``) version built with Go once."""
    jaeger_cache: Path = Path("~/.cache/driftline/jaeger").expanduser()
    """Where the Jaeger binary is built and kept, outside the repo, once per version."""
    go: str = "go"
    """The Go toolchain that builds Jaeger (Go 1.24 or newer)."""
    jaeger_ui_port: int = Field(default=16686, ge=1, le=65535)
    """Jaeger's query HTTP port: its UI and ``/api/*`` (``http://127.0.0.1:16686``)."""
    jaeger_query_grpc_port: int = Field(default=16685, ge=1, le=65535)
    """Jaeger's query gRPC API port."""
    jaeger_otlp_grpc_port: int = Field(default=4317, ge=1, le=65535)
    """OTLP/gRPC port the services export traces to."""
    jaeger_otlp_http_port: int = Field(default=4318, ge=1, le=65535)
    """OTLP/HTTP port."""
    jaeger_max_traces: int = Field(default=100_000, ge=1)
    """Traces Jaeger's in-memory store keeps (oldest dropped first)."""
    jaeger_ui_assets: Path | None = None
    """A directory of built Jaeger UI assets (``ui.assets_path``). Jaeger built from the
    Go module has none embedded: its UI page is a placeholder, its ``/api`` complete."""


class SecuritySettings(_Section):
    """Secure mode: TLS and mutual TLS on every gRPC link, SASL_SSL (SCRAM) on Kafka, an ACL
    user over TLS on Redis, roles on the registry and API keys on the public APIs.

    One switch for the whole platform; what each process proves itself with comes from
    files under ``credentials_dir`` (Kubernetes: a Secret per service mounted there),
    never from the settings file or the repository::

        <credentials_dir>/ca.crt                 the CA every server and client trusts
        <credentials_dir>/<identity>/tls.crt     this identity's certificate (its CN is the
        <credentials_dir>/<identity>/tls.key     identity: a service's name, admin, client)
        <credentials_dir>/<identity>/kafka.password   SCRAM password of Kafka user <identity>
        <credentials_dir>/<identity>/redis.password   password of Redis ACL user <identity>

    ``driftline infra up --secure`` writes all of it (see ``docs/security.md``).
    """

    enabled: bool = False
    """Run secure: every server demands TLS (gRPC: a client certificate from ``ca.crt``),
    Kafka clients speak SASL_SSL, Redis clients log in over TLS."""
    credentials_dir: Path = Path(".driftline/credentials")
    """Directory of the CA certificate and each identity's credentials (layout above)."""
    identity: str | None = None
    """Whose credentials this process uses; unset: the service's own name (``registry``,
    ``serving``, ...), and ``admin`` for the CLI."""
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    """SASL mechanism of the Kafka clients (the broker's listener must enable it)."""


class InfraSettings(_Section):
    """The local platform started by ``driftline infra up``."""

    state_dir: Path = Path(".driftline")
    """Where broker and Redis data, pid files and logs live (git-ignored)."""
    kafka_version: str = "4.4.0"
    """Apache Kafka version (``org.apache.kafka:kafka_2.13``) Maven fetches."""
    jar_cache: Path = Path("~/.cache/driftline/kafka").expanduser()
    """Where the Kafka jars are cached, outside the repo, fetched once per version."""
    kafka_heap: str = "512m"
    """Maximum JVM heap of the local broker (``-Xmx``); of each node of the three-node
    cluster (``kafka_brokers`` 3) only when set, 384m there otherwise."""
    redis_server: str = "redis-server"
    """The ``redis-server`` executable."""
    redis_cli: str = "redis-cli"
    """The ``redis-cli`` executable (``infra up --redis-cluster`` creates the cluster with it)."""
    redis_cluster_ports: list[int] | None = Field(default=None, min_length=6, max_length=6)
    """The six ports of the local Redis Cluster (``infra up --redis-cluster``: three masters,
    then their three replicas); each node's cluster bus listens on its port + 10000. None:
    ``redis.port`` and the five ports after it."""
    kafka_brokers: int = 1
    """How many KRaft nodes ``infra up`` runs: 1 (one combined broker + controller) or 3
    (``infra up --brokers 3``: a local cluster, each node a broker and a voter of the
    controller quorum). Topics on three brokers want ``kafka.default_replication_factor``
    3, which ``--brokers 3`` sets too."""
    kafka_cluster_ports: list[int] | None = Field(default=None, min_length=3, max_length=3)
    """Client ports of the three nodes of the local Kafka cluster (``kafka_brokers`` 3),
    node 1 first: it must be the port of ``kafka.bootstrap_servers``' first address. None:
    that port, then that port + 100 and + 200."""
    kafka_cluster_controller_ports: list[int] | None = Field(
        default=None, min_length=3, max_length=3
    )
    """Controller (KRaft quorum) ports of the three nodes of the local Kafka cluster, node 1
    first: it must be ``kafka.controller_port``. None: ``kafka.controller_port``, then it +
    100 and + 200."""
    ready_timeout_s: float = Field(default=90.0, gt=0)
    """How long ``infra up`` waits for Kafka and Redis to answer."""
    ops: OpsSettings = OpsSettings()
    """Prometheus, Alertmanager and Jaeger of the local platform."""

    @model_validator(mode="after")
    def _kafka_cluster_shape(self) -> InfraSettings:
        # One combined node, or three: two voters cannot lose one, four add nothing here.
        if self.kafka_brokers not in (1, 3):
            raise ValueError(
                f"infra.kafka_brokers must be 1 (one node) or 3 (a local cluster whose "
                f"controller quorum survives losing a node), not {self.kafka_brokers}"
            )
        for name in ("kafka_cluster_ports", "kafka_cluster_controller_ports"):
            ports = getattr(self, name)
            if ports is not None and (
                len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports)
            ):
                raise ValueError(f"infra.{name} must be three distinct ports, not {ports}")
        return self


class AdminSettings(_Section):
    """Every service's HTTP admin endpoint (``/healthz``, ``/readyz``, ``/metrics``)."""

    host: str = "127.0.0.1"
    """Interface the admin HTTP server binds."""
    port: int = Field(ge=0, le=65535)
    """Admin HTTP port (0 picks a free one)."""


class _ServiceSection(_Section):
    admin: AdminSettings


class IngestionSettings(_ServiceSection):
    """Ingestion: raw events and labels in, validated records or dead letters out."""

    admin: AdminSettings = AdminSettings(port=8081)
    """Admin and public HTTP API (``POST /v1/events``, ``POST /v1/labels``)."""
    api_key: str | None = None
    """When set, HTTP callers must send it as ``X-API-Key``."""
    api_keys_file: Path | None = None
    """A file of accepted ``X-API-Key`` keys by hex SHA-256 digest, one a line with an
    optional name (``<sha256> partner-a``), besides ``api_key``; unset in secure mode:
    ``<credentials_dir>/ingestion/api-keys.sha256`` when present. In secure mode every
    HTTP call needs an accepted key (see ``driftline.security.api_keys``)."""
    dedup_window_s: float = Field(default=3600.0, gt=0)
    """How long an event id is remembered to drop duplicates."""
    max_records_per_request: int = Field(default=10_000, ge=1)
    """Most records one ``POST /v1/events`` or ``/v1/labels`` body may hold (a JSON array);
    a longer array is refused whole with 422 ``unparseable``. The body's size is limited by
    ``kafka.max_message_bytes``, the per-record size by ``kafka.max_record_bytes``."""
    featuresets_dir: Path = Path("examples/featuresets")
    """Directory of feature-set YAML files to validate against."""
    consumer_group: str = "driftline-ingestion"
    """Kafka consumer group of the ingestion replicas."""
    instance_id: str = "0"
    """Stable id of this replica; its Kafka transactional id is derived from it."""
    batch_size: int = Field(default=1000, ge=1)
    """Most records validated and written in one Kafka transaction."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_record_bytes" in data:
            raise ValueError(
                "ingestion.max_record_bytes moved to kafka.max_record_bytes "
                "(DRIFTLINE_KAFKA__MAX_RECORD_BYTES): the topics' and producers' size limits "
                "are derived from it"
            )
        return data


class OnlineStoreSettings(_Section):
    """Which online store the features service uses (Feast's ``online_store:`` shape).

    ``type`` names a registered store type (built in: ``redis``); the section's
    other keys are that store's own parameters, validated by its settings model
    when the service starts (see ``driftline.online_store.registry``), so a bad
    one is named there.

    >>> s = OnlineStoreSettings.model_validate({"type": "redis", "url": "redis://r:6379/1"})
    >>> s.type, s.model_extra
    ('redis', {'url': 'redis://r:6379/1'})
    """

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    type: str = Field(default="redis", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    """The store type (``redis`` by default, using the ``redis`` section and
    ``features.online_key_ttl_s``); a package adds types through the
    ``driftline.online_stores`` entry-point group."""
    startup_wait_s: float | None = Field(default=None, gt=0)
    """How long the features service waits for the store at start before exiting
    non-zero; None uses ``redis.startup_wait_s``."""


class FeaturesSettings(_ServiceSection):
    """Feature store: streaming aggregates, the Redis online store, the feature log."""

    admin: AdminSettings = AdminSettings(port=8082)
    """Admin HTTP endpoint."""
    grpc_host: str = "127.0.0.1"
    """Interface the FeatureStore gRPC server binds."""
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    """FeatureStore gRPC port."""
    featuresets_dir: Path = Path("examples/featuresets")
    """Directory of feature-set YAML files."""
    online_store: OnlineStoreSettings = OnlineStoreSettings()
    """The online store: ``type`` and that store's parameters (``{type: redis}`` by default)."""
    online_key_ttl_s: float | None = Field(default=None, gt=0)
    """Redis drops an entity's online values this long after its last event was
    written (like Feast's ``key_ttl_seconds``); None keeps them until overwritten.
    A dropped entity reads as MISSING rather than STALE. Set it well above the
    feature sets' TTLs, or fresh-but-quiet entities vanish."""


class RecurringSettings(_Section):
    """Recurring concepts: on a concept-drift retrain request, training scores the model's
    earlier champions on the labelled examples after the onset and restores one that wins,
    long before a fresh candidate has enough examples to learn from."""

    enabled: bool = True
    """Check earlier champions at all (off: a concept drift waits for the retraining)."""
    max_candidates: int = Field(default=3, ge=1)
    """How many of the most recent distinct earlier champions (alias history) are scored."""
    min_examples: int = Field(default=200, ge=1)
    """Labelled examples after the onset the check waits for (far fewer than a candidate
    needs: scoring a model that exists takes much less evidence than training one)."""
    min_score: float = 0.8
    """The promotion metric an earlier champion must reach on them besides beating the
    champion by the promotion margin (a ceiling for a lower-is-better metric)."""


class TrainingSettings(_ServiceSection):
    """Training: label join, online learning, candidates."""

    admin: AdminSettings = AdminSettings(port=8083)
    """Admin HTTP endpoint."""
    models_dir: Path = Path("examples/models")
    """Directory of model-spec YAML files."""
    featuresets_dir: Path = Path("examples/featuresets")
    """Directory of feature-set YAML files: each model is checked against its feature set at
    start, and its labels against the label type the feature set declares (a model whose
    feature set is not found gets the default check for its task, with a warning)."""
    registry_target: str = "127.0.0.1:50052"
    """Registry gRPC address."""
    registry_token: str | None = None
    """Bearer token sent with mutating registry RPCs, when the registry requires one. In
    secure mode the client certificate (identity ``training``: trainer and promoter by
    default) is enough; a token sent overrides its roles."""
    registry_wait_s: float = Field(default=30.0, gt=0)
    """How long the service waits for the registry at start before exiting non-zero."""
    consumer_group: str = "driftline-training"
    """Kafka consumer group of the online learners (features, labels, retrain requests)."""
    instance_id: str = "0"
    """Stable id of this replica: names its Kafka clients, its claim of the ``training``
    writer role in the registry and the versions it registers (tag ``driftline.trainer``).
    Two replicas must not share one."""
    session_timeout_s: float = Field(default=10.0, ge=1, le=300)
    """How long the active trainer may stop answering its consumer groups before a standby
    replica takes over (Kafka's ``session.timeout.ms``; heartbeats every fifth of it)."""
    batch_size: int = Field(default=1000, ge=1)
    """Most records taken from Kafka in one poll."""
    snapshot_every: int = Field(default=5000, ge=1)
    """Register a candidate version of the online model every this many labeled examples."""
    allowed_lateness_s: float = Field(default=3600.0, gt=0)
    """How long (event time) after its event a label may still join its feature vector;
    the join watermark is the newest event time seen minus this."""
    orphan_retention_s: float = Field(default=3600.0, gt=0)
    """How long (event time, past the watermark) a label whose vector is unknown waits for it."""
    expired_capacity: int = Field(default=100_000, ge=0)
    """Evicted (never labeled) vectors kept so that a label arriving after eviction still joins."""
    label_join_max_pending: int = Field(default=200_000, ge=1)
    """Most feature vectors the label join holds waiting for their labels, per model (and,
    separately, most labels waiting for their vectors): without it the join holds rate times
    ``allowed_lateness_s`` vectors (18 million an hour at 5,000 events/s).  A waiting vector
    of 16 features takes ~0.5 KB, plus ~0.2 KB for a classifier's prediction of it, and a
    waiting label ~0.35 KB: the default caps one model's join at ~140 MB of vectors and
    ~70 MB of labels (plus ~50 MB for the ``expired_capacity`` evicted ones).  Past it
    the oldest (by event time) are dropped, counted in
    ``driftline_training_join_records_total{outcome="vectors_over_cap"|"orphans_over_cap"}``
    and logged at most once a minute; a dropped vector's label never joins."""
    eval_window: int = Field(default=2000, ge=1)
    """Most recent joined examples kept to compare a candidate with the champion."""
    actor: str = "driftline-training"
    """The actor recorded on versions and alias changes this service makes."""
    retrain_max_wait_s: float = Field(default=900.0, ge=0)
    """How long (from its ``requested_at``) a retrain request waits for the window after its
    ``since`` to hold the spec's ``min_examples`` plus the held-out slice; it is served as soon
    as it does, and after this wait with what there is (see ``retrain_min_fraction``)."""
    retrain_min_fraction: float = Field(default=0.5, gt=0, le=1)
    """After the longest wait, a retrain candidate is trained only if it can learn from at
    least this fraction of the spec's ``min_examples``; otherwise the request is rejected."""
    retrain_recheck_s: float = Field(default=15.0, gt=0)
    """A waiting retrain request replays its window again at least this often (sooner when
    this replica has learned enough new examples after its ``since``)."""
    recurring: RecurringSettings = RecurringSettings()
    """Restoring an earlier champion when its concept comes back."""


class RegistrySettings(_ServiceSection):
    """Model registry: versions, aliases, signed artifacts."""

    admin: AdminSettings = AdminSettings(port=8084)
    """Admin HTTP endpoint."""
    grpc_host: str = "127.0.0.1"
    """Interface the Registry gRPC server binds."""
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    """Registry gRPC port."""
    artifact_dir: Path = Path(".driftline/artifacts")
    """Content-addressed artifact store."""
    signing_key: str = "driftline-dev-signing-key"
    """HMAC-SHA256 key artifacts are signed and verified with. Change it outside development."""
    token: str | None = None
    """When set, mutating RPCs need ``authorization: Bearer <token>`` metadata. With roles
    (a roles file, or secure mode) it is one more token, with the admin role."""
    roles_file: Path | None = None
    """YAML binding certificate identities and tokens (by hex SHA-256 digest, never the
    token) to the roles reader, trainer (RegisterVersion), promoter (aliases, rollback) and
    admin: ``{promoter: {identities: [training], tokens: {ci: <sha256>}}, ...}`` (see
    ``driftline.security.roles``). Unset in secure mode:
    ``<credentials_dir>/registry/roles.yaml`` when present, else training is trainer and
    promoter, admin admin, and features, serving, monitoring and client readers. A call's
    roles are its bearer token's when it sends one, else its certificate identity's; in
    secure mode reads need a role too. In plaintext mode a roles file binds tokens only,
    and reads stay open."""
    max_artifact_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Largest artifact RegisterVersion accepts."""
    chunk_bytes: int = Field(default=1024 * 1024, gt=0, le=4 * 1024 * 1024)
    """Size of the artifact chunks DownloadArtifact streams."""
    write_timeout_s: float = Field(default=30.0, gt=0)
    """How long a mutation waits for its event to be read back from ``driftline.models``."""
    instance_id: str = "0"
    """Stable id of this replica; names its Kafka clients."""
    featuresets_dir: Path = Path("examples/featuresets")
    """Directory of feature-set YAML files: a version's input signature (its spec's
    features) is checked against its feature set at registration."""


class ServingSettings(_ServiceSection):
    """Serving: Predictor and the Open Inference Protocol."""

    admin: AdminSettings = AdminSettings(port=8085)
    """Admin HTTP endpoint."""
    grpc_host: str = "127.0.0.1"
    """Interface the serving gRPC server binds."""
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    """Predictor and GRPCInferenceService port."""
    features_target: str = "127.0.0.1:50051"
    """FeatureStore gRPC address."""
    registry_target: str = "127.0.0.1:50052"
    """Registry gRPC address."""
    models: list[str] = Field(default_factory=list)
    """Names of the models to serve; empty serves every model the registry lists."""
    api_keys_file: Path | None = None
    """A file of accepted API keys by hex SHA-256 digest, one a line with an optional name
    (``<sha256> partner-a``); unset in secure mode: ``<credentials_dir>/serving/
    api-keys.sha256`` when present. When there is one, or in secure mode, callers send
    their key as ``x-api-key`` gRPC metadata (tritonclient: ``headers={"x-api-key": KEY}``);
    in secure mode a caller with a Driftline service's or the admin's client certificate
    needs none, and only such a caller may SetCanary."""
    signing_key: str | None = None
    """HMAC key artifacts are verified with; unset uses ``registry.signing_key``."""
    feature_timeout_ms: float = Field(default=100.0, gt=0)
    """Deadline of one feature read (shortened to the caller's own deadline)."""
    feature_reads: Literal["stream", "unary"] = "stream"
    """How feature reads travel: ``stream`` sends them all over one long-lived
    ``StreamOnlineFeatures`` stream, one message each way per read; ``unary`` makes
    one ``GetOnlineFeatures`` call per read. A feature store without the stream is
    read unary."""
    feature_policy: Literal["impute", "fail"] = "impute"
    """Missing or stale online features: ``impute`` leaves them out of the model's input
    (River models handle absent keys); ``fail`` answers FAILED_PRECONDITION naming them."""
    feature_policy_by_model: dict[str, Literal["impute", "fail"]] = Field(default_factory=dict)
    """Per-model override of ``feature_policy`` (model name -> policy)."""
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    """Share of entities sent to the canary alias at start; changed at run time by SetCanary."""
    canary_alias: str = "challenger"
    """Alias the canary share goes to."""
    max_batch: int = Field(default=10_000, ge=1)
    """Most requests in one PredictBatch and most rows in one ModelInfer."""
    prediction_log_buffer: int = Field(default=20_000, ge=1)
    """Most prediction rows waiting for Kafka (a ModelInfer of 256 rows counts 256). A
    request's rows are taken whole while fewer wait, else dropped whole and counted in
    rows (``driftline_serving_prediction_log_dropped_total``), never blocking an RPC."""
    prediction_log_batch: int = Field(default=2000, ge=1)
    """Most prediction rows handed to the Kafka producer in one go (a larger request
    goes alone)."""
    registry_retry_s: float = Field(default=2.0, gt=0)
    """Pause between attempts to reach the registry when a model cannot be loaded yet."""
    pinned_cache_size: int = Field(default=8, ge=0)
    """Explicitly requested (pinned) versions kept loaded, least recently used evicted."""
    model_threads: int = Field(default=1, ge=1)
    """Threads a model's native code (OpenMP, BLAS) may use in one predict call.  One by
    default: serving answers many requests on one event loop, and OpenMP workers
    waiting for a busy core made a HistGradientBoosting predict take p99 624 ms for one
    row (1.6 ms with one thread) on a loaded two-core machine.  Raise it for large
    batches on a machine with idle cores."""
    compile_models: bool = True
    """Give a loaded model a compiled single-row path when its runtime has one that is
    exact (scikit-learn scalers and linear models through onnxruntime, checked against
    scikit-learn on probe rows at load; see ``driftline.model_runtimes.sklearn_runtime``).
    Single-row Predicts then cost ~25 µs in the model instead of ~420 µs of
    scikit-learn's input checks; batches are unaffected. Each load logs the outcome."""


class DetectorSettings(_Section):
    """Which detector watches each model's live error rate (the same ``{type: ...}`` shape as
    ``features.online_store``).

    ``type`` names a registered detector: ``error_rise`` (the default), one of River's
    as ``river.<Class>`` (``river.ADWIN``, ``river.PageHinkley``, ``river.DDM``,
    ``river.HDDMA``, ...) or a plug-in's.  The section's other keys are that
    detector's own parameters (its constructor's keywords), checked against it when
    the monitor starts, which names a bad one and exits (see
    ``driftline.drift_detectors.catalog``).

    >>> s = DetectorSettings.model_validate({"type": "river.ADWIN", "delta": 0.002})
    >>> s.type, s.params
    ('river.ADWIN', {'delta': 0.002})
    """

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    type: str = Field(default="error_rise", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    """The detector's registered name; a package adds names through the
    ``driftline.drift_detectors`` entry-point group."""

    @property
    def params(self) -> dict[str, Any]:
        """The detector's parameters: every key but ``type``."""
        return dict(self.model_extra or {})


class MonitoringSettings(_ServiceSection):
    """Monitoring: drift detectors, retraining trigger, dashboard."""

    admin: AdminSettings = AdminSettings(port=8086)
    """Admin HTTP endpoint; also serves the dashboard."""
    links: dict[str, str] = {}
    """Links the dashboard's header shows, name → URL (``{"Alertmanager": "http://…",
    "Jaeger": "http://…"}``; as a variable, JSON).  With a ``Jaeger`` link, each retraining
    request in the dashboard links to Jaeger's search for its trace.  The local platform
    sets its ops stack's."""
    consumer_group: str = "driftline-monitoring"
    """Kafka consumer group of the active monitor (it holds every model's detector state);
    its replicas elect the active one in ``<group>-leader`` and it writes under the
    transactional id ``<group>-writer``."""
    instance_id: str = "0"
    """Stable id of this replica, used in client ids."""
    session_timeout_s: float = Field(default=10.0, ge=1, le=300)
    """How long the active monitor may stop answering its consumer groups before a standby
    replica takes over (Kafka's ``session.timeout.ms``; heartbeats every fifth of it)."""
    trigger_kinds: list[Literal["data", "prediction", "concept"]] = ["concept"]
    """Drift kinds that may cause a retraining request; the others are only reported."""
    retrain_min_severity: Literal["info", "warning", "critical"] = "warning"
    """Detections below this severity never cause a retraining request."""
    debounce_s: float = Field(default=0.0, ge=0)
    """After an episode's first detection, gather further detections this long before requesting."""
    cooldown_s: float = Field(default=600.0, ge=0)
    """After a request, detections of the same model join that episode for this long."""
    detector: DetectorSettings = DetectorSettings()
    """The detector of each model's live error stream (concept drift); it starts afresh at
    each champion change.  The default, ``{type: error_rise}``, takes ``warmup`` (labelled
    predictions before it can fire, 3600: a model still learning is not drifting),
    ``min_shift`` (smallest rise of the error rate that counts, 0.05), ``threshold``
    (its CUSUM threshold, 14: higher means fewer false alarms, later detection) and
    ``slow_span`` (memory of its slow test, which finds a rise spread over thousands of
    predictions against the best error rate since the baseline, 4000; 0 turns it off)."""
    drift_window: int = Field(default=1000, ge=10)
    """Records per data / prediction drift window (PSI, KS, Jensen-Shannon)."""
    psi_threshold: float = Field(default=0.2, gt=0)
    """PSI at or above which a numeric feature (or the output) has drifted."""
    js_threshold: float = Field(default=0.1, gt=0, le=1)
    """Jensen-Shannon divergence at or above which a categorical feature has drifted."""
    kswin_every: int = Field(default=100, ge=0)
    """KSWIN sees every n-th value of a numeric feature (0 disables it; it costs ~0.7 ms each)."""
    accuracy_window: int = Field(default=1000, ge=1)
    """Labelled predictions the live accuracy is computed over."""
    cbpe_reference: int = Field(default=2000, ge=0)
    """Label-free accuracy estimate (CBPE) of a classifier: the first this many labelled
    predictions of each new champion calibrate its served confidence against being right
    (0 turns the estimate off).  Until they are in, ``driftline_estimated_accuracy`` is absent."""
    cbpe_window: int = Field(default=1000, ge=10)
    """Most recent champion predictions (no labels needed) the estimated accuracy is the
    mean calibrated confidence of."""
    cbpe_margin: float = Field(default=0.05, gt=0, lt=1)
    """A ``cbpe`` prediction-drift event (an early warning, not a retraining trigger) is raised
    when the estimated accuracy falls more than this below the reference window's accuracy."""
    join_capacity: int = Field(default=200_000, ge=1)
    """Most predictions (and early labels) held while waiting for the other half of the join."""
    publish_interval_s: float = Field(default=5.0, gt=0)
    """How often gauges and the in-memory time series are refreshed."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        moved = {"concept_warmup": "warmup", "concept_min_shift": "min_shift",
                 "concept_threshold": "threshold"}  # fmt: skip
        if isinstance(data, dict):
            for old, new in moved.items():
                if old in data:
                    raise ValueError(
                        f"monitoring.{old} moved to monitoring.detector.{new} "
                        f"(DRIFTLINE_MONITORING__DETECTOR__{new.upper()}), a parameter of the "
                        "error_rise detector that monitoring.detector.type selects"
                    )
        return data


class PlatformSettings(BaseSettings):
    """Everything a Driftline process can be configured with.

    >>> s = PlatformSettings(kafka={"bootstrap_servers": "127.0.0.1:19092"})
    >>> s.kafka.bootstrap_servers, s.serving.grpc_port
    ('127.0.0.1:19092', 50053)
    """

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    """Kafka connection and local broker layout."""
    redis: RedisSettings = RedisSettings()
    """Redis connection."""
    telemetry: TelemetrySettings = TelemetrySettings()
    """Traces, metrics, logs."""
    infra: InfraSettings = InfraSettings()
    """Local platform (``driftline infra``)."""
    security: SecuritySettings = SecuritySettings()
    """Secure mode (TLS, mTLS, Kafka and Redis ACL users, registry roles, API keys)."""
    ingestion: IngestionSettings = IngestionSettings()
    """Ingestion service."""
    features: FeaturesSettings = FeaturesSettings()
    """Feature store service."""
    training: TrainingSettings = TrainingSettings()
    """Training service."""
    registry: RegistrySettings = RegistrySettings()
    """Registry service."""
    serving: ServingSettings = ServingSettings()
    """Serving service."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Monitoring service."""
