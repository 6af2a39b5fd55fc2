{{/*
Names, labels and the few derived values every template shares.
*/}}

{{- define "forgetmenot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "forgetmenot.fullname" -}}
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

{{- define "forgetmenot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "forgetmenot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forgetmenot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "forgetmenot.labels" -}}
helm.sh/chart: {{ include "forgetmenot.chart" . }}
{{ include "forgetmenot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: forgetmenot
{{- end }}

{{- define "forgetmenot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "forgetmenot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: repository@digest, or repository:tag where the tag defaults to <appVersion>-<flavor>. */}}
{{- define "forgetmenot.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default (printf "%s-%s" .Chart.AppVersion $img.flavor) $img.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap that holds forgetmenot.yaml: the user's, or the one this chart renders. */}}
{{- define "forgetmenot.configMapName" -}}
{{- default (printf "%s-policy" (include "forgetmenot.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/* The Secret with the API's bearer tokens, or "" when serve runs without a token file. */}}
{{- define "forgetmenot.tokenSecretName" -}}
{{- $web := .Values.web }}
{{- if $web.tokenSecret.name }}
{{- $web.tokenSecret.name }}
{{- else if not (or $web.configSecret.name $web.allowUnauthenticated) }}
{{- printf "%s-api-tokens" (include "forgetmenot.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when serve will ask for credentials. */}}
{{- define "forgetmenot.authRequired" -}}
{{- if or (include "forgetmenot.tokenSecretName" .) .Values.web.configSecret.name }}true{{- end }}
{{- end }}

{{/* The monitor's address inside the cluster. */}}
{{- define "forgetmenot.serviceUrl" -}}
{{- printf "%s://%s.%s.svc:%d" (lower .Values.web.scheme) (include "forgetmenot.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* The monitor's address as on-call's browser reaches it: what every alert's monitor_url and
the dashboards' links point at. The service's in-cluster address until an ingress or route gives
one from outside. */}}
{{- define "forgetmenot.monitorUrl" -}}
{{- include "forgetmenot.serviceUrl" . }}
{{- end }}

{{/*
The policy file as the monitor reads it: the user's `policy` with the database, its password,
the spool and the suites filled in from the chart's values.
*/}}
{{- define "forgetmenot.policy" -}}
{{- $policy := deepCopy (.Values.policy | default dict) }}
{{- $db := .Values.database }}
{{- if eq $db.kind "postgresql" }}
{{- $_ := set $policy "database" $db.postgresql.url }}
{{- if $db.postgresql.passwordSecret.name }}
{{- $_ := set $policy "database_password" (dict "env" $db.postgresql.passwordEnv) }}
{{- end }}
{{- else }}
{{- $_ := set $policy "database" (printf "sqlite:///%s" $db.sqlite.path) }}
{{- end }}
{{- if not (hasKey $policy "spool") }}
{{- $_ := set $policy "spool" .Values.spool.path }}
{{- end }}
{{- if not (hasKey $policy "suites") }}
{{- $suites := list }}
{{- range .Values.suites.fromImage.names }}
{{- $suites = append $suites (printf "%s/%s" $.Values.suites.fromImage.path .) }}
{{- end }}
{{- range .Values.suites.configMaps }}
{{- $suites = append $suites (printf "probes/%s" .name) }}
{{- end }}
{{- $_ := set $policy "suites" $suites }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/*
Refusals that need more than one value at a time. Each names the keys to change.
*/}}
{{- define "forgetmenot.validate" -}}
{{- $v := .Values }}
{{- if and (gt (int $v.replicaCount) 1) (ne $v.database.kind "postgresql") }}
{{- fail (printf "replicaCount=%d needs database.kind=postgresql: SQLite is one file on one volume, and replicas coordinate through PostgreSQL row claims" (int $v.replicaCount)) }}
{{- end }}
{{- if and (gt (int $v.replicaCount) 1) $v.persistence.enabled (not $v.persistence.existingClaim) (not (has "ReadWriteMany" $v.persistence.accessModes)) }}
{{- fail (printf "replicaCount=%d with persistence.enabled=true needs persistence.accessModes [ReadWriteMany] (or persistence.existingClaim): one ReadWriteOnce claim cannot be mounted by pods on several nodes; set persistence.enabled=false to give each pod an emptyDir cache" (int $v.replicaCount)) }}
{{- end }}
{{- if and (eq $v.database.kind "postgresql") (not $v.database.postgresql.url) }}
{{- fail "database.kind=postgresql needs database.postgresql.url (postgresql+psycopg://USER@HOST:5432/DB, without a password: give it in database.postgresql.passwordSecret)" }}
{{- end }}
{{- if and (not $v.existingConfigMap) (not $v.policy) }}
{{- fail "policy is empty: give the monitor's policy (models, suites, rules) under policy, or name a ConfigMap with a forgetmenot.yaml key in existingConfigMap" }}
{{- end }}
{{- range $key := list "database" "database_password" }}
{{- if and (not $v.existingConfigMap) (hasKey ($v.policy | default dict) $key) }}
{{- fail (printf "policy.%s is set by the chart from database.*: remove it from policy" $key) }}
{{- end }}
{{- end }}
{{- if and (eq $v.image.flavor "slim") (not $v.existingConfigMap) }}
{{- range $name, $model := (($v.policy | default dict).models | default dict) }}
{{- $kind := (($model | default dict).backend | default dict).kind | default "transformers" }}
{{- if ne $kind "openai" }}
{{- fail (printf "image.flavor=slim has no torch, but policy.models.%s uses backend %s: use image.flavor=model, or backend.kind=openai for a served model" $name $kind) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.serviceMonitor.enabled (include "forgetmenot.authRequired" .) (not $v.web.openMetrics) (not (or $v.serviceMonitor.authorization.secretName $v.serviceMonitor.basicAuth.secretName (include "forgetmenot.tokenSecretName" .))) }}
{{- fail "serviceMonitor.enabled with credentials on /metrics: set serviceMonitor.authorization.secretName or serviceMonitor.basicAuth.secretName (or web.openMetrics=true), else every scrape gets 401" }}
{{- end }}
{{- if and $v.gate.argo.enabled (not (include "forgetmenot.authRequired" .)) }}
{{- fail "gate.argo.enabled needs credentials on the API (web.tokenSecret): the AnalysisTemplate sends a bearer token" }}
{{- end }}
{{- if and $v.gate.argo.enabled (le (int $v.gate.argo.timeoutSeconds) (int $v.gate.argo.wait)) }}
{{- fail (printf "gate.argo.timeoutSeconds (%d) must exceed gate.argo.wait (%d): the gate holds the request up to wait seconds" (int $v.gate.argo.timeoutSeconds) (int $v.gate.argo.wait)) }}
{{- end }}
{{- $np := $v.networkPolicy }}
{{- if and $np.enabled (eq $v.database.kind "postgresql") (not (or $np.egress.database $np.egress.extra)) }}
{{- fail "networkPolicy.enabled with database.kind=postgresql: list the database in networkPolicy.egress.database, else the monitor cannot reach it" }}
{{- end }}
{{- if and $np.enabled $v.rbac.deployments (not (or $np.egress.kubernetesApi $np.egress.extra)) }}
{{- fail "networkPolicy.enabled with rbac.deployments: list the Kubernetes API in networkPolicy.egress.kubernetesApi, else the kubernetes deployer cannot patch" }}
{{- end }}
{{- include "forgetmenot.validateRay" . }}
{{- end }}

{{/*
NetworkPolicy rules from entries {cidr, except, namespaceSelector, podSelector, ports}:
call with (dict "entries" LIST "direction" "to"|"from").
*/}}
{{- define "forgetmenot.netpolRules" -}}
{{- $rules := list }}
{{- range .entries }}
{{- $peer := dict }}
{{- if .cidr }}
{{- $block := dict "cidr" .cidr }}
{{- if .except }}{{ $_ := set $block "except" .except }}{{ end }}
{{- $_ := set $peer "ipBlock" $block }}
{{- else }}
{{- if .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" .namespaceSelector }}{{ end }}
{{- if .podSelector }}{{ $_ := set $peer "podSelector" .podSelector }}{{ end }}
{{- end }}
{{- $rule := dict }}
{{- if $peer }}{{ $_ := set $rule $.direction (list $peer) }}{{ end }}
{{- if .ports }}{{ $_ := set $rule "ports" .ports }}{{ end }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- if $rules }}{{ toYaml $rules }}{{ end }}
{{- end }}
