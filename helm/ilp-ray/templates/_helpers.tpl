{{- define "ilp.name" -}}{{ .Release.Name }}-ilp{{- end -}}
{{- define "ilp.batchCluster" -}}{{ include "ilp.name" . }}-batch{{- end -}}
{{- define "ilp.esName" -}}{{ include "ilp.name" . }}-es{{- end -}}

{{/* The API token's Secret; installing without a token fails here. */}}
{{- define "ilp.tokenSecret" -}}
{{- if .Values.apiToken.existingSecret -}}{{ .Values.apiToken.existingSecret }}
{{- else -}}
{{- $_ := required "apiToken: set apiToken.existingSecret (a Secret with key `token`) or apiToken.value" .Values.apiToken.value -}}
{{ include "ilp.name" . }}-token
{{- end -}}
{{- end -}}

{{- define "ilp.labels" -}}
app.kubernetes.io/name: ilp-ray
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Pod labels: the instance label every NetworkPolicy selects on, plus the component. */}}
{{- define "ilp.podLabels" -}}
app.kubernetes.io/name: ilp-ray
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository@digest when a digest is known, else repository:tag (exact, never "latest"). */}}
{{- define "ilp.imageRef" -}}
{{- if .digest -}}{{ .repository }}@{{ .digest }}{{- else -}}{{ .repository }}:{{ required "image tag" .tag }}{{- end -}}
{{- end -}}
{{- define "ilp.image" -}}{{ include "ilp.imageRef" .Values.image }}{{- end -}}
{{- define "ilp.gpuImage" -}}{{ include "ilp.imageRef" .Values.gpuImage }}{{- end -}}

{{- define "ilp.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsGroup }}
fsGroup: {{ .Values.security.fsGroup }}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "ilp.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Pod-level settings shared by every pod spec of the chart. */}}
{{- define "ilp.podCommon" -}}
automountServiceAccountToken: false
serviceAccountName: {{ include "ilp.name" . }}
securityContext: {{- include "ilp.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment of the ilp containers. withToken: only the scoring service's pods get the API token. */}}
{{- define "ilp.env" -}}
{{- if .withToken }}
- name: ILP_API_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "ilp.tokenSecret" .ctx }}, key: token}}
{{- end }}
- {name: HF_HUB_OFFLINE, value: "1"}
- {name: TRANSFORMERS_OFFLINE, value: "1"}
- {name: OMP_NUM_THREADS, value: "1"}
- {name: RAY_USAGE_STATS_ENABLED, value: "0"}
- {name: MLFLOW_DISABLE_TELEMETRY, value: "true"}
- {name: TOKENIZERS_PARALLELISM, value: "false"}
- {name: HOME, value: /cache/home}
- {name: XDG_CACHE_HOME, value: /cache}
- {name: ILP_CACHE_DIR, value: /cache/ilp}
{{- with .ctx.Values.mlflow }}{{- if .enabled }}
- name: MLFLOW_TRACKING_URI
  value: http://{{ include "ilp.name" $.ctx }}-mlflow:{{ .service.port }}
{{- if .auth.enabled }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .auth.adminSecret }}, key: username}}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .auth.adminSecret }}, key: password}}
{{- end }}
{{- end }}{{- end }}
{{- $es := .ctx.Values.elasticsearch }}
{{- if eq $es.mode "eck" }}
- name: ILP_ES_USER
  value: elastic
- name: ILP_ES_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "ilp.esName" .ctx }}-es-elastic-user, key: elastic}}
{{- else if eq $es.mode "external" }}
- name: ILP_ES_API_KEY
  valueFrom: {secretKeyRef: {name: {{ required "elasticsearch.external.credentialsSecret is required with mode external" $es.external.credentialsSecret }}, key: api_key, optional: true}}
- name: ILP_ES_USER
  valueFrom: {secretKeyRef: {name: {{ $es.external.credentialsSecret }}, key: user, optional: true}}
