{{/* Names, labels, the rendered configuration, and the feature switches RBAC is built from. */}}

{{- define "regcred-refresher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regcred-refresher.fullname" -}}
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

{{- define "regcred-refresher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regcred-refresher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regcred-refresher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Not app.kubernetes.io/managed-by=regcred-refresher: that label marks the secrets the
refresher owns; chart objects carry Helm's. */}}
{{- define "regcred-refresher.labels" -}}
helm.sh/chart: {{ include "regcred-refresher.chart" . }}
{{ include "regcred-refresher.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The `helm test` pod's labels: never the selector labels, so that no NetworkPolicy,
Service, PodDisruptionBudget or ReplicaSet of the release selects it (the chart's
NetworkPolicy would cut its egress to the metrics port; a ReplicaSet would adopt it). */}}
{{- define "regcred-refresher.testLabels" -}}
helm.sh/chart: {{ include "regcred-refresher.chart" . }}
app.kubernetes.io/name: {{ include "regcred-refresher.name" . | trunc 58 | trimSuffix "-" }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "regcred-refresher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "regcred-refresher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "regcred-refresher.image" -}}
{{- include "regcred-refresher.imageRef" (dict "root" . "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{/* imageRef (dict "root" $ "image" {repository, tag, digest} "defaultTag" T): a digest wins over
the tag. global.imageRegistry (a mirror) replaces the registry of the repository: its first
path part when that names a host (has a dot or a port, or is localhost), else it is prefixed. */}}
{{- define "regcred-refresher.imageRef" -}}
{{- $img := .image }}
{{- $repo := $img.repository }}
{{- with (.root.Values.global | default dict).imageRegistry }}
{{- $parts := splitn "/" 2 $repo }}
{{- if and $parts._1 (or (contains "." $parts._0) (contains ":" $parts._0) (eq $parts._0 "localhost")) }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $parts._1 }}
{{- else }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}
{{- end }}
{{- end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .defaultTag $img.tag) }}
{{- end }}
{{- end }}

{{- define "regcred-refresher.daemon" -}}
{{- if eq .Values.mode "deployment" }}true{{ end }}
{{- end }}

{{- define "regcred-refresher.leaderElection" -}}
{{- if and (include "regcred-refresher.daemon" .) (or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1)) }}true{{ end }}
{{- end }}

{{- define "regcred-refresher.prune" -}}
{{- if and (include "regcred-refresher.daemon" .) .Values.prune }}true{{ end }}
{{- end }}

{{- define "regcred-refresher.events" -}}
{{- if .Values.events }}true{{ end }}
{{- end }}

{{/* The admin listener: `[::]` is dual-stack on Linux (IPv6 and, through v4-mapped addresses,
IPv4), so the kubelet's probes reach it on IPv4, IPv6 and dual-stack clusters alike. */}}
{{- define "regcred-refresher.adminAddr" -}}
{{- $a := .Values.admin.address }}
{{- if contains ":" $a }}{{ $a = printf "[%s]" (trimAll "[]" $a) }}{{ end }}
{{- printf "%s:%d" $a (int .Values.admin.port) }}
{{- end }}

