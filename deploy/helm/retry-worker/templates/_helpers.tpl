{{- define "retry-worker.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "retry-worker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "retry-worker.labels" -}}
app.kubernetes.io/name: {{ include "retry-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "retry-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retry-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "retry-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "retry-worker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* The image by digest when one is given (what was tested is what runs), else by tag. */ -}}
{{- define "retry-worker.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- /* Spread over zones, then hosts: a zone or a node lost never takes every replica. */ -}}
{{- define "retry-worker.spread" -}}
{{- range $i, $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
{{- if $i }}{{ "\n" }}{{ end -}}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "retry-worker.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end -}}

{{- /* The worker's configuration: `config/<environment>.yaml` (the same file the image and
ECS run with `--env`: one source per environment), with `.Values.config` over it. The image's
`config/base.yaml` sits under both. As YAML: `include ... | fromYaml`. */ -}}
{{- define "retry-worker.config" -}}
{{- $file := dict -}}
{{- if .Values.environment -}}
{{- $text := .Files.Get (printf "files/config/%s.yaml" .Values.environment) -}}
{{- if not $text -}}
{{- fail (printf "environment %s: there is no config/%s.yaml" .Values.environment .Values.environment) -}}
{{- end -}}
{{- $file = fromYaml $text -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $file (deepCopy (default dict .Values.config))) -}}
{{- end -}}

{{- define "retry-worker.port" -}}
{{- $http := default dict (include "retry-worker.config" . | fromYaml).http -}}
{{- default 8080 $http.port -}}
{{- end -}}

{{- define "retry-worker.graceSeconds" -}}
{{- $shutdown := default dict (include "retry-worker.config" . | fromYaml).shutdown -}}
{{- default 25 $shutdown.grace_seconds | int -}}
{{- end -}}

{{- /* The console's pods carry a name of their own: the worker's Deployment, Service and
PodDisruptionBudget select by name and instance, and must never select a console pod. */ -}}
{{- define "retry-worker.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "retry-worker.name" . }}-console
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "retry-worker.consoleName" -}}
{{- printf "%s-console" (include "retry-worker.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "retry-worker.consoleServiceAccountName" -}}
{{- if .Values.console.serviceAccount.create -}}
{{- default (include "retry-worker.consoleName" .) .Values.console.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.console.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* What the chart refuses to render: settings that would quietly hurt a target. Without
DynamoDB coordination every replica keeps its own rate limit, breaker and loop guard, so N
replicas give each target N times its budget; and a replica that starts while the table is
down assumes `members_when_unknown` members, so KEDA must never run more than that. */ -}}
{{- define "retry-worker.checks" -}}
{{- $config := include "retry-worker.config" . | fromYaml -}}
{{- $coordination := default dict $config.coordination -}}
{{- $backend := default "none" $coordination.backend -}}
{{- if and (or .Values.keda.enabled (gt (int .Values.replicaCount) 1)) (ne $backend "dynamodb") -}}
{{- fail "more than one replica (replicaCount > 1, or keda.enabled) needs config.coordination.backend: dynamodb (and its table, deploy/dynamodb): without it each replica has its own rate limit, breaker and loop guard, and every target gets replicas x its budget" -}}
{{- end -}}
{{- if and (eq $backend "dynamodb") (not $coordination.table) -}}
{{- fail (printf "config.coordination.table: name the DynamoDB table in config/<environment>.yaml (where `retry-worker iam-policy` reads it too), one per deployment, e.g. %s-coordination: two deployments that share a table share their targets' budgets" .Release.Name) -}}
{{- end -}}
{{- range $sink := (default dict $config.notify).sinks -}}
{{- if and $sink.webhook (hasPrefix "/secrets/notify/" (default "" $sink.webhook.url_file)) (not $.Values.notifyWebhookSecret.name) -}}
{{- fail (printf "config.notify.sinks: the webhook reads %s, which only notifyWebhookSecret.name mounts (a Secret holding the URL under notifyWebhookSecret.key)" $sink.webhook.url_file) -}}
{{- end -}}
{{- end -}}
{{- $unknown := default 10 $coordination.members_when_unknown | int -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.maxReplicaCount) $unknown) -}}
{{- fail (printf "keda.maxReplicaCount %d exceeds config.coordination.members_when_unknown %d: replicas that start while the table is down each take 1/%d of every budget, so more than %d of them would take more than the whole" (int .Values.keda.maxReplicaCount) $unknown $unknown $unknown) -}}
{{- end -}}
{{- end -}}
