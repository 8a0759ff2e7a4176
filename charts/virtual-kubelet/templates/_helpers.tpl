{{/* The chart's name. */}}
{{- define "virtual-kubelet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name (63 characters at most: it names Services and the Node). */}}
{{- define "virtual-kubelet.fullname" -}}
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

{{- define "virtual-kubelet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "virtual-kubelet.labels" -}}
helm.sh/chart: {{ include "virtual-kubelet.chart" . }}
{{ include "virtual-kubelet.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/component: virtual-kubelet
app.kubernetes.io/part-of: vk-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "virtual-kubelet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "virtual-kubelet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "virtual-kubelet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "virtual-kubelet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Node this release registers. */}}
{{- define "virtual-kubelet.nodeName" -}}
{{- default (include "virtual-kubelet.fullname" .) .Values.nodeName }}
{{- end }}

{{- define "virtual-kubelet.configMapName" -}}
{{- printf "%s-provider-config" (include "virtual-kubelet.fullname" .) }}
{{- end }}

{{/* The Secret with the provider credentials, "" when there is none. */}}
{{- define "virtual-kubelet.credentialsSecretName" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if .Values.credentials.env }}
{{- printf "%s-credentials" (include "virtual-kubelet.fullname" .) }}
{{- end }}
{{- end }}

{{/* The kubernetes.io/tls Secret mounted as serving certificate, "" when none is mounted. */}}
{{- define "virtual-kubelet.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" }}
{{- required "tls.existingSecret is required with tls.mode=existingSecret" .Values.tls.existingSecret }}
{{- else if eq .Values.tls.mode "certManager" }}
{{- printf "%s-tls" (include "virtual-kubelet.fullname" .) }}
{{- end }}
{{- end }}

{{- define "virtual-kubelet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The ClusterRole's rules: files/rbac-rules.yaml (what the process needs in every mode), plus
     `delete nodes` with removeNodeOnExit and the CSR rights in the csr TLS mode. */}}
{{- define "virtual-kubelet.clusterRules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYamlArray }}
{{- if not $rules }}
{{- fail "files/rbac-rules.yaml is missing or empty" }}
{{- end }}
{{- range $rules }}
{{- if not (kindIs "map" .) }}
{{- fail (printf "files/rbac-rules.yaml: not a list of rules: %v" .) }}
{{- end }}
{{- end }}
{{- if .Values.removeNodeOnExit }}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "nodes") "verbs" (list "delete")) }}
{{- end }}
{{- if eq .Values.tls.mode "csr" }}
{{- $rules = append $rules (dict "apiGroups" (list "certificates.k8s.io") "resources" (list "certificatesigningrequests") "verbs" (list "create" "get")) }}
{{- if .Values.tls.csr.selfApprove }}
{{- $rules = append $rules (dict "apiGroups" (list "certificates.k8s.io") "resources" (list "certificatesigningrequests/approval") "verbs" (list "update")) }}
{{- $rules = append $rules (dict "apiGroups" (list "certificates.k8s.io") "resources" (list "signers") "resourceNames" (list "kubernetes.io/kubelet-serving") "verbs" (list "approve")) }}
{{- end }}
{{- end }}
{{- toYaml $rules }}
{{- end }}
