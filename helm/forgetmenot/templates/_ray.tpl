{{/*
Scale-out on Ray: names, the monitor's RAY_ADDRESS, the Ray pods' template, and the refusals.
*/}}

{{/* The RayCluster's name. KubeRay allows 53 characters and names its head Service <name>-head-svc. */}}
{{- define "forgetmenot.rayClusterName" -}}
{{- printf "%s-ray" (include "forgetmenot.fullname" . | trunc 49 | trimSuffix "-") }}
{{- end }}

{{/* The Ray Client address the monitor connects to, or "" when it uses no Ray cluster. */}}
{{- define "forgetmenot.rayAddress" -}}
{{- if .Values.ray.address }}
{{- .Values.ray.address }}
{{- else if .Values.ray.enabled }}
{{- printf "ray://%s-head-svc.%s.svc:10001" (include "forgetmenot.rayClusterName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The Ray pods' image: ray.image, each part defaulting to the monitor's; global.imageRegistry
over both registries. */}}
{{- define "forgetmenot.rayImage" -}}
{{- $img := .Values.image }}
{{- $ray := .Values.ray.image }}
{{- $registry := default (default $img.registry $ray.registry) (.Values.global | default dict).imageRegistry | trimSuffix "/" }}
{{- $repository := printf "%s/%s" $registry (default $img.repository $ray.repository) }}
{{- $digest := default $img.digest $ray.digest }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (default (default (printf "%s-%s" .Chart.AppVersion $img.flavor) $img.tag) $ray.tag) }}
{{- end }}
{{- end }}

