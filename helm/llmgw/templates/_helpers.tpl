{{/* Names, labels and the operator's command line. */}}

{{- define "llmgw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmgw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llmgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "llmgw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llmgw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmgw
{{- end -}}

{{/* Labels for objects that are not the operator itself (monitoring). */}}
{{- define "llmgw.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmgw
{{- end -}}

{{- define "llmgw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmgw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "llmgw.imageRef" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Peering is forced on with more than one replica: without it they would all reconcile. */}}
{{- define "llmgw.peeringEnabled" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{- define "llmgw.peeringName" -}}
{{- default (include "llmgw.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "llmgw.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{- define "llmgw.args" -}}
{{- if include "llmgw.clusterWide" . }}
- --all-namespaces
{{- else }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.liveness.port }}/healthz
- --metrics-port={{ .Values.metrics.port }}
- --data-plane-period={{ .Values.dataPlane.period }}
- --data-plane-timeout={{ .Values.dataPlane.timeout }}
- --data-plane-concurrency={{ .Values.dataPlane.concurrency }}
- --data-plane-rate={{ .Values.dataPlane.rate }}
{{- if include "llmgw.peeringEnabled" . }}
- --peering={{ include "llmgw.peeringName" . }}
{{- else }}
- --standalone
{{- end }}
{{- if .Values.logLevel }}
- --{{ .Values.logLevel }}
{{- end }}
{{- with .Values.gatewayPods }}
{{- range .allowedServiceAccounts }}
- --allowed-service-account={{ . }}
{{- end }}
{{- if .allowPrivileged }}
- --allow-privileged
{{- end }}
{{- if .allowHostNamespaces }}
- --allow-host-namespaces
{{- end }}
{{- if .allowHostPath }}
- --allow-host-path
{{- end }}
{{- end }}
{{- with .Values.webhook }}
{{- if .enabled }}
- --webhook-port={{ .port }}
- --webhook-secret={{ include "llmgw.webhookSecret" $ }}
- --webhook-failure-policy={{ .failurePolicy }}
{{- if eq .certificates "cert-manager" }}
- --webhook-certs=external
{{- else }}
- --webhook-configuration={{ include "llmgw.webhookConfiguration" $ }}
- --webhook-cert-validity={{ mul (int .certValidityDays) 86400 }}
{{- end }}
{{- range (include "llmgw.webhookHosts" $ | fromYamlArray) }}
- --webhook-host={{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "llmgw.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "llmgw.fullname" .) -}}
{{- end -}}

{{- define "llmgw.webhookConfiguration" -}}
{{- printf "%s-%s" (include "llmgw.fullname" .) .Release.Namespace | trunc 253 -}}
{{- end -}}

{{/* The names the API server may call the webhook by: the Service's, or the url's host. */}}
{{- define "llmgw.webhookHosts" -}}
{{- if .Values.webhook.url -}}
{{- list (regexReplaceAll ":[0-9]+$" (urlParse .Values.webhook.url).host "") | toYaml -}}
{{- else -}}
{{- $service := printf "%s-webhook" (include "llmgw.fullname" .) -}}
{{- list (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) | toYaml -}}
{{- end -}}
{{- end -}}
