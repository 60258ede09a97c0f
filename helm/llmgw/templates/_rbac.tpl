{{/*
Least privilege for the operator. kopf patches its finalizers and progress
annotations onto the custom resources and the status through /status; the
apply layer writes children with server-side apply (patch), and deletes
children it no longer renders. Pods are never touched.
*/}}
{{- define "llmgw.namespacedRules" -}}
- apiGroups: ["llmgateway.io"]
  resources: ["llmgateways", "providerpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["llmgateway.io"]
  resources: ["llmgateways/status", "providerpolicies/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
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
{{- if include "llmgw.clusterWide" . }}
{{- if include "llmgw.peeringEnabled" . }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end -}}
