{{- define "pod-rebalancer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pod-rebalancer.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "pod-rebalancer.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pod-rebalancer.serviceAccountName" -}}
{{- default (include "pod-rebalancer.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "pod-rebalancer.secretName" -}}
{{- default (include "pod-rebalancer.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{/* The target namespaces, and those where some target deletes pods (action: delete). */}}
{{- define "pod-rebalancer.namespaces" -}}
{{- $all := list -}}
{{- range .Values.config.targets -}}{{- $all = append $all .namespace -}}{{- end -}}
{{- $all | uniq | toJson -}}
{{- end -}}
{{- define "pod-rebalancer.deletingNamespaces" -}}
{{- $all := list -}}
{{- range .Values.config.targets -}}{{- if eq (default "evict" .action) "delete" -}}{{- $all = append $all .namespace -}}{{- end -}}{{- end -}}
{{- $all | uniq | toJson -}}
{{- end -}}

{{/* The alert rules: the generated skew rules given as skewRules, and the chart's own. */}}
{{- define "pod-rebalancer.ruleGroups" -}}
{{- $groups := list -}}
{{- if .Values.skewRules -}}
{{- $groups = concat $groups (fromYaml .Values.skewRules).groups -}}
{{- end -}}
{{- $groups = concat $groups (fromYaml (.Files.Get "files/self-monitoring.rules.yml")).groups -}}
{{- toYaml $groups -}}
{{- end -}}
