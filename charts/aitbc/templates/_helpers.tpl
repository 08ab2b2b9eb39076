{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "aitbc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "aitbc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aitbc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "aitbc.labels" -}}
helm.sh/chart: {{ include "aitbc.chart" . }}
app.kubernetes.io/name: {{ include "aitbc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aitbc
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "aitbc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aitbc.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "aitbc.operator.fullname" -}}
{{- printf "%s-operator" (include "aitbc.fullname" .) }}
{{- end }}

{{- define "aitbc.gpuAgent.fullname" -}}
{{- printf "%s-gpu-agent" (include "aitbc.fullname" .) }}
{{- end }}

{{- define "aitbc.chain.name" -}}
{{- default (printf "%s-chain" (include "aitbc.fullname" .)) .Values.chain.name }}
{{- end }}

{{- define "aitbc.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "aitbc.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aitbc.schedulerSecretName" -}}
{{- default (printf "%s-scheduler-key" (include "aitbc.fullname" .)) .Values.scheduler.existingSecret }}
{{- end }}

{{/* image reference; call with (dict "ctx" $ "repository" "aitbc-operator"). */}}
{{- define "aitbc.image" -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .repository (default .ctx.Chart.AppVersion .ctx.Values.image.tag) }}
{{- end }}

{{/* The hardened container securityContext every AITBC container uses. */}}
{{- define "aitbc.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The operator's rules on the namespaces it watches (a ClusterRole, or a Role in each of
watchNamespaces): exactly the verbs its code uses.
*/}}
{{- define "aitbc.operator.rules" -}}
- apiGroups: ["aitbc.io"]
  resources: ["nodes", "wallets", "servicelistings", "bids", "aijobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["aitbc.io"]
  resources: ["nodes/status", "wallets/status", "servicelistings/status", "bids/status", "aijobs/status"]
  verbs: ["patch"]
# owner references with blockOwnerDeletion on the objects a Node owns
- apiGroups: ["aitbc.io"]
  resources: ["nodes/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- define "aitbc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The chain id the gpu-agents sign receipts for. chainId when set; else the chart's chain
(chain.chainId, else the operator's default aitbc-<namespace>-<name>); else the examples'
Node "aitbc" in the release namespace (aitbc-<namespace>-aitbc).
*/}}
{{- define "aitbc.chainId" -}}
{{- if .Values.chainId }}
{{- .Values.chainId }}
{{- else if .Values.chain.create }}
{{- default (printf "aitbc-%s-%s" .Release.Namespace (include "aitbc.chain.name" .)) .Values.chain.chainId }}
{{- else }}
{{- printf "aitbc-%s-aitbc" .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The gpu-agent's own ServiceAccount (a token only in pod mode). */}}
{{- define "aitbc.gpuAgent.serviceAccountName" -}}
{{- include "aitbc.gpuAgent.fullname" . }}
{{- end }}

{{/* Pod mode: the namespace of the job Pods. */}}
{{- define "aitbc.gpuAgent.jobNamespace" -}}
{{- default (printf "%s-jobs" .Release.Name) .Values.gpuAgent.jobs.namespace }}
{{- end }}