{{- define "regcred-refresher.leaseName" -}}
{{- default (include "regcred-refresher.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "regcred-refresher.secretsDir" -}}/etc/regcred/secrets{{- end }}

{{/* The managed secret names: the only names RBAC grants get/create/patch on. */}}
{{- define "regcred-refresher.secretNames" -}}
{{- $names := list }}
{{- range $i, $s := .Values.config.secrets }}
{{- $names = append $names (required (printf "config.secrets[%d].name is required" $i) $s.name) }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* expandBraces LIST -> JSON list: shell-style brace groups expanded as the binary expands them
(`team-{a,b}` is team-a and team-b; several groups multiply; nesting is refused there too). */}}
{{- define "regcred-refresher.expandBraces" -}}
{{- $todo := . }}
{{- $done := list }}
{{- range until 16 }}
{{- $next := list }}
{{- range $p := $todo }}
{{- if regexMatch "\\{[^}]*\\{" $p }}
{{- fail (printf "config.namespaces: brace groups cannot nest, found %q; list the patterns separately" $p) }}
{{- end }}
{{- $group := regexFind "\\{[^{}]*\\}" $p }}
{{- if $group }}
{{- $around := regexSplit "\\{[^{}]*\\}" $p 2 }}
{{- range $alt := splitList "," (trimSuffix "}" (trimPrefix "{" $group)) }}
{{- $next = append $next (printf "%s%s%s" (index $around 0) $alt (index $around 1)) }}
{{- end }}
{{- else if or (contains "{" $p) (contains "}" $p) }}
{{- fail (printf "config.namespaces: unbalanced brace in %q; use one level of braces (team-{a,b}) or list the names separately" $p) }}
{{- else }}
{{- $done = append $done $p }}
{{- end }}
{{- end }}
{{- $todo = $next }}
{{- end }}
{{- if $todo }}
{{- fail "config.namespaces: too many brace groups in one pattern; list the names separately" }}
{{- end }}
{{- toJson $done }}
{{- end }}

{{/* globRegex GLOB -> an anchored regular expression matching what the binary's glob matches
(`*`, `?`, `[abc]`, `[!abc]`). */}}
{{- define "regcred-refresher.globRegex" -}}
^{{ regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" "." | replace "\\[!" "[^" | replace "\\[" "[" | replace "\\]" "]" }}$
{{- end }}

{{/* Target namespaces of namespaced mode: literal names (braces expanded), no selector, minus
every name config.namespaces.exclude matches (names, globs and braces, as the binary reads
it): a Role is rendered only where the refresher may write. */}}
{{- define "regcred-refresher.targetNamespaces" -}}
{{- $ns := .Values.config.namespaces }}
{{- if $ns.selector }}
{{- fail "rbac.namespaced: true cannot be combined with config.namespaces.selector (a selector needs to list namespaces cluster-wide)" }}
{{- end }}
{{- $excluded := list }}
{{- range include "regcred-refresher.expandBraces" ($ns.exclude | default list) | fromJsonArray }}
{{- $excluded = append $excluded (include "regcred-refresher.globRegex" .) }}
{{- end }}
{{- $names := list }}
{{- range $name := include "regcred-refresher.expandBraces" ($ns.include | default list) | fromJsonArray }}
{{- if regexMatch "[*?\\[]" $name }}
{{- fail (printf "rbac.namespaced: true needs literal names in config.namespaces.include, found the glob %q" $name) }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $name) }}
{{- fail (printf "config.namespaces.include: %q is not a namespace name (RFC 1123: up to 63 lowercase letters, digits and '-', starting and ending with a letter or digit)" $name) }}
{{- end }}
{{- $out := false }}
{{- range $excluded }}{{ if regexMatch . $name }}{{ $out = true }}{{ end }}{{ end }}
{{- if not $out }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* secretRef NAME DEFAULT-KEY -> the mounted file path */}}
{{- define "regcred-refresher.refPath" -}}
{{- $ref := index . 0 }}
{{- printf "%s/%s/%s" (include "regcred-refresher.secretsDir" nil) (required "a *SecretRef needs a name" $ref.name) (default (index . 1) $ref.key) }}
{{- end }}

{{/* The configuration file: *SecretRef fields become *File paths under the mount. */}}
{{- define "regcred-refresher.configYaml" -}}
{{- $c := .Values.config }}
{{- if not $c.secrets }}
{{- fail "config.secrets is empty: name at least one image pull secret to write (see docs/install.md)" }}
{{- end }}
{{- if not $c.registries }}
{{- fail "config.registries is empty: configure at least one registry (ecr, ecrPublic, google, static or acr)" }}
{{- end }}
{{- $regs := list }}
{{- range $r := $c.registries }}
{{- $out := omit $r "static" "google" "acr" }}
{{- with $r.static }}
{{- $s := omit . "usernameSecretRef" "passwordSecretRef" "dockerConfigJsonSecretRef" }}
{{- with .usernameSecretRef }}{{ $_ := set $s "usernameFile" (include "regcred-refresher.refPath" (list . "username")) }}{{ end }}
{{- with .passwordSecretRef }}{{ $_ := set $s "passwordFile" (include "regcred-refresher.refPath" (list . "password")) }}{{ end }}
{{- with .dockerConfigJsonSecretRef }}{{ $_ := set $s "dockerConfigJsonFile" (include "regcred-refresher.refPath" (list . ".dockerconfigjson")) }}{{ end }}
{{- $_ := set $out "static" $s }}
{{- end }}
{{- with $r.google }}
{{- $g := omit . "keySecretRef" }}
{{- with .keySecretRef }}{{ $_ := set $g "keyFile" (include "regcred-refresher.refPath" (list . "key.json")) }}{{ end }}
{{- $_ := set $out "google" $g }}
{{- end }}
{{- with $r.acr }}
{{- $a := omit . "clientSecretRef" }}
{{- with .clientSecretRef }}{{ $_ := set $a "clientSecretFile" (include "regcred-refresher.refPath" (list . "client-secret")) }}{{ end }}
{{- $_ := set $out "acr" $a }}
{{- end }}
{{- $regs = append $regs $out }}
{{- end }}
{{- $nsOut := dict "include" $c.namespaces.include "exclude" $c.namespaces.exclude }}
{{- with $c.namespaces.selector }}{{ $_ := set $nsOut "selector" . }}{{ end }}
{{- $cfg := dict "registries" $regs "secrets" $c.secrets "namespaces" $nsOut }}
{{- with $c.serviceAccounts }}{{ $_ := set $cfg "serviceAccounts" . }}{{ end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Names of the existing Secrets that hold credentials, each mounted once. */}}
{{- define "regcred-refresher.credentialSecrets" -}}
{{- $names := list }}
{{- range $r := .Values.config.registries }}
{{- with $r.static }}
{{- range $k := list "usernameSecretRef" "passwordSecretRef" "dockerConfigJsonSecretRef" }}
{{- with (get $r.static $k) }}{{ $names = append $names .name }}{{ end }}
{{- end }}
{{- end }}
{{- with $r.google }}{{ with .keySecretRef }}{{ $names = append $names .name }}{{ end }}{{ end }}
{{- with $r.acr }}{{ with .clientSecretRef }}{{ $names = append $names .name }}{{ end }}{{ end }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/* The refresher container; argument: dict "root" $ "once" bool. */}}
{{- define "regcred-refresher.container" -}}
{{- $ := .root }}
{{- $v := $.Values -}}
- name: regcred-refresher
  image: {{ include "regcred-refresher.image" $ }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- /* The chart's settings travel as the flags' environment variables, never as
  arguments: clap takes a flag given on the command line over its variable, so `extraArgs` can
  override any of them (a flag given twice would be refused). */}}
  {{- with $v.extraArgs }}
  args:
    {{- range . }}
    - {{ . | quote }}
    {{- end }}
  {{- end }}
  env:
    - name: REGCRED_CONFIG
      value: /etc/regcred/config/config.yaml
    - name: REGCRED_LOG_FORMAT
      value: {{ $v.logFormat | quote }}
    - name: REGCRED_LOG
      value: {{ $v.logLevel | quote }}
    - name: REGCRED_INSTANCE
      value: {{ $.Release.Name | quote }}
    - name: REGCRED_EVENTS
      value: {{ $v.events | quote }}
    {{- if .once }}
    - name: REGCRED_ONCE
      value: "true"
    - name: REGCRED_FAIL_ON
      value: {{ $v.failOn | quote }}
    {{- else }}
    - name: REGCRED_SCHEDULE
      value: {{ $v.schedule | quote }}
    - name: REGCRED_ADMIN_ADDR
      value: {{ include "regcred-refresher.adminAddr" $ | quote }}
    {{- if include "regcred-refresher.leaderElection" $ }}
    - name: REGCRED_LEADER_ELECTION
      value: "true"
    - name: REGCRED_LEASE_NAME
      value: {{ include "regcred-refresher.leaseName" $ | quote }}
    - name: REGCRED_LEASE_NAMESPACE
      value: {{ $.Release.Namespace | quote }}
    - name: REGCRED_LEASE_DURATION
      value: {{ $v.leaderElection.leaseDuration | quote }}
    {{- end }}
    {{- if include "regcred-refresher.prune" $ }}
    - name: REGCRED_PRUNE
      value: "true"
    {{- with $v.rbac.pruneSecretNames }}
    - name: REGCRED_PRUNE_SECRET_NAMES
      value: {{ join "," (uniq .) | quote }}
    {{- end }}
    {{- end }}
    {{- end }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- with include "regcred-refresher.cloudEnv" $ | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if not .once }}
  ports:
    - name: admin
      containerPort: {{ $v.admin.port }}
      protocol: TCP
  {{- with $v.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/regcred/config
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- range (include "regcred-refresher.credentialSecrets" $ | fromJsonArray) }}
    - name: cred-{{ . | sha256sum | trunc 10 }}
      mountPath: {{ include "regcred-refresher.secretsDir" $ }}/{{ . }}
      readOnly: true
    {{- end }}
    {{- with include "regcred-refresher.cloudVolumeMounts" $ | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* Pod spec shared by the Deployment, the CronJob and the hook Job; argument as above. */}}
{{- define "regcred-refresher.podSpec" -}}
{{- $ := .root }}
{{- $v := $.Values -}}
serviceAccountName: {{ include "regcred-refresher.serviceAccountName" $ }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
{{- if .once }}
restartPolicy: Never
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
containers:
  {{- include "regcred-refresher.container" . | nindent 2 }}
volumes:
  - name: config
    configMap:
      name: {{ include "regcred-refresher.fullname" $ }}
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
  {{- range (include "regcred-refresher.credentialSecrets" $ | fromJsonArray) }}
  - name: cred-{{ . | sha256sum | trunc 10 }}
    secret:
      secretName: {{ . }}
      defaultMode: 0440
  {{- end }}
  {{- with include "regcred-refresher.cloudVolumes" $ | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $v.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "regcred-refresher.podMetadata" -}}
{{- $ := . -}}
annotations:
  checksum/config: {{ include "regcred-refresher.configYaml" $ | sha256sum }}
  {{- with $.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
labels:
  {{- include "regcred-refresher.selectorLabels" $ | nindent 2 }}
  {{- if eq (include "regcred-refresher.azureWorkloadIdentity" $) "webhook" }}
  azure.workload.identity/use: "true"
  {{- end }}
  {{- with merge (deepCopy ($.Values.podLabels | default dict)) ($.Values.commonLabels | default dict) }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Exit codes of a `--once` run (README: Exit codes): 2 is bad configuration or flags, which
no retry can fix: fail the Job at once. 1 (a source or a target failed) counts against
backoffLimit and is retried. An evicted or preempted pod is not the run's failure. */}}
{{- define "regcred-refresher.podFailurePolicy" -}}
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        containerName: regcred-refresher
        operator: In
        values: [2]
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
{{- end }}
