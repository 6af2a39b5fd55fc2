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

{{/* The registry every image comes from: global.imageRegistry over image.registry. */}}
{{- define "forgetmenot.imageRegistry" -}}
{{- default .Values.image.registry (.Values.global | default dict).imageRegistry | trimSuffix "/" }}
{{- end }}

{{/* The image: registry/repository@digest, or registry/repository:tag where the tag defaults to
<appVersion>-<flavor>. */}}
{{- define "forgetmenot.image" -}}
{{- $img := .Values.image }}
{{- $repository := printf "%s/%s" (include "forgetmenot.imageRegistry" .) $img.repository }}
{{- if $img.digest }}
{{- printf "%s@%s" $repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default (printf "%s-%s" .Chart.AppVersion $img.flavor) $img.tag) }}
{{- end }}
{{- end }}

{{/* The monitor's resources: `resources` when given, else the measured sizing of its image's
flavor (docs/kubernetes.md#memory). */}}
{{- define "forgetmenot.resources" -}}
{{- toYaml (.Values.resources | default (get .Values.resourcesByFlavor .Values.image.flavor)) }}
{{- end }}

{{/* The ConfigMap that holds forgetmenot.yaml: the user's, or the one this chart renders. */}}
{{- define "forgetmenot.configMapName" -}}
{{- default (printf "%s-policy" (include "forgetmenot.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/* The Secret with the API's bearer tokens, or "" when serve runs without a token file. */}}
{{- define "forgetmenot.tokenSecretName" -}}
{{- $web := .Values.web }}
{{- if $web.apiTokens.existingSecret.name }}
{{- $web.apiTokens.existingSecret.name }}
{{- else if not (or $web.config.existingSecret.name $web.allowUnauthenticated) }}
{{- printf "%s-api-tokens" (include "forgetmenot.fullname" .) }}
{{- end }}
{{- end }}

{{/* The key of the API token Secret that holds the tokens. */}}
{{- define "forgetmenot.tokenSecretKey" -}}
{{- .Values.web.apiTokens.existingSecret.key }}
{{- end }}

{{/* "true" when the chart renders the API token Secret itself. */}}
{{- define "forgetmenot.tokenSecretGenerated" -}}
{{- if and (include "forgetmenot.tokenSecretName" .) (not .Values.web.apiTokens.existingSecret.name) .Values.web.apiTokens.generate }}true{{- end }}
{{- end }}

{{/* "true" when serve will ask for credentials. */}}
{{- define "forgetmenot.authRequired" -}}
{{- if or (include "forgetmenot.tokenSecretName" .) .Values.web.config.existingSecret.name }}true{{- end }}
{{- end }}

{{/* The monitor's address inside the cluster. */}}
{{- define "forgetmenot.serviceUrl" -}}
{{- printf "%s://%s.%s.svc:%d" (lower .Values.web.scheme) (include "forgetmenot.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* The monitor's address as on-call's browser reaches it, without a trailing slash: what every
alert's monitor_url, the pushed alerts' links and the dashboards' links start with. externalUrl
when given; else the first host of the ingress (https when its tls lists that host) or of the
route; else the Service's in-cluster address, which only a browser inside the cluster reaches. */}}
{{- define "forgetmenot.monitorUrl" -}}
{{- $ing := .Values.ingress }}
{{- $route := .Values.httpRoute }}
{{- if .Values.externalUrl }}
{{- .Values.externalUrl | trimSuffix "/" }}
{{- else if and $ing.enabled $ing.hosts }}
{{- $host := first $ing.hosts }}
{{- $scheme := "http" }}
{{- range $ing.tls }}
{{- if has $host (.hosts | default list) }}{{ $scheme = "https" }}{{ end }}
{{- end }}
{{- printf "%s://%s" $scheme $host }}
{{- else if and $route.enabled $route.hostnames }}
{{- printf "%s://%s" $route.scheme (first $route.hostnames) }}
{{- else }}
{{- include "forgetmenot.serviceUrl" . }}
{{- end }}
{{- end }}

{{/* Where on-call reads the runbooks, for serve's --runbook-base: the rules' runbook URL
(defaultRules.runbookUrl, kube-prometheus-stack's name), so the pages, the pushed alerts and the
rules link the same runbooks; "" leaves serve's default. */}}
{{- define "forgetmenot.runbookBase" -}}
{{- (.Values.defaultRules | default dict).runbookUrl | default "" }}
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
{{- if $db.postgresql.existingSecret.name }}
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
{{- $alertmanager := (get $policy "policy" | default dict).alertmanager }}
{{- if and (kindIs "map" $alertmanager) (not $alertmanager.link_base) }}
{{- /* The pushed alerts' links are the browser's: without link_base they would carry none. */}}
{{- $_ := set $alertmanager "link_base" (include "forgetmenot.monitorUrl" .) }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/*
Refusals that need more than one value at a time. Each names the keys to change.
*/}}
{{- define "forgetmenot.validate" -}}
{{- $v := .Values }}
{{- include "forgetmenot.validateRenamed" . }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts: the links in alerts and pages are built from the first host" }}
{{- end }}
{{- if and $v.httpRoute.enabled (not (and $v.httpRoute.hostnames $v.httpRoute.parentRefs)) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs (the Gateway it attaches to) and httpRoute.hostnames (the links in alerts and pages are built from the first)" }}
{{- end }}
{{- if and $v.networkPolicy.enabled (or $v.ingress.enabled $v.httpRoute.enabled) (not (or $v.networkPolicy.ingress.controller $v.networkPolicy.ingress.extra)) }}
{{- fail "networkPolicy.enabled with ingress or httpRoute: list the ingress controller's (or the Gateway's) pods in networkPolicy.ingress.controller, else every request through it times out" }}
{{- end }}
{{- if and (include "forgetmenot.tokenSecretName" .) (not $v.web.apiTokens.existingSecret.name) (not $v.web.apiTokens.generate) }}
{{- $name := include "forgetmenot.tokenSecretName" . }}
{{- fail (printf "web.apiTokens.generate=false needs a Secret of yours in web.apiTokens.existingSecret: create it, e.g. kubectl -n %s create secret generic %s --from-literal=%s=\"$(openssl rand -hex 32)\", and set web.apiTokens.existingSecret.name=%s (or web.config.existingSecret for basic auth, or web.allowUnauthenticated=true)" .Release.Namespace $name (include "forgetmenot.tokenSecretKey" .) $name) }}
{{- end }}
{{- if and (gt (int $v.replicaCount) 1) (ne $v.database.kind "postgresql") }}
{{- fail (printf "replicaCount=%d needs database.kind=postgresql: SQLite is one file on one volume, and replicas coordinate through PostgreSQL row claims" (int $v.replicaCount)) }}
{{- end }}
{{- if and (gt (int $v.replicaCount) 1) $v.persistence.enabled (not $v.persistence.existingClaim) (not (has "ReadWriteMany" $v.persistence.accessModes)) }}
{{- fail (printf "replicaCount=%d with persistence.enabled=true needs persistence.accessModes [ReadWriteMany] (or persistence.existingClaim): one ReadWriteOnce claim cannot be mounted by pods on several nodes; set persistence.enabled=false to give each pod an emptyDir cache" (int $v.replicaCount)) }}
{{- end }}
{{- if and (eq $v.database.kind "postgresql") (not $v.database.postgresql.url) }}
{{- fail "database.kind=postgresql needs database.postgresql.url (postgresql+psycopg://USER@HOST:5432/DB, without a password: give it in database.postgresql.existingSecret)" }}
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
{{- $sm := $v.serviceMonitor }}
{{- if and $sm.enabled (include "forgetmenot.authRequired" .) (not $v.web.openMetrics) (not (or $sm.authorization.existingSecret.name $sm.basicAuth.existingSecret.name (include "forgetmenot.tokenSecretName" .))) }}
{{- fail "serviceMonitor.enabled with credentials on /metrics: set serviceMonitor.authorization.existingSecret or serviceMonitor.basicAuth.existingSecret (or web.openMetrics=true), else every scrape gets 401" }}
{{- end }}
{{- if and $v.gate.argo.enabled (not (include "forgetmenot.tokenSecretName" .)) (not $v.gate.argo.token.existingSecret.name) }}
{{- fail "gate.argo.enabled needs a bearer token the API accepts (web.apiTokens, or gate.argo.token.existingSecret): the AnalysisTemplate sends one" }}
{{- end }}
{{- if and $v.gate.argo.enabled (not (include "forgetmenot.authRequired" .)) }}
{{- fail "gate.argo.enabled needs credentials on the API (web.apiTokens): the AnalysisTemplate sends a bearer token" }}
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
{{- if not (include "forgetmenot.imageRegistry" .) }}
{{- fail (printf "image.registry is empty: no forgetmenot image is published, so there is nothing to pull. Build and push one (docs/container.md, \"Pushing to your registry\"): IMAGE=<registry>/%s container/build.sh %s && podman push <registry>/%s:%s-%s; then set image.registry=<registry> (or global.imageRegistry). For an image loaded into the nodes (kind load), image.registry=localhost" $v.image.repository $v.image.flavor $v.image.repository .Chart.AppVersion $v.image.flavor) }}
{{- end }}
{{- end }}

{{/*
Credential keys of earlier versions of this chart, each refused with the key this one reads
(`existingSecret: {name, key}`): ignoring one would run the pod without that credential.
*/}}
{{- define "forgetmenot.validateRenamed" -}}
{{- $renamed := list
  (list "web.tokenSecret" "web.apiTokens.existingSecret")
  (list "web.configSecret" "web.config.existingSecret")
  (list "web.tlsSecret" "web.tls.existingSecret")
  (list "database.postgresql.passwordSecret" "database.postgresql.existingSecret")
  (list "serviceMonitor.authorization.secretName" "serviceMonitor.authorization.existingSecret.name")
  (list "serviceMonitor.authorization.key" "serviceMonitor.authorization.existingSecret.key")
  (list "serviceMonitor.basicAuth.secretName" "serviceMonitor.basicAuth.existingSecret.name")
  (list "serviceMonitor.basicAuth.passwordKey" "serviceMonitor.basicAuth.existingSecret.key")
  (list "gate.argo.tokenSecret" "gate.argo.token.existingSecret") }}
{{- range $renamed }}
{{- $old := index . 0 }}
{{- $node := $.Values }}
{{- $found := true }}
{{- range splitList "." $old }}
{{- if and $found (kindIs "map" $node) (hasKey $node .) }}
{{- $node = index $node . }}
{{- else }}
{{- $found = false }}
{{- end }}
{{- end }}
{{- if $found }}
{{- fail (printf "%s was renamed: use %s (every credential is existingSecret: {name, key})" $old (index . 1)) }}
{{- end }}
{{- end }}
{{- range $list := list "secretEnv" "secretFiles" }}
{{- range $i, $entry := index $.Values $list }}
{{- if or (hasKey $entry "secretName") (hasKey $entry "key") }}
{{- fail (printf "%s[%d].secretName and .key were renamed: use %s[%d].existingSecret: {name, key}" $list $i $list $i) }}
{{- end }}
{{- if not (and $entry.existingSecret $entry.existingSecret.name $entry.existingSecret.key) }}
{{- fail (printf "%s[%d] needs existingSecret: {name, key}, the Secret and the key holding the credential" $list $i) }}
{{- end }}
{{- end }}
{{- end }}
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
