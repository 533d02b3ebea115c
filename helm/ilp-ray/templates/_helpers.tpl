{{- define "ilp.name" -}}{{ .Release.Name }}-ilp{{- end -}}
{{- define "ilp.tokenSecret" -}}{{ default (printf "%s-token" (include "ilp.name" .)) .Values.apiToken.existingSecret }}{{- end -}}
{{- define "ilp.labels" -}}
app.kubernetes.io/name: ilp-ray
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "ilp.env" -}}
- name: ILP_API_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "ilp.tokenSecret" . }}, key: token}}
- name: HF_HUB_OFFLINE
  value: "1"
- name: OMP_NUM_THREADS
  value: "1"
{{- if .Values.mlflow.enabled }}
- name: MLFLOW_TRACKING_URI
  value: http://{{ include "ilp.name" . }}-mlflow:{{ .Values.mlflow.service.port }}
{{- end }}
{{- end -}}
{{- define "ilp.volumeMounts" -}}
- {name: checkpoints, mountPath: {{ .Values.storage.checkpoints.mountPath }}, readOnly: true}
- {name: runs, mountPath: {{ .Values.storage.runs.mountPath }}}
- {name: data, mountPath: {{ .Values.storage.data.mountPath }}, readOnly: true}
{{- end -}}
{{- define "ilp.volumes" -}}
- {name: checkpoints, persistentVolumeClaim: {claimName: {{ .Values.storage.checkpoints.claimName }}}}
- {name: runs, persistentVolumeClaim: {claimName: {{ .Values.storage.runs.claimName }}}}
- {name: data, persistentVolumeClaim: {claimName: {{ .Values.storage.data.claimName }}}}
{{- end -}}
