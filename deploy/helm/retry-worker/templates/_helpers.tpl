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

{{- define "retry-worker.port" -}}
{{- $http := default dict .Values.config.http -}}
{{- default 8080 $http.port -}}
{{- end -}}

{{- define "retry-worker.graceSeconds" -}}
{{- $shutdown := default dict .Values.config.shutdown -}}
{{- default 25 $shutdown.grace_seconds | int -}}
{{- end -}}