- name: ILP_ES_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $es.external.credentialsSecret }}, key: password, optional: true}}
{{- end }}
{{- end -}}

{{/* The index settings the chart puts into every corpus config: tantivy on the runs volume, or the release's Elasticsearch. */}}
{{- define "ilp.indexConfig" -}}
{{- $es := .Values.elasticsearch -}}
{{- if eq $es.mode "eck" -}}
{backend: elasticsearch, location: ilp-corpus, state_dir: {{ .Values.storage.runs.mountPath }}/ingest-state, elasticsearch: {url: "https://{{ include "ilp.esName" . }}-es-http:9200", ca_certs: /etc/ilp/es-ca/ca.crt}}
{{- else if eq $es.mode "external" -}}
{backend: elasticsearch, location: ilp-corpus, state_dir: {{ .Values.storage.runs.mountPath }}/ingest-state, elasticsearch: {url: {{ required "elasticsearch.external.url is required with mode external" $es.external.url | quote }}{{ if $es.external.caSecret }}, ca_certs: /etc/ilp/es-ca/ca.crt{{ end }}}}
{{- else -}}
{backend: tantivy, location: {{ .Values.storage.runs.mountPath }}/corpus-index}
{{- end -}}
{{- end -}}

{{- define "ilp.volumeMounts" -}}
- {name: checkpoints, mountPath: {{ .Values.storage.checkpoints.mountPath }}, readOnly: true}
- {name: runs, mountPath: {{ .Values.storage.runs.mountPath }}}
- {name: data, mountPath: {{ .Values.storage.data.mountPath }}, readOnly: true}
- {name: tmp, mountPath: /tmp}
- {name: cache, mountPath: /cache}
- {name: jobs, mountPath: /etc/ilp/jobs, readOnly: true}
{{- if eq .Values.elasticsearch.mode "eck" }}
- {name: es-ca, mountPath: /etc/ilp/es-ca, readOnly: true}
{{- else if and (eq .Values.elasticsearch.mode "external") .Values.elasticsearch.external.caSecret }}
- {name: es-ca, mountPath: /etc/ilp/es-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "ilp.volumes" -}}
- {name: checkpoints, persistentVolumeClaim: {claimName: {{ .Values.storage.checkpoints.claimName }}}}
- {name: runs, persistentVolumeClaim: {claimName: {{ .Values.storage.runs.claimName }}}}
- {name: data, persistentVolumeClaim: {claimName: {{ .Values.storage.data.claimName }}}}
- {name: tmp, emptyDir: {sizeLimit: {{ .Values.security.tmpSizeLimit }}}}
- {name: cache, emptyDir: {sizeLimit: {{ .Values.security.cacheSizeLimit }}}}
- {name: jobs, configMap: {name: {{ include "ilp.name" . }}-jobs}}
{{- if eq .Values.elasticsearch.mode "eck" }}
- {name: es-ca, secret: {secretName: {{ include "ilp.esName" . }}-es-http-certs-public}}
{{- else if and (eq .Values.elasticsearch.mode "external") .Values.elasticsearch.external.caSecret }}
- {name: es-ca, secret: {secretName: {{ .Values.elasticsearch.external.caSecret }}}}
{{- end }}
{{- end -}}

{{/* Probes of a Ray container: the GCS health on the head, the raylet's on a worker (HTTP, no tool in the image needed). */}}
{{- define "ilp.rayHeadProbes" -}}
readinessProbe: {httpGet: {path: /api/gcs_healthz, port: 8265}, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6}
livenessProbe: {httpGet: {path: /api/gcs_healthz, port: 8265}, initialDelaySeconds: 30, periodSeconds: 15, timeoutSeconds: 5, failureThreshold: 10}
{{- end -}}
{{- define "ilp.rayWorkerProbes" -}}
readinessProbe: {httpGet: {path: /api/local_raylet_healthz, port: 52365}, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6}
livenessProbe: {httpGet: {path: /api/local_raylet_healthz, port: 52365}, initialDelaySeconds: 30, periodSeconds: 15, timeoutSeconds: 5, failureThreshold: 10}
{{- end -}}

