{{/* The chart name, truncated to a DNS label. */}}
{{- define "toucan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the operator's Deployment, Service and ServiceAccount. */}}
{{- define "toucan.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "toucan.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "toucan.labels" -}}
helm.sh/chart: {{ include "toucan.chart" . }}
app.kubernetes.io/name: {{ include "toucan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: toucan
{{- end }}

{{- define "toucan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toucan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "toucan.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "toucan.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "toucan.postgresql.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toucan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end }}

{{- define "toucan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "toucan.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "toucan.operatorSubject" -}}
- kind: ServiceAccount
  name: {{ include "toucan.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "toucan.stepServiceAccountName" -}}
{{- required "stepServiceAccount.name must not be empty" .Values.stepServiceAccount.name }}
{{- end }}

{{- define "toucan.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operator.repository (default .Chart.AppVersion .Values.image.operator.tag) }}
{{- end }}

{{- define "toucan.launcherImage" -}}
{{- printf "%s:%s" .Values.image.launcher.repository (default .Chart.AppVersion .Values.image.launcher.tag) }}
{{- end }}

{{- define "toucan.servingImage" -}}
{{- printf "%s:%s" .Values.image.serving.repository (default (printf "%s-cpu" .Chart.AppVersion) .Values.image.serving.tag) }}
{{- end }}

{{- define "toucan.apiUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "toucan.fullname" .) .Release.Namespace .Values.api.port) .Values.api.url }}
{{- end }}

{{/*
Where the operator's database URL comes from, as "SECRET KEY". Fails with the fix when the values
name no database or more than one.
*/}}
{{- define "toucan.databaseSecretRef" -}}
{{- $db := .Values.database }}
{{- $sources := 0 }}
{{- if .Values.postgresql.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if $db.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if $db.existingSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if eq $sources 0 }}
{{- fail "toucan: the operator needs PostgreSQL: set database.url (postgres://USER:PASSWORD@HOST:5432/DB), database.existingSecret (and database.key), or postgresql.enabled=true" }}
{{- else if gt $sources 1 }}
{{- fail "toucan: set only one of database.url, database.existingSecret and postgresql.enabled=true" }}
{{- end }}
{{- if .Values.postgresql.enabled }}
{{- printf "%s url" (include "toucan.postgresql.fullname" .) }}
{{- else if $db.url }}
{{- printf "%s-database url" (include "toucan.fullname" .) }}
{{- else }}
{{- printf "%s %s" $db.existingSecret (required "database.key is required with database.existingSecret" $db.key) }}
{{- end }}
{{- end }}

{{/* The PostgreSQL password: the one already in the cluster, else a new one. */}}
{{- define "toucan.postgresql.password" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "toucan.postgresql.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "password") }}
{{- index $existing.data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* Rules on the namespaced objects the operator reconciles and creates. */}}
{{- define "toucan.operatorNamespacedRules" -}}
- apiGroups: ["toucan.dev"]
  resources: ["pipelines", "pipelineruns"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# A TrainingJob runs as a PipelineRun it owns; a finished one is deleted after its TTL.
- apiGroups: ["toucan.dev"]
  resources: ["trainingjobs"]
  verbs: ["get", "list", "watch", "delete"]
# A TuningStudy runs its trials as PipelineRuns it owns; it reads its warm-start studies.
- apiGroups: ["toucan.dev"]
  resources: ["tuningstudies"]
  verbs: ["get", "list", "watch"]
# An Endpoint's versions run as Deployments it owns, behind a router Deployment and a Service;
# a model its monitoring retrained is added to it as a version, and removed or made the only
# one when its rollout ends.
- apiGroups: ["toucan.dev"]
  resources: ["endpoints"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["toucan.dev"]
  resources: ["pipelines/status", "pipelineruns/status", "trainingjobs/status", "tuningstudies/status", "endpoints/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["toucan.dev"]
  resources: ["pipelines/finalizers", "pipelineruns/finalizers", "trainingjobs/finalizers", "tuningstudies/finalizers", "endpoints/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "create", "patch", "delete"]
# An Endpoint that scales on CPU: one HorizontalPodAutoscaler per version.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "create", "patch", "delete"]
# A gang's pods are patched once admitted (their scheduling gate removed).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# A gang's headless Service: its replicas' stable names; an Endpoint's Services (applied; the
# versions' ones, behind a Gateway API route, are listed to delete those of removed versions).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "create", "patch", "delete"]
# An Endpoint's Gateway API route, where Gateway API is installed.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
# An Endpoint's alerting rules, where prometheus-operator is installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules"]
  verbs: ["get", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
