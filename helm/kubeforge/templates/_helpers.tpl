{{/* Resource name prefix: <release>-kubeforge, or the release alone when it already says kubeforge. */}}
{{- define "kubeforge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubeforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object (part-of is left out: the generated CRDs carry it already). */}}
{{- define "kubeforge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubeforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kubeforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubeforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeforge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Empty when none is created or named: step pods then run as their namespace's default. */}}
{{- define "kubeforge.stepServiceAccountName" -}}
{{- if .Values.stepServiceAccount.create -}}
{{- default (printf "%s-step" (include "kubeforge.fullname" .)) .Values.stepServiceAccount.name -}}
{{- else -}}
{{- .Values.stepServiceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces where step Jobs and Triton pods run and so need the store Secret and step
ServiceAccount: the watched ones, or the release namespace when cluster-wide. */}}
{{- define "kubeforge.workloadNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{- define "kubeforge.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "kubeforge.minioName" -}}
{{- printf "%s-minio" (include "kubeforge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The store Secret: an existing one, or the generated one of the bundled MinIO. */}}
{{- define "kubeforge.storeSecret" -}}
{{- if .Values.store.existingSecret -}}
{{- .Values.store.existingSecret -}}
{{- else if .Values.minio.enabled -}}
{{- printf "%s-store" (include "kubeforge.fullname" .) -}}
{{- else -}}
{{- fail "store.existingSecret is required unless minio.enabled (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)" -}}
{{- end -}}
{{- end -}}

{{- define "kubeforge.storeEndpoint" -}}
{{- if .Values.store.endpoint -}}
{{- .Values.store.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "%s.%s.svc:9000" (include "kubeforge.minioName" .) .Release.Namespace -}}
{{- else -}}
{{- fail "store.endpoint is required unless minio.enabled (host:port or https://host of the S3 API)" -}}
{{- end -}}
{{- end -}}

{{/* The bucket of store.url (s3://bucket/prefix). */}}
{{- define "kubeforge.storeBucket" -}}
{{- .Values.store.url | trimPrefix "s3://" | splitList "/" | first -}}
{{- end -}}

{{/* KUBEFORGE_PEERING_PRIORITY: empty (random per pod) unless set; a fixed one with several
replicas would tie them, and Kopf pauses every operator of a tie. */}}
{{- define "kubeforge.peeringPriority" -}}
{{- if not (kindIs "invalid" .Values.peering.priority) -}}
{{- if gt (int .Values.operator.replicas) 1 -}}
{{- fail "peering.priority must be empty with operator.replicas > 1 (replicas of equal priority all pause; empty gives each pod a random one)" -}}
{{- end -}}
{{- .Values.peering.priority | int64 -}}
{{- end -}}
{{- end -}}
