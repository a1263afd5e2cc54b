{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "inferfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, with the chart name unless it contains it. */}}
{{- define "inferfleet.fullname" -}}
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

{{- define "inferfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries besides its component's selector labels. */}}
{{- define "inferfleet.commonLabels" -}}
helm.sh/chart: {{ include "inferfleet.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inferfleet
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "inferfleet.labels" -}}
{{ include "inferfleet.commonLabels" . }}
{{ include "inferfleet.selectorLabels" . }}
{{- end }}

{{/* The operator pods' identity; selectors use only these (they never change on upgrade). */}}
{{- define "inferfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "inferfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inferfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "inferfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "inferfleet.peeringName" -}}
{{- default (include "inferfleet.fullname" .) .Values.ha.peeringName }}
{{- end }}

{{/*
Rules for what the operator reads and writes inside the namespaces it manages: in a ClusterRole
when it watches every namespace, else in a Role per watched namespace. Each verb is one the
operator uses: run under this ServiceAccount with any one of them removed, it gets a 403 (for
finalizers/update, only where the admission plugin named below is on). Every integration test's
operator runs under these rules, rendered from this chart (tests/rbac.py), and
tests/unit/test_chart_render.py maps each API call of the operator to the rule that grants it:
- inferenceservices: kopf lists/watches them and patches its annotations (progress, last
  handled spec); the operator writes status through the status subresource and the autoscaler
  writes spec.replicas through the scale subresource, as HPA does. finalizers/update:
  child objects carry an ownerReference with blockOwnerDeletion, which the
  OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened clusters) allows
  only to who may update the owner's finalizers.
- deployments, statefulsets, services, poddisruptionbudgets: server-side apply (patch, and
  create when it creates) of a child the operator knows it controls; any other child is applied
  create-only (a resourceVersion no object has), and when its name is taken read (get) to see
  whether this service controls it (else NameConflict: left untouched). kopf
  watches deployments and statefulsets. StatefulSets and headless Services of a multi-node
  replica group are deleted to restart the group whole.
- pods: kopf lists/watches them (GPUs held on each node, loss of a group member; only in the
  namespaces it serves, as for every namespaced resource); a lost node's single-pod replicas are
  deleted at once, so that their Deployment replaces them on a healthy node instead of waiting
  out the 300 s not-ready toleration; before the autoscaler lowers a service's single-pod
  replicas it patches their `controller.kubernetes.io/pod-deletion-cost` annotation, so the
  ReplicaSet removes the pod with the fewest requests in flight and the coldest prefix cache.
- events: kopf posts Kubernetes Events on InferenceServices (core/v1); when a replica group's
  StatefulSet lacks pods, the operator lists its FailedCreate Events to report why.
- persistentvolumeclaims, jobs: the node weights cache (modelCache.root): kopf watches the
  cache's claim and fetch Jobs (by label); with the cache on, the operator creates each
  namespace's claim (read back when it exists already), a fetch Job per model and node, and an
  eviction Job per copy a node's byte budget drops; once an eviction completed it deletes both
  Jobs (delete), so that a later pod on the node fetches again; a failed fetch is retried as a
  new Job and the failed one deleted; a metadata Job reads an unknown model's facts. In its own
  namespace: a Job per node making a namespace's directory, and one removing it once the
  namespace's claim is gone (the directory Jobs are deleted then).
- provisioningrequests, podtemplates: node autoscaling (docs/node-autoscaling.md): a replica
  group that cannot be placed for lack of nodes asks the cluster autoscaler for all of them in
  one ProvisioningRequest (autoscaling.x-k8s.io, watched by kopf where the cluster serves it)
  that references a PodTemplate of the group's pods; both are created (the template read back
  when its name is taken, to use only one this service controls) and deleted once the group
  runs or is no longer wanted.
- inferencepools (inferencePools.enabled): a service's InferencePool for a cluster's own inference
  gateway, applied as its other children are (create-only first, read back when its name is
  taken); the garbage collector deletes it with the service.
- kopfpeerings (HA, namespaced mode): kopf's peering records, one per watched namespace; kopf
  patches its own record, and the autoscaler reads (get) it so that only the active instance scales.
*/}}
{{- define "inferfleet.namespacedRules" -}}
- apiGroups: [inferfleet.io]
  resources: [inferenceservices]
  verbs: [list, watch, patch]
- apiGroups: [inferfleet.io]
  resources: [inferenceservices/status, inferenceservices/scale]
  verbs: [patch]
- apiGroups: [inferfleet.io]
  resources: [inferenceservices/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, watch{{ if .Values.modelCache.root }}, get, create{{ end }}]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch{{ if .Values.modelCache.root }}, create, delete{{ end }}]
- apiGroups: [autoscaling.x-k8s.io]
  resources: [provisioningrequests]
  verbs: [list, watch, create, delete]
- apiGroups: [""]
  resources: [podtemplates]
  verbs: [get, create, delete]
{{- if .Values.inferencePools.enabled }}
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [get, create, patch]
{{- end }}
{{- if and .Values.ha.enabled .Values.watchNamespaces }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  resourceNames: [{{ include "inferfleet.peeringName" . }}]
  verbs: [get, patch]
{{- end }}
{{- end }}

{{/*
Cluster-scoped reads, in every mode:
- nodes: the GPU inventory (kopf index and node events); with the model cache on, patch: the
  operator sets and removes its `weights.inferfleet.io/<hash>` labels (a node holds a
  namespace's copy of a model), and only labels of that prefix (kube/weights.py checks it).
- customresourcedefinitions: kopf discovers the resources it serves and watches for changes;
- namespaces (namespaced mode): kopf lists and watches the namespaces it serves;
- clusterkopfpeerings (HA, cluster-wide mode): kopf's peering record, which kopf patches and
  the autoscaler reads (get).
- persistentvolumes: kopf watches the node weights cache's volumes (by label); with the cache on
  the operator creates one `local` volume per namespace, and only one whose path is its claim's
  directory under modelCache.root and whose claimRef is that claim (kube/weights.py checks it);
  once that claim is gone (its namespace deleted) and the volume Released, it deletes the volume
  (delete), under the same check, after Jobs removed the claim's directory from the nodes.
*/}}
{{- define "inferfleet.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch{{ if .Values.modelCache.root }}, patch{{ end }}]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [list, watch{{ if .Values.modelCache.root }}, create, delete{{ end }}]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- else if .Values.ha.enabled }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  resourceNames: [{{ include "inferfleet.peeringName" . }}]
  verbs: [get, patch]
{{- end }}
{{- end }}

{{/*
The gateway (`inferfleet gateway`): the OpenAI-compatible request path in front of the engines.
Its objects are named <fullname>-gateway and labelled component: gateway, so that no selector of
the operator's (Services, PDB, NetworkPolicy, ServiceMonitor) ever picks a gateway pod, nor
the other way round.
*/}}
{{- define "inferfleet.gateway.fullname" -}}
{{- printf "%s-gateway" (include "inferfleet.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "inferfleet.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "inferfleet.gateway.labels" -}}
{{ include "inferfleet.commonLabels" . }}
{{ include "inferfleet.gateway.selectorLabels" . }}
{{- end }}

{{- define "inferfleet.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "inferfleet.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The gateway's in-cluster base URL; the operator writes status.endpoint under it. */}}
{{- define "inferfleet.gateway.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "inferfleet.gateway.fullname" .) .Release.Namespace .Values.gateway.service.port }}
{{- end }}

{{/*
What the gateway calls, in a ClusterRole when the operator watches every namespace, else in a
Role per watched namespace (the gateway serves exactly the operator's namespaces). Nothing else:
tests/unit/test_chart_gateway.py holds the rules to exactly this set.
- inferenceservices list/watch: which model each service serves, its slots per replica,
  queue bound, scaling settings and whether it can be placed (spec and status).
- inferenceservices/scale patch: scale from zero, the one write: a request for a service at zero
  replicas raises it to one (only when its minReplicas is 0 and scaling is on), with a JSON patch
  that tests for 0 first, so it needs no get.
- endpointslices list/watch: the Ready, non-terminating engine endpoints it routes to.
*/}}
{{- define "inferfleet.gateway.rules" -}}
- apiGroups: [inferfleet.io]
  resources: [inferenceservices]
  verbs: [list, watch]
- apiGroups: [inferfleet.io]
  resources: [inferenceservices/scale]
  verbs: [patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
{{- end }}
