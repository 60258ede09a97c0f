{{/*
Least privilege for the operator: exactly what its code calls.
- The custom resources are only read (kopf's event handlers and indexes watch
  them; the reconciler GETs them); only their /status is written.
- Children are written with server-side apply, a PATCH that creates the
  object when it is missing, hence create + patch; ConfigMaps, Secrets,
  Deployments and HPAs are watched (Secrets for key rotation, children to put
  back hand edits), and those not labelled as the operator's are listed and
  watched as metadata only (never a Secret's data), to know which child
  names others hold. An HPA is deleted when autoscaling is removed, a Deployment
  when the template is (the gateway switches to injection mode).
- Events are posted on condition transitions. Pods are only listed, by
  gateway label, to poll the ready ones' GET /status (never watched or written).
*/}}
{{- define "llmgw.namespacedRules" -}}
- apiGroups: ["llmgateway.io"]
  resources: ["llmgateways", "providerpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["llmgateway.io"]
  resources: ["llmgateways/status", "providerpolicies/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end -}}

{{- define "llmgw.clusterRules" -}}
# kopf discovers its resources and notices CRD changes through the CRDs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# kopf lists namespaces even when given explicit ones; refused, it retries
# for about a minute before falling back, delaying every start.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- if and .Values.webhook.enabled (ne .Values.webhook.certificates "cert-manager") }}
# Self-managed webhook certificates: caBundle is set on the chart's one configuration.
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["mutatingwebhookconfigurations"]
  resourceNames: [{{ include "llmgw.webhookConfiguration" . | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- if include "llmgw.clusterWide" . }}
{{- if include "llmgw.peeringEnabled" . }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end -}}
