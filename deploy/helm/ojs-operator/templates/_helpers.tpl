{{/* Chart name, truncated to 63 characters. */}}
{{- define "ojs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name when it contains the chart name (`helm install
ojs-operator ...` gives the names the reference README's troubleshooting uses). */}}
{{- define "ojs-operator.fullname" -}}
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

{{- define "ojs-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object (component added per object). */}}
{{- define "ojs-operator.labels" -}}
helm.sh/chart: {{ include "ojs-operator.chart" . }}
app.kubernetes.io/name: {{ include "ojs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: ojs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The manager pods' selector; `control-plane=controller-manager` is what the troubleshooting guide
selects on. */}}
{{- define "ojs-operator.selectorLabels" -}}
control-plane: controller-manager
app.kubernetes.io/name: {{ include "ojs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ojs-operator.serviceAccountName" -}}
{{- default (printf "%s-controller-manager" (include "ojs-operator.fullname" .)) .Values.serviceAccount.name }}
{{- end }}

{{- define "ojs-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{- define "ojs-operator.webhookServiceName" -}}
{{- printf "%s-webhook-service" (include "ojs-operator.fullname" .) }}
{{- end }}

{{- define "ojs-operator.webhookConfigName" -}}
{{- printf "%s-validating-webhook-configuration" (include "ojs-operator.fullname" .) }}
{{- end }}

{{- define "ojs-operator.webhookCertSecret" -}}
{{- printf "%s-webhook-server-cert" (include "ojs-operator.fullname" .) }}
{{- end }}

{{/* Self-managed certificates: the operator writes its Secret and the configuration's caBundle. */}}
{{- define "ojs-operator.selfManagedCerts" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certificate.mode "self-managed") }}true{{ end }}
{{- end }}

{{- define "ojs-operator.validateValues" -}}
{{- if not (has .Values.webhook.certificate.mode (list "self-managed" "cert-manager")) }}
{{- fail (printf "webhook.certificate.mode must be self-managed or cert-manager, not %q" .Values.webhook.certificate.mode) }}
{{- end }}
{{- end }}
