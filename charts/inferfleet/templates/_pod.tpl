{{/*
The operator's pod template, shared by the Deployment (one standalone replica) and the HA
StatefulSet. Restricted Pod Security: non-root, read-only root filesystem (an emptyDir at /tmp
for anything Python writes there), no privilege escalation, no capabilities, RuntimeDefault seccomp.
*/}}
{{- define "inferfleet.podTemplate" -}}
metadata:
  labels:
    {{- include "inferfleet.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "inferfleet.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: operator
      image: {{ include "inferfleet.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --liveness=http://0.0.0.0:{{ .Values.healthPort }}/healthz
        - --metrics-port={{ .Values.metrics.port }}
        - --metrics-address=0.0.0.0
        - --kube-qps={{ .Values.kubeClient.qps }}
        - --kube-burst={{ .Values.kubeClient.burst }}
        - --kube-concurrency={{ .Values.kubeClient.concurrency }}
        - --workers={{ .Values.workers }}
        {{- with .Values.prometheus }}
        - --prometheus-timeout={{ .timeoutSeconds }}
        - --prometheus-max-series={{ .maxSeries }}
        {{- if .caSecret }}
        - --prometheus-ca-file=/etc/inferfleet/prometheus-ca/ca.crt
        {{- end }}
        {{- if .insecureSkipVerify }}
        - --prometheus-insecure-skip-verify
        {{- end }}
        {{- if and .authSecret (eq .authType "basic") }}
        - --prometheus-username-file=/etc/inferfleet/prometheus-auth/username
        - --prometheus-password-file=/etc/inferfleet/prometheus-auth/password
        {{- else if .authSecret }}
        - --prometheus-bearer-token-file=/etc/inferfleet/prometheus-auth/token
        {{- end }}
        {{- if .customQueries }}
        - --allow-custom-queries
        {{- end }}
        {{- end }}
        - --max-replicas-per-service={{ .Values.limits.maxReplicasPerService }}
        - --allowed-capabilities={{ join "," .Values.policy.allowedCapabilities }}
        - --allowed-priority-classes={{ join "," .Values.policy.allowedPriorityClasses }}
        - --gpu-resource-names={{ join "," .Values.policy.gpuResourceNames }}
        {{- with .Values.modelCache.root }}
        - --model-cache-root={{ . }}
        - --model-cache-image={{ include "inferfleet.image" $ }}
        - --model-cache-namespace={{ $.Release.Namespace }}
        {{- with $.Values.modelCache.nodeBudgetBytes }}
        - --model-cache-node-budget-bytes={{ int64 . }}
        {{- end }}
        {{- end }}
        {{- if .Values.inferencePools.enabled }}
        {{- with .Values.inferencePools.endpointPicker }}
        - {{ printf "--endpoint-picker-service=%s" .service | quote }}
        - --endpoint-picker-port={{ int .port }}
        - --endpoint-picker-failure-mode={{ .failureMode }}
        {{- end }}
        {{- else }}
        - --inference-pools=off
        {{- end }}
        {{- with .Values.schedulerName }}
        - --scheduler-name={{ . }}
        {{- end }}
        {{- if .Values.gateway.enabled }}
        - --gateway-url={{ include "inferfleet.gateway.url" . }}
        {{- end }}
        {{- range .Values.watchNamespaces }}
        - --namespace={{ . }}
        {{- end }}
        {{- if .Values.ha.enabled }}
        - --peering={{ include "inferfleet.peeringName" . }}
        - --priority=$(POD_INDEX)
        {{- end }}
        {{- if eq .Values.logFormat "json" }}
        - --log-json
        {{- end }}
        {{- if .Values.verbose }}
        - --verbose
        {{- end }}
      env:
        # kopf's identity in peering records and events: the pod name.
        - name: POD_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if .Values.ha.enabled }}
        # The replica's peering priority: its StatefulSet ordinal (the highest live one works).
        - name: POD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- with .Values.prometheus.url }}
        - name: INFERFLEET_PROMETHEUS_URL
          value: {{ . | quote }}
        {{- end }}
      ports:
        - name: health
          containerPort: {{ .Values.healthPort }}
          protocol: TCP
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: health
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /healthz
          port: health
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities:
          drop: [ALL]
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if .Values.prometheus.caSecret }}
        - name: prometheus-ca
          mountPath: /etc/inferfleet/prometheus-ca
          readOnly: true
        {{- end }}
        {{- if .Values.prometheus.authSecret }}
        - name: prometheus-auth
          mountPath: /etc/inferfleet/prometheus-auth
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.prometheus.caSecret }}
    - name: prometheus-ca
      secret:
        secretName: {{ . }}
        items: [{key: ca.crt, path: ca.crt}]
    {{- end }}
    {{- with .Values.prometheus.authSecret }}
    - name: prometheus-auth
      secret:
        secretName: {{ . }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml .Values.topologySpreadConstraints | nindent 4 }}
  {{- else if .Values.ha.enabled }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "inferfleet.selectorLabels" . | nindent 10 }}
  {{- end }}
{{- end }}
