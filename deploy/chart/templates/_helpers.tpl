{{/* The chart's name (nameOverride). */}}
{{- define "flotilla.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object's name. */}}
{{- define "flotilla.fullname" -}}
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

{{- define "flotilla.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flotilla.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flotilla.labels" -}}
helm.sh/chart: {{ include "flotilla.chart" . }}
{{ include "flotilla.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "flotilla.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flotilla.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Number of shards, as an integer (values from --set arrive as int64 or float64). */}}
{{- define "flotilla.shards" -}}
{{- int .Values.shards }}
{{- end }}

{{/* Whether the chart creates the git Secret from values. */}}
{{- define "flotilla.createGitSecret" -}}
{{- if and (not .Values.gitCredentials.existingSecret) (or .Values.gitCredentials.token .Values.gitCredentials.ssh.privateKey) }}true{{ end }}
{{- end }}

{{/* The git Secret mounted (and read for FLOTILLA_GIT_TOKEN), or empty for none. */}}
{{- define "flotilla.gitSecretName" -}}
{{- if .Values.gitCredentials.existingSecret }}
{{- .Values.gitCredentials.existingSecret }}
{{- else if include "flotilla.createGitSecret" . }}
{{- printf "%s-git" (include "flotilla.fullname" .) }}
{{- end }}
{{- end }}

{{/* The container's arguments: `run` and its flags (tests/deploy.rs checks every flag against
`flotilla run --help`). */}}
{{- define "flotilla.args" -}}
- run
- --repo={{ required "repo.url is required" .Values.repo.url }}
- --branch={{ .Values.repo.branch }}
{{- with .Values.repo.path }}
- --path={{ . }}
{{- end }}
- --interval={{ .Values.interval }}
- --kubeconfig-dir=/etc/flotilla/kubeconfigs
- --cache-dir=/var/cache/flotilla/repos
- --chart-cache-dir=/var/cache/flotilla/charts
{{- with .Values.managementCluster }}
- --management-cluster={{ . }}
{{- end }}
- --http-addr=0.0.0.0:{{ .Values.http.port }}
{{- if .Values.webhook.existingSecret }}
- --webhook-secret-file=/etc/flotilla/webhook/secret
{{- end }}
{{- if .Values.gitCredentials.ssh.enabled }}
- --ssh-key=/etc/flotilla/git/ssh-key
- --known-hosts=/etc/flotilla/git/known_hosts
{{- end }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
{{- with .Values.leaderElection.leaseName }}
- --lease-name={{ . }}
{{- end }}
- --lease-namespace={{ .Release.Namespace }}
- --lease-duration={{ .Values.leaderElection.leaseDuration }}
- --lease-renew-deadline={{ .Values.leaderElection.renewDeadline }}
- --lease-retry-period={{ .Values.leaderElection.retryPeriod }}
{{- end }}
{{- if gt (int (include "flotilla.shards" .)) 1 }}
- --shards={{ include "flotilla.shards" . }}
{{- end }}
- --log-format={{ .Values.logFormat }}
{{- with .Values.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "flotilla.podTemplate" -}}
metadata:
  labels:
    {{- include "flotilla.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "flotilla.serviceAccountName" . }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  affinity:
    {{- if .Values.affinity }}
    {{- toYaml .Values.affinity | nindent 4 }}
    {{- else }}
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "flotilla.selectorLabels" . | nindent 16 }}
    {{- end }}
  containers:
    - name: flotilla
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        {{- include "flotilla.args" . | nindent 8 }}
      env:
        # The Lease holder's identity (and, in a StatefulSet, the shard index: the trailing -<i>).
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- with include "flotilla.gitSecretName" . }}
        # https remotes: from the environment only, never a flag (flags show in `ps`).
        - name: FLOTILLA_GIT_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: token
              optional: true
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.http.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
        failureThreshold: 2
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: cache
          mountPath: /var/cache/flotilla
        - name: tmp
          mountPath: /tmp
        - name: kubeconfigs
          mountPath: /etc/flotilla/kubeconfigs
          readOnly: true
        {{- if include "flotilla.gitSecretName" . }}
        - name: git
          mountPath: /etc/flotilla/git
          readOnly: true
        {{- end }}
        {{- if .Values.webhook.existingSecret }}
        - name: webhook
          mountPath: /etc/flotilla/webhook
          readOnly: true
        {{- end }}
  volumes:
    - name: cache
      emptyDir:
        sizeLimit: {{ .Values.cache.sizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmp.sizeLimit }}
    - name: kubeconfigs
      secret:
        secretName: {{ required "kubeconfigs.existingSecret is required" .Values.kubeconfigs.existingSecret }}
        defaultMode: 0440
    {{- with include "flotilla.gitSecretName" . }}
    - name: git
      secret:
        secretName: {{ . }}
        defaultMode: 0440
        optional: true
    {{- end }}
    {{- if .Values.webhook.existingSecret }}
    - name: webhook
      secret:
        secretName: {{ .Values.webhook.existingSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.webhook.secretKey }}
            path: secret
    {{- end }}
{{- end }}
