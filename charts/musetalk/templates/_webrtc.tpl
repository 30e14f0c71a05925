{{/*
WebRTC (values `webrtc`; docs/webrtc.md): the server container's ICE settings and the pod's network.
Kept in this one file so the deployment only includes it.
*/}}
{{- define "musetalk.webrtcEnv" -}}
{{- $w := .Values.webrtc }}
{{- if $w.iceServers }}
- name: MUSETALK_WEBRTC_ICE_SERVERS
  value: {{ join "," $w.iceServers | quote }}
{{- end }}
- name: MUSETALK_WEBRTC_MAX_VIEWERS
  value: {{ $w.maxViewers | quote }}
{{- if $w.turnSecret.name }}
- name: MUSETALK_WEBRTC_TURN_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $w.turnSecret.name }}
      key: {{ $w.turnSecret.usernameKey }}
- name: MUSETALK_WEBRTC_TURN_CREDENTIAL
  valueFrom:
    secretKeyRef:
      name: {{ $w.turnSecret.name }}
      key: {{ $w.turnSecret.credentialKey }}
{{- end }}
{{- end }}

{{- define "musetalk.webrtcPod" -}}
{{- if .Values.webrtc.hostNetwork }}
# WebRTC host candidates on the node's own addresses (aiortc binds ephemeral UDP ports).
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- end }}
