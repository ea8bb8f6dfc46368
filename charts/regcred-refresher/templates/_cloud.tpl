{{/*
Keyless credentials from another cloud: the pod's own projected ServiceAccount token, for AWS
web identity (ECR outside EKS), Google workload identity federation (Artifact Registry
outside GKE) and Azure Workload Identity (ACR from any cluster; on AKS the webhook does it). The kubelet renews projected tokens; the binary reads them again at every fetch.
*/}}

{{- define "regcred-refresher.cloudTokenDir" -}}/var/run/secrets/regcred{{- end }}

{{/* "true" when Google workload identity federation is on. */}}
{{- define "regcred-refresher.googleWif" -}}
{{- with .Values.google.workloadIdentityFederation }}{{ if or .audience .existingConfigMap }}true{{ end }}{{ end }}
{{- end }}

{{/* The projected token's audience: the provider's default allowed audience unless set. */}}
{{- define "regcred-refresher.googleTokenAudience" -}}
{{- $w := .Values.google.workloadIdentityFederation }}
{{- if $w.tokenAudience }}{{ $w.tokenAudience }}
{{- else if $w.audience }}{{ printf "https:%s" $w.audience }}
{{- else }}{{ fail "google.workloadIdentityFederation: set audience (the pool provider) or tokenAudience with existingConfigMap" }}
{{- end }}
{{- end }}

{{/* The credential configuration the chart renders (what create-cred-config writes). */}}
{{- define "regcred-refresher.googleCredentialConfig" -}}
{{- $w := .Values.google.workloadIdentityFederation }}
{{- $cfg := dict "type" "external_account" "audience" $w.audience "subject_token_type" "urn:ietf:params:oauth:token-type:jwt" "token_url" "https://sts.googleapis.com/v1/token" "credential_source" (dict "file" (printf "%s/google/token" (include "regcred-refresher.cloudTokenDir" .)) "format" (dict "type" "text")) }}
{{- with $w.serviceAccountEmail }}
{{- $_ := set $cfg "service_account_impersonation_url" (printf "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/%s:generateAccessToken" .) }}
{{- end }}
{{- toPrettyJson $cfg }}
{{- end }}

{{/* Azure Workload Identity: "webhook", "projected", or empty when off. */}}
{{- define "regcred-refresher.azureWorkloadIdentity" -}}
{{- with .Values.azure.workloadIdentity }}{{ if .clientId }}{{ .mode }}{{ end }}{{ end }}
{{- end }}

{{- define "regcred-refresher.cloudEnv" -}}
{{- $dir := include "regcred-refresher.cloudTokenDir" . }}
{{- with .Values.aws.webIdentity.roleArn }}
- name: AWS_ROLE_ARN
  value: {{ . | quote }}
- name: AWS_WEB_IDENTITY_TOKEN_FILE
  value: {{ $dir }}/aws/token
- name: AWS_ROLE_SESSION_NAME
  value: regcred-refresher
{{- end }}
{{- if include "regcred-refresher.googleWif" . }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ $dir }}/google/credential-config.json
{{- end }}
{{- if eq (include "regcred-refresher.azureWorkloadIdentity" .) "projected" }}
{{- $w := .Values.azure.workloadIdentity }}
- name: AZURE_CLIENT_ID
  value: {{ $w.clientId | quote }}
- name: AZURE_TENANT_ID
  value: {{ required "azure.workloadIdentity.tenantId is needed with mode: projected" $w.tenantId | quote }}
- name: AZURE_FEDERATED_TOKEN_FILE
  value: {{ $dir }}/azure/token
{{- end }}
{{- end }}

{{- define "regcred-refresher.cloudVolumeMounts" -}}
{{- $dir := include "regcred-refresher.cloudTokenDir" . }}
{{- if .Values.aws.webIdentity.roleArn }}
- name: aws-token
  mountPath: {{ $dir }}/aws
  readOnly: true
{{- end }}
{{- if include "regcred-refresher.googleWif" . }}
- name: google-wif
  mountPath: {{ $dir }}/google
  readOnly: true
{{- end }}
{{- if eq (include "regcred-refresher.azureWorkloadIdentity" .) "projected" }}
- name: azure-token
  mountPath: {{ $dir }}/azure
  readOnly: true
{{- end }}
{{- end }}

{{- define "regcred-refresher.cloudVolumes" -}}
{{- with .Values.aws.webIdentity }}{{ if .roleArn }}
- name: aws-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .audience | quote }}
          expirationSeconds: {{ .expirationSeconds }}
          path: token
{{- end }}{{ end }}
{{- if include "regcred-refresher.googleWif" . }}
{{- $w := .Values.google.workloadIdentityFederation }}
- name: google-wif
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ include "regcred-refresher.googleTokenAudience" . | quote }}
          expirationSeconds: {{ $w.expirationSeconds }}
          path: token
      - configMap:
          name: {{ $w.existingConfigMap | default (printf "%s-google-wif" (include "regcred-refresher.fullname" .)) }}
          items:
            - key: {{ ternary $w.existingConfigMapKey "credential-config.json" (not (empty $w.existingConfigMap)) }}
              path: credential-config.json
{{- end }}
{{- if eq (include "regcred-refresher.azureWorkloadIdentity" .) "projected" }}
{{- with .Values.azure.workloadIdentity }}
- name: azure-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .audience | quote }}
          expirationSeconds: {{ .expirationSeconds }}
          path: token
{{- end }}
{{- end }}
{{- end }}
