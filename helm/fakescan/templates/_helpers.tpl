{{/* Names and labels, bitnami/airflow style. */}}
{{- define "fakescan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fakescan.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "fakescan.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "fakescan.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fakescan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fakescan.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fakescan.labels" -}}
{{ include "fakescan.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: fakescan
{{- end -}}

{{/* CronJob names stay under 52 characters: 30 + "-nightly-" + a source name of at most 13. */}}
{{- define "fakescan.nightlyName" -}}
{{- printf "%s-nightly-%s" (include "fakescan.fullname" .root | trunc 30 | trimSuffix "-") .name -}}
{{- end -}}

{{- define "fakescan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fakescan.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The CPU image (everything but GPU workers). */}}
{{- define "fakescan.image" -}}
{{- $tag := .Values.image.cpuTag | default (printf "%s-cpu" .Chart.AppVersion) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "fakescan.workerImage" -}}
{{- if .Values.worker.gpu.enabled -}}
{{- $tag := .Values.image.cudaTag | default (printf "%s-cuda" .Chart.AppVersion) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- else -}}
{{- include "fakescan.image" . -}}
{{- end -}}
{{- end -}}

{{/* The plain broker URL: broker.url, else the chart's own Redis (redis.enabled); empty if neither. */}}
{{- define "fakescan.brokerUrl" -}}
{{- if .Values.broker.url -}}
{{- .Values.broker.url -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "fakescan.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The broker URL as an env entry: from the existing Secret, else the plain url; one is required. */}}
{{- define "fakescan.brokerEnv" -}}
{{- if .Values.broker.existingSecret -}}
- name: FAKESCAN_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.broker.existingSecret }}
      key: {{ .Values.broker.existingSecretKey }}
{{- else -}}
- name: FAKESCAN_BROKER_URL
  value: {{ required "broker.url or broker.existingSecret is required (or redis.enabled): the workers take their batches from a Redis broker" (include "fakescan.brokerUrl" .) | quote }}
{{- end -}}
{{- end -}}

{{/* No password is ever rendered: any URL with one in the values (scheme://user:PASSWORD@host) fails
     the render, without echoing it. Such a URL belongs in a Secret the values name. */}}
{{- define "fakescan.refusePasswordsInValues" -}}
{{- if regexMatch "[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@\\s\"]*:[^/?#@\\s\"]*@" (toJson .Values) -}}
{{- fail "a URL in the values carries a password (scheme://user:PASSWORD@host), which would be written into the manifests in plain text: put the URL in a Secret and name it (broker.existingSecret, database.existingSecret, or settings.extraEnv with valueFrom.secretKeyRef)" -}}
{{- end -}}
{{- end -}}

{{/* Environment every fakescan container gets: settings, database, broker, S3. No secret is ever rendered as a value. */}}
{{- define "fakescan.env" -}}
- name: FAKESCAN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: create a Secret holding the database URL (see values.yaml) and name it here" .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
{{ include "fakescan.brokerEnv" . }}
- name: FAKESCAN_HOME
  value: /var/lib/fakescan
- name: FAKESCAN_QUEUE
  value: {{ .Values.settings.queue | quote }}
- name: FAKESCAN_DETECTORS
  value: {{ join "," .Values.settings.detectors | quote }}
- name: FAKESCAN_BATCH_SIZE
  value: {{ .Values.settings.batchSize | quote }}
- name: FAKESCAN_VISIBILITY_TIMEOUT
  value: {{ .Values.settings.visibilityTimeout | quote }}
- name: FAKESCAN_RETRY_BACKOFF_MAX
  value: {{ .Values.settings.retryBackoffMax | quote }}
- name: FAKESCAN_BATCH_BUDGET
  value: {{ .Values.settings.batchBudget | quote }}
- name: FAKESCAN_RECONCILE_GRACE
  value: {{ .Values.settings.reconcileGrace | quote }}
- name: FAKESCAN_FETCH_CONCURRENCY
  value: {{ .Values.settings.fetchConcurrency | quote }}
- name: FAKESCAN_MAX_OBJECT_BYTES
  value: {{ .Values.settings.maxObjectBytes | int64 | quote }}
- name: FAKESCAN_LOG_JSON
  value: {{ ternary "1" "0" .Values.settings.logJson | quote }}
- name: FAKESCAN_LOG_LEVEL
  value: {{ .Values.settings.logLevel | quote }}
{{- with .Values.s3.endpointUrl }}
- name: FAKESCAN_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: FAKESCAN_S3_REGION
  value: {{ . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- with .Values.settings.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Writable places under a read-only root filesystem. */}}
{{- define "fakescan.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /var/lib/fakescan
{{- end -}}

{{- define "fakescan.volumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {{ if .sizeLimit }}{sizeLimit: {{ .sizeLimit }}}{{ else }}{}{{ end }}
{{- end -}}

{{- define "fakescan.podSpecCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
