{{/*
One rule of files/forgetmenot.rules.yml tuned by defaultRules, as YAML: call with
(dict "rule" RULE "root" $). The file holds the shipped rules (`forgetmenot alerts` with no
config): their selector is job="forgetmenot", every aggregation starts with `cluster, namespace`,
and monitor_url is under http://forgetmenot:9464. Each is replaced here as a string of the parsed
rule, never through tpl, so the rules' own Prometheus templates ({{ $labels.model }}) stay as
they are. The rule's own labels and annotations win over the additional ones of the same name.
*/}}
{{- define "forgetmenot.tunedRule" -}}
{{- $rule := deepCopy .rule }}
{{- $tuning := .root.Values.defaultRules }}
{{- $custom := get ($tuning.customRules | default dict) $rule.alert | default dict }}
{{- $_ := set $rule "expr" (include "forgetmenot.ruleExpr" (dict "expr" $rule.expr "root" .root)) }}
{{- with $custom.for }}
{{- $_ := set $rule "for" . }}
{{- end }}
{{- $severity := dict "severity" ($custom.severity | default $rule.labels.severity) }}
{{- $_ := set $rule "labels" (merge $severity $rule.labels ($tuning.additionalRuleLabels | default dict)) }}
{{- $annotations := include "forgetmenot.ruleLinks" (dict "annotations" $rule.annotations "root" .root) | fromYaml }}
{{- $_ := set $rule "annotations" (merge $annotations ($tuning.additionalRuleAnnotations | default dict)) }}
{{- toYaml $rule }}
{{- end }}

{{/* The rule's PromQL with the values' selector and extra aggregation labels. */}}
{{- define "forgetmenot.ruleExpr" -}}
{{- $tuning := .root.Values.defaultRules }}
{{- $selector := $tuning.selector | default (printf "job=%q" .root.Values.serviceMonitor.jobName) }}
{{- $expr := replace "job=\"forgetmenot\"" $selector .expr }}
{{- with $tuning.additionalAggregationLabels }}
{{- $expr = replace "(cluster, namespace" (printf "(cluster, namespace, %s" (join ", " .)) $expr }}
{{- end }}
{{- $expr }}
{{- end }}

{{/* The annotations with the monitor's address and, when given, the runbooks' absolute base. */}}
{{- define "forgetmenot.ruleLinks" -}}
{{- $annotations := deepCopy .annotations }}
{{- with .root.Values.defaultRules.runbookUrl }}
{{- $_ := set $annotations "runbook_url" (printf "%s/%s" (trimSuffix "/" .) (base $annotations.runbook_url)) }}
{{- end }}
{{- $page := regexReplaceAll "^https?://[^/]+" $annotations.monitor_url "" }}
{{- $_ := set $annotations "monitor_url" (printf "%s%s" (include "forgetmenot.monitorUrl" .root) $page) }}
{{- toYaml $annotations }}
{{- end }}