{{/* Labels of a Ray pod. Never app.kubernetes.io/name: the monitor's Service selects on it. */}}
{{- define "forgetmenot.rayPodLabels" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: forgetmenot
app.kubernetes.io/component: ray-{{ .kind }}
{{- with .root.Values.ray.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A number of bytes as `ray start` wants it: a plain integer, as a string. */}}
{{- define "forgetmenot.rayBytes" -}}
{{- printf "%d" (int64 .) }}
{{- end }}

{{/*
The pod template of a Ray node: call with (dict "root" $ "kind" "head"|"worker" "group" VALUES).
The monitor's image, security context and volume at /var/lib/forgetmenot, so a path the monitor
passes names the same file on every worker; /tmp (Ray's session directory) is an emptyDir, and
KubeRay adds the memory-backed /dev/shm for the object store.
*/}}
{{- define "forgetmenot.rayPodTemplate" -}}
{{- $v := .root.Values }}
{{- $ray := $v.ray }}
{{- $home := "/var/lib/forgetmenot" }}
{{- $resources := deepCopy (.group.resources | default dict) }}
{{- if and (eq .kind "worker") (gt (int .group.gpus) 0) }}
{{- range $side := list "requests" "limits" }}
{{- $_ := set $resources $side (merge (dict "nvidia.com/gpu" (int $.group.gpus)) (get $resources $side | default dict)) }}
{{- end }}
{{- end }}
{{- $probe := dict "httpGet" (dict "path" "/api/local_raylet_healthz" "port" 52365) "periodSeconds" 5 "timeoutSeconds" (ternary 5 2 (eq .kind "head")) -}}
metadata:
  labels:
    {{- include "forgetmenot.rayPodLabels" (dict "root" .root "kind" .kind) | nindent 4 }}
  {{- with $ray.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # Only the autoscaler (in the head pod, with ray.autoscaling) talks to the API server.
  automountServiceAccountToken: {{ and (eq .kind "head") $ray.autoscaling.enabled }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- if eq .kind "worker" }}
  {{- with .group.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- end }}
  containers:
    - name: ray-{{ .kind }}
      image: {{ include "forgetmenot.rayImage" .root | quote }}
      imagePullPolicy: {{ default $v.image.pullPolicy $ray.image.pullPolicy }}
      env:
        - name: RAY_USAGE_STATS_ENABLED
          value: "0"
        - name: FORGETMENOT_HOME
          value: {{ $home }}
        - name: HF_HOME
          value: {{ $home }}/huggingface
        - name: TMPDIR
          value: /tmp
        - name: PYTHONDONTWRITEBYTECODE
          value: "1"
        {{- with $ray.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if eq .kind "head" }}
      ports:
        - {name: gcs-server, containerPort: 6379, protocol: TCP}
        - {name: client, containerPort: 10001, protocol: TCP}
        {{- if .group.dashboard }}
        - {name: dashboard, containerPort: 8265, protocol: TCP}
        {{- end }}
        - {name: metrics, containerPort: 8080, protocol: TCP}
      {{- end }}
      # The dashboard agent's health check over HTTP: the image has no wget for KubeRay's exec probes.
      readinessProbe:
        {{- toYaml (merge (dict "initialDelaySeconds" 10 "failureThreshold" 10) $probe) | nindent 8 }}
      livenessProbe:
        {{- toYaml (merge (dict "initialDelaySeconds" 30 "failureThreshold" 120) $probe) | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      resources:
        {{- toYaml $resources | nindent 8 }}
      volumeMounts:
        - name: home
          mountPath: {{ $home }}
        - name: tmp
          mountPath: /tmp
        {{- with $ray.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: home
      persistentVolumeClaim:
        claimName: {{ default (include "forgetmenot.fullname" .root) $v.persistence.existingClaim }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $ray.tmp.sizeLimit }}
    {{- with $ray.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
Refusals about Ray that need more than one value at a time. Each names the keys to change.
*/}}
{{- define "forgetmenot.validateRay" -}}
{{- $v := .Values }}
{{- $ray := $v.ray }}
{{- $p := $v.persistence }}
{{- if and $ray.enabled (not $p.enabled) }}
{{- fail "ray.enabled needs persistence.enabled: the Ray workers read the weights and write the retrained versions at /var/lib/forgetmenot, the monitor's volume, and an emptyDir cannot be shared" }}
{{- end }}
{{- if and $ray.enabled (not $p.existingClaim) (not (has "ReadWriteMany" $p.accessModes)) }}
{{- fail "ray.enabled needs persistence.accessModes [ReadWriteMany] (or a ReadWriteMany persistence.existingClaim): the monitor and the Ray workers on other nodes mount the same volume at /var/lib/forgetmenot" }}
{{- end }}
{{- if and $ray.enabled (eq $v.image.flavor "slim") (not (or $ray.image.tag $ray.image.digest)) }}
{{- fail "ray.enabled with image.flavor=slim: the Ray workers run in-process probes and retraining, which need torch; use image.flavor=model, or give ray.image.tag (or ray.image.digest) of a model image" }}
{{- end }}
{{- $w := $ray.worker }}
{{- if and $ray.enabled (not (and (le (int $w.minReplicas) (int $w.replicas)) (le (int $w.replicas) (int $w.maxReplicas)))) }}
{{- fail (printf "ray.worker needs minReplicas (%d) <= replicas (%d) <= maxReplicas (%d)" (int $w.minReplicas) (int $w.replicas) (int $w.maxReplicas)) }}
{{- end }}
{{- $executor := (($v.policy | default dict).executor | default dict) }}
{{- if and (not $v.existingConfigMap) (include "forgetmenot.rayAddress" .) }}
{{- if ne ($executor.kind | default "local") "ray" }}
{{- fail "ray.enabled or ray.address gives the monitor a Ray cluster, but policy.executor.kind is not ray: set policy.executor.kind: ray (or leave ray.* off)" }}
{{- end }}
{{- if $executor.address }}
{{- fail "policy.executor.address is set by the chart (env RAY_ADDRESS, from ray.enabled or ray.address): remove it from policy" }}
{{- end }}
{{- end }}
{{- if and (not $v.existingConfigMap) (eq ($executor.kind | default "local") "ray") (not $executor.address) (not (include "forgetmenot.rayAddress" .)) }}
{{- fail "policy.executor.kind=ray needs a Ray cluster: set ray.enabled=true (a KubeRay RayCluster) or ray.address (an existing one); without one, Ray would start inside the monitor's pod" }}
{{- end }}
{{- $np := $v.networkPolicy }}
{{- if and $np.enabled $ray.address (not (or $np.egress.ray $np.egress.extra)) }}
{{- fail "networkPolicy.enabled with ray.address: list the Ray cluster in networkPolicy.egress.ray (port 10001), else the monitor cannot reach it" }}
{{- end }}
{{- if and $np.enabled $ray.enabled $ray.autoscaling.enabled (not $np.egress.kubernetesApi) }}
{{- fail "networkPolicy.enabled with ray.autoscaling.enabled: list the Kubernetes API in networkPolicy.egress.kubernetesApi, else the Ray autoscaler cannot scale workers" }}
{{- end }}
{{- end }}
