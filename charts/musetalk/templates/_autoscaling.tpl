{{/*
Autoscaling (values: autoscaling). The metrics the scaler reads, in one place for both modes:
each a series every server pod exports, how its per-pod value is formed from that pod's series, and
the per-pod average the scaler aims at. Only metrics with a target are used.
*/}}
{{- define "musetalk.autoscaling.metrics" -}}
{{- $a := .Values.autoscaling }}
{{- $metrics := list (dict "series" "musetalk_scheduler_load" "aggregation" "max" "target" $a.targetLoad) }}
{{- if $a.targetQueueDepth }}
{{- /* One series per priority: a pod's queue is their sum. */}}
{{- $metrics = append $metrics (dict "series" "musetalk_scheduler_queue_depth" "aggregation" "sum" "target" $a.targetQueueDepth) }}
{{- end }}
{{- toJson $metrics }}
{{- end }}

{{/*
The scale-down that drains: at most `pods` pods go per period, and the period defaults to the pod's
terminationGracePeriodSeconds, so a pod has finished its preStop and its drain before the next
one is asked to go. Scale-up keeps Kubernetes' defaults (fast: a refused request retries at once).
*/}}
{{- define "musetalk.autoscaling.behavior" -}}
{{- $down := .Values.autoscaling.scaleDown }}
{{- $server := .Values.server }}
{{- $grace := add $server.preStopSeconds $server.shutdownGraceSeconds 10 }}
scaleDown:
  stabilizationWindowSeconds: {{ $down.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ $down.pods }}
      periodSeconds: {{ default $grace $down.periodSeconds }}
{{- end }}

{{/* PromQL label matchers that pick this release's server pods, for KEDA's query. */}}
{{- define "musetalk.autoscaling.kedaMatchers" -}}
{{- default (printf "namespace=%q,service=%q" .Release.Namespace (include "musetalk.server.fullname" .)) .Values.autoscaling.keda.labelMatchers }}
{{- end }}
