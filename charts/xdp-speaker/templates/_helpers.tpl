{{/* Names and labels. */}}

{{- define "xdp-speaker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "xdp-speaker.fullname" -}}
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

{{- define "xdp-speaker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "xdp-speaker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xdp-speaker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: speaker
{{- end }}

{{- define "xdp-speaker.labels" -}}
helm.sh/chart: {{ include "xdp-speaker.chart" . }}
{{ include "xdp-speaker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "xdp-speaker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "xdp-speaker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where pools, advertisements and ServiceL2Statuses live (--namespace). */}}
{{- define "xdp-speaker.configNamespace" -}}
{{- default .Release.Namespace .Values.speaker.configNamespace }}
{{- end }}

{{- define "xdp-speaker.memberlistSecretName" -}}
{{- default (printf "%s-memberlist" (include "xdp-speaker.fullname" .)) .Values.speaker.memberlist.secretName }}
{{- end }}

{{- define "xdp-speaker.image" -}}
{{- printf "%s:%s" .Values.speaker.image.repository (default .Chart.AppVersion .Values.speaker.image.tag) }}
{{- end }}

{{/*
MetalLB's default interface exclude list, the same as the speaker's own
default (speaker/src/interfaces/discovery.rs, METALLB_EXCLUDED). It is spelled
out only when extra patterns are added: the flag replaces the default.
*/}}
{{- define "xdp-speaker.defaultExcludedInterfaces" -}}
^docker.*,^cbr.*,^dummy.*,^virbr.*,^lxcbr.*,^veth.*,^lo$,^cali.*,^tunl.*,^flannel.*,^kube-ipvs.*,^cni.*,^nodelocaldns.*,^lxc.*
{{- end }}

{{/*
The --exclude-interfaces argument, or nothing when the daemon's default applies.
An empty value ("--exclude-interfaces=") excludes nothing.
*/}}
{{- define "xdp-speaker.excludeInterfacesArg" -}}
{{- $patterns := list }}
{{- if .Values.speaker.excludeInterfaces.enabled }}
{{- $patterns = splitList "," (include "xdp-speaker.defaultExcludedInterfaces" .) }}
{{- end }}
{{- $patterns = concat $patterns (.Values.speaker.excludeInterfaces.extra | default list) }}
{{- if not (and .Values.speaker.excludeInterfaces.enabled (empty .Values.speaker.excludeInterfaces.extra)) }}
{{- printf "--exclude-interfaces=%s" (join "," $patterns) }}
{{- end }}
{{- end }}

{{/* host:port for --metrics-address; IPv6 addresses bracketed. */}}
{{- define "xdp-speaker.metricsAddress" -}}
{{- $host := .Values.speaker.metricsBindAddress }}
{{- $port := include "xdp-speaker.metricsPort" . }}
{{- if contains ":" $host }}
{{- printf "[%s]:%v" $host $port }}
{{- else }}
{{- printf "%s:%v" $host $port }}
{{- end }}
{{- end }}

{{/*
Whether metrics are served securely (prometheus.secureMetricsPort set): "true" or "".
*/}}
{{- define "xdp-speaker.secureMetrics" -}}
{{- if not (kindIs "invalid" .Values.prometheus.secureMetricsPort) }}
{{- if not .Values.prometheus.speakerMetricsTLSSecret }}
{{- fail "prometheus.secureMetricsPort needs prometheus.speakerMetricsTLSSecret: a kubernetes.io/tls Secret (tls.crt, tls.key) for the metrics server's certificate" }}
{{- end }}
{{- true }}
{{- end }}
{{- end }}

{{/*
The port the metrics server listens on: the secure one when set.
*/}}
{{- define "xdp-speaker.metricsPort" -}}
{{- if include "xdp-speaker.secureMetrics" . }}
{{- int .Values.prometheus.secureMetricsPort }}
{{- else }}
{{- int .Values.speaker.metricsPort }}
{{- end }}
{{- end }}

{{/* Whether the speaker runs with SYS_ADMIN or privileged (no allowPrivilegeEscalation=false then). */}}
{{- define "xdp-speaker.mayEscalate" -}}
{{- if or .Values.speaker.privileged (has "SYS_ADMIN" .Values.speaker.capabilities) (has "CAP_SYS_ADMIN" .Values.speaker.capabilities) }}true{{ end }}
{{- end }}

{{/*
Refuse combinations that cannot work. Called from the DaemonSet template.

With membership disabled the speaker treats every node with a Node object as a
candidate (that is what "disabled" means: liveness unknown, not empty). A node
without a speaker can then win an IP and nobody answers for it, so every node
must run one: a nodeSelector or required node affinity is refused, as MetalLB's
chart does since v0.15.
*/}}
{{- define "xdp-speaker.validate" -}}
{{- if not .Values.speaker.memberlist.enabled }}
{{- $restricted := list }}
{{- if .Values.speaker.nodeSelector }}
{{- $restricted = append $restricted "speaker.nodeSelector" }}
{{- end }}
{{- $nodeAffinity := (.Values.speaker.affinity | default dict).nodeAffinity | default dict }}
{{- if $nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution }}
{{- $restricted = append $restricted "speaker.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution" }}
{{- end }}
{{- if $restricted }}
{{- fail (printf "%s cannot be set when speaker.memberlist.enabled=false: with membership disabled every node is a candidate to announce, so every node must run a speaker (a node without one could win an IP that nobody then answers for). Enable speaker.memberlist or remove the node restriction." (join " and " $restricted)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Schema of a metav1.LabelSelector, for the CRDs. */}}
{{- define "xdp-speaker.crd.labelSelector" -}}
type: object
description: A label selector; an empty selector matches everything.
properties:
  matchLabels:
    type: object
    additionalProperties:
      type: string
  matchExpressions:
    type: array
    items:
      type: object
      required:
        - key
        - operator
      properties:
        key:
          type: string
        operator:
          type: string
        values:
          type: array
          items:
            type: string
x-kubernetes-map-type: atomic
{{- end }}