{{/* The Ray cluster settings every cluster of the release shares: auth, the autoscaler sidecar's security. */}}
{{- define "ilp.rayClusterCommon" -}}
rayVersion: {{ .Values.rayVersion | quote }}
{{- if .Values.rayAuth.enabled }}
authOptions:
  mode: token
  {{- with .Values.rayAuth.secretName }}
  secretName: {{ . }}
  {{- end }}
{{- end }}
enableInTreeAutoscaling: true
autoscalerOptions:
  securityContext: {{- include "ilp.containerSecurityContext" . | nindent 4 }}
  resources: {requests: {cpu: 200m, memory: 512Mi}, limits: {cpu: 500m, memory: 512Mi}}
{{- end -}}

{{/*
A Ray head group. Args: ctx, component, resources, withToken, rayStartParams (dict).
The dashboard listens on the pod network (the Jobs API and KubeRay need it) behind a ClusterIP
Service and the NetworkPolicies; nothing exposes it outside the cluster.
*/}}
{{- define "ilp.headGroup" -}}
serviceType: ClusterIP
rayStartParams: {{- toYaml (merge (dict "dashboard-host" "0.0.0.0") .rayStartParams) | nindent 2 }}
template:
  metadata:
    labels: {{- include "ilp.podLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
  spec:
    {{- include "ilp.podCommon" .ctx | nindent 4 }}
    containers:
      - name: ray-head
        image: {{ include "ilp.image" .ctx | quote }}
        imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
        env: {{- include "ilp.env" (dict "ctx" .ctx "withToken" .withToken) | nindent 10 }}
        ports:
          - {containerPort: 6379, name: gcs}
          - {containerPort: 8265, name: dashboard}
          - {containerPort: 10001, name: client}
          {{- if .withToken }}
          - {containerPort: 8000, name: serve}
          {{- end }}
        resources: {{- toYaml .resources | nindent 10 }}
        securityContext: {{- include "ilp.containerSecurityContext" .ctx | nindent 10 }}
        {{- include "ilp.rayHeadProbes" . | nindent 8 }}
        volumeMounts: {{- include "ilp.volumeMounts" .ctx | nindent 10 }}
    volumes: {{- include "ilp.volumes" .ctx | nindent 6 }}
{{- end -}}

{{/* A Ray worker group. Args: ctx, component, name, group (values: replicas, min/max, resources), gpus, image, withToken. */}}
{{- define "ilp.workerGroup" -}}
- groupName: {{ .name }}
  replicas: {{ .group.replicas }}
  minReplicas: {{ .group.minReplicas }}
  maxReplicas: {{ .group.maxReplicas }}
  rayStartParams: {}
  template:
    metadata:
      labels: {{- include "ilp.podLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
    spec:
      {{- include "ilp.podCommon" .ctx | nindent 6 }}
      {{- with .group.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .group.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-worker
          image: {{ .image | quote }}
          imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
          env: {{- include "ilp.env" (dict "ctx" .ctx "withToken" .withToken) | nindent 12 }}
          resources:
            requests: {{- toYaml .group.resources.requests | nindent 14 }}
            limits:
              {{- toYaml .group.resources.limits | nindent 14 }}
              {{- if gt (int .gpus) 0 }}
              nvidia.com/gpu: {{ .gpus }}
              {{- end }}
          securityContext: {{- include "ilp.containerSecurityContext" .ctx | nindent 12 }}
          {{- include "ilp.rayWorkerProbes" . | nindent 10 }}
          volumeMounts: {{- include "ilp.volumeMounts" .ctx | nindent 12 }}
      volumes: {{- include "ilp.volumes" .ctx | nindent 8 }}
{{- end -}}
