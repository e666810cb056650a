{{/*
The six services and what the scaling model (docs/scaling.md) makes of each: the workload
kind, the admin port (/healthz, /readyz, /metrics; ingestion's HTTP API too), the gRPC port
(0: none), whether the replica needs a stable instance_id (its pod name), which settings
sections it reads, and whether it may be autoscaled.  The order is the README's.
*/}}
{{- define "driftline.serviceTable" -}}
ingestion:
  kind: StatefulSet
  admin: 8081
  grpc: 0
  instanceId: true
  redis: true
  featuresets: true
  models: false
  autoscale: true
features:
  kind: Deployment
  admin: 8082
  grpc: 50051
  instanceId: false
  redis: true
  featuresets: true
  models: false
  autoscale: false
training:
  kind: StatefulSet
  admin: 8083
  grpc: 0
  instanceId: true
  redis: false
  featuresets: true
  models: true
  autoscale: false
registry:
  kind: StatefulSet
  admin: 8084
  grpc: 50052
  instanceId: true
  redis: false
  featuresets: true
  models: false
  autoscale: false
serving:
  kind: Deployment
  admin: 8085
  grpc: 50053
  instanceId: false
  redis: false
  featuresets: false
  models: false
  autoscale: true
monitoring:
  kind: StatefulSet
  admin: 8086
  grpc: 0
  instanceId: true
  redis: false
  featuresets: false
  models: false
  autoscale: false
{{- end }}

{{- define "driftline.serviceNames" -}}
[ingestion, features, training, registry, serving, monitoring]
{{- end }}

{{- define "driftline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix of every object name, at most 45 characters so that
"<fullname>-monitoring-headless" stays within 63. */}}
{{- define "driftline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "driftline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; with a component (a service name) when given one. */}}
{{- define "driftline.labels" -}}
helm.sh/chart: {{ include "driftline.chart" .root }}
{{ include "driftline.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: driftline
{{- end }}

{{- define "driftline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftline.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "driftline.componentName" -}}
{{ include "driftline.fullname" .root }}-{{ .component }}
{{- end }}

{{- define "driftline.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "driftline.fullname" . }}-secrets
{{- end }}
{{- end }}

{{- define "driftline.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* A service's gRPC address inside the cluster. */}}
{{- define "driftline.grpcTarget" -}}
{{- $table := include "driftline.serviceTable" .root | fromYaml }}
{{- include "driftline.componentName" . }}:{{ (index $table .component).grpc }}
{{- end }}

{{/* The environment of service .component: everything it reads, as DRIFTLINE_* variables. */}}
{{- define "driftline.env" -}}
{{- $root := .root }}
{{- $name := .component }}
{{- $svc := .svc }}
{{- $section := upper $name }}
{{- $secret := include "driftline.secretName" $root }}
- name: DRIFTLINE_CONFIG
  value: /etc/driftline/config/driftline.yaml
- name: HOME
  value: /tmp
- name: DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS
  value: {{ $root.Values.kafka.bootstrapServers | quote }}
- name: DRIFTLINE_KAFKA__DEFAULT_REPLICATION_FACTOR
  value: {{ $root.Values.kafka.replicationFactor | quote }}
- name: DRIFTLINE_KAFKA__CLIENT_ID
  value: {{ $root.Values.kafka.clientId | quote }}
{{- if $svc.redis }}
- name: DRIFTLINE_REDIS__HOST
  value: {{ $root.Values.redis.host | quote }}
- name: DRIFTLINE_REDIS__PORT
  value: {{ $root.Values.redis.port | quote }}
- name: DRIFTLINE_REDIS__DB
  value: {{ $root.Values.redis.db | quote }}
{{- if $root.Values.redis.cluster }}
- name: DRIFTLINE_REDIS__CLUSTER
  value: "true"
{{- end }}
{{- end }}
{{- if $root.Values.security.enabled }}
- name: DRIFTLINE_SECURITY__ENABLED
  value: "true"
- name: DRIFTLINE_SECURITY__CREDENTIALS_DIR
  value: /var/run/driftline/credentials
{{- end }}
- name: DRIFTLINE_TELEMETRY__LOG_FORMAT
  value: json
- name: DRIFTLINE_TELEMETRY__LOG_LEVEL
  value: {{ $root.Values.telemetry.logLevel | quote }}
- name: DRIFTLINE_TELEMETRY__SAMPLE_RATIO
  value: {{ $root.Values.telemetry.sampleRatio | quote }}
{{- with $root.Values.telemetry.otlpEndpoint }}
- name: DRIFTLINE_TELEMETRY__OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: DRIFTLINE_{{ $section }}__ADMIN__HOST
  value: 0.0.0.0
- name: DRIFTLINE_{{ $section }}__ADMIN__PORT
  value: {{ $svc.admin | quote }}
{{- if $svc.grpc }}
- name: DRIFTLINE_{{ $section }}__GRPC_HOST
  value: 0.0.0.0
- name: DRIFTLINE_{{ $section }}__GRPC_PORT
  value: {{ $svc.grpc | quote }}
{{- end }}
{{- if $svc.instanceId }}
- name: DRIFTLINE_{{ $section }}__INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- if $svc.featuresets }}
- name: DRIFTLINE_{{ $section }}__FEATURESETS_DIR
  value: /etc/driftline/featuresets
{{- end }}
{{- if $svc.models }}
- name: DRIFTLINE_{{ $section }}__MODELS_DIR
  value: /etc/driftline/models
{{- end }}
{{- if eq $name "ingestion" }}
- name: DRIFTLINE_INGESTION__API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: ingestion-api-key
      optional: true
{{- end }}
{{- if eq $name "training" }}
- name: DRIFTLINE_TRAINING__REGISTRY_TARGET
  value: {{ include "driftline.grpcTarget" (dict "root" $root "component" "registry") }}
- name: DRIFTLINE_TRAINING__REGISTRY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: registry-token
{{- end }}
{{- if eq $name "registry" }}
- name: DRIFTLINE_REGISTRY__ARTIFACT_DIR
  value: /var/lib/driftline/artifacts
- name: DRIFTLINE_REGISTRY__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: registry-token
{{- end }}
{{- if or (eq $name "registry") (eq $name "training") }}
- name: DRIFTLINE_REGISTRY__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: signing-key
{{- end }}
{{- if eq $name "serving" }}
- name: DRIFTLINE_SERVING__FEATURES_TARGET
  value: {{ include "driftline.grpcTarget" (dict "root" $root "component" "features") }}
- name: DRIFTLINE_SERVING__REGISTRY_TARGET
  value: {{ include "driftline.grpcTarget" (dict "root" $root "component" "registry") }}
- name: DRIFTLINE_SERVING__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: signing-key
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
