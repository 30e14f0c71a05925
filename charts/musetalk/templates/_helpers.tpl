{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "musetalk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone if it already contains the chart name. */}}
{{- define "musetalk.fullname" -}}
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

{{- define "musetalk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "musetalk.labels" -}}
helm.sh/chart: {{ include "musetalk.chart" . }}
{{ include "musetalk.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: musetalk
{{- end }}

{{- define "musetalk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "musetalk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "musetalk.server.fullname" -}}
{{- printf "%s-server" (include "musetalk.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "musetalk.operator.fullname" -}}
{{- printf "%s-operator" (include "musetalk.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "musetalk.server.serviceAccountName" -}}
{{- if .Values.server.serviceAccount.create }}
{{- default (include "musetalk.server.fullname" .) .Values.server.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.server.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "musetalk.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "musetalk.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "musetalk.claimName" -}}
{{- default (printf "%s-avatars" (include "musetalk.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{- define "musetalk.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "musetalk.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "musetalk.apiKeySecret" -}}
{{- default (printf "%s-api-key" (include "musetalk.fullname" .)) .Values.apiKey.existingSecret }}
{{- end }}

{{/* Settings every pod that runs musetalk-server shares: the server and the preprocessing Jobs. */}}
{{- define "musetalk.settings" -}}
{{- $fixed := dict "MUSETALK_RESULT_DIR" .Values.persistence.mountPath "MUSETALK_MODEL_DIR" (printf "%s/models" .Values.persistence.mountPath) }}
{{- toJson (merge $fixed (deepCopy .Values.settings)) }}
{{- end }}

{{/* Node selector and tolerations for GPU work, merged with a component's own. */}}
{{- define "musetalk.gpuNodeSelector" -}}
{{- $own := index . 0 }}{{- $gpu := index . 1 }}
{{- if $gpu.enabled }}{{ toJson (merge (deepCopy $own) $gpu.nodeSelector) }}{{ else }}{{ toJson $own }}{{ end }}
{{- end }}

{{- define "musetalk.gpuTolerations" -}}
{{- $own := index . 0 }}{{- $gpu := index . 1 }}
{{- if $gpu.enabled }}{{ toJson (concat $own $gpu.tolerations) }}{{ else }}{{ toJson $own }}{{ end }}
{{- end }}

{{/* Resources with every quantity a string: server-side apply on 1.20 refuses a bare 1
("expected string, got 1"), and a user's `cpu: 2` must not break the install. */}}
{{- define "musetalk.resources" -}}
{{- $out := dict }}
{{- range $kind, $quantities := . }}
{{- $strings := dict }}
{{- range $name, $value := $quantities }}{{ $_ := set $strings $name (toString $value) }}{{ end }}
{{- $_ := set $out $kind $strings }}
{{- end }}
{{- toYaml $out }}
{{- end }}
