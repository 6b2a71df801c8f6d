"""The exact Kubernetes permissions the operator uses (least privilege).

One source of truth: `kubeforge chart sync` writes these rules into the Helm chart
(helm/kubeforge/files/rbac-rules.yaml), and the operator tests run the operator as the chart's
ServiceAccount against an emulated API server that enforces the RBAC the chart renders
(kubeforge.testing.rbac_authorizer): a handler that starts using a verb not listed here is
refused (403) in the tests, as it would be in a cluster.

Why each rule:
- our four kinds: Kopf lists and watches them, patches metadata (finalizers, its progress
  annotations) and status; the operator creates the Benchmark a TrainingJob owns
  (`spec.benchmark.enabled`).
- batch Jobs: one per step; watched for completion; a superseded serve Job is deleted;
  `suspend` is patched through.
- pods (read only): a failed Job's container termination reason (OOMKilled) and message; the
  IPs of an InferenceService's Triton pods, whose metrics give its request counts.
- configmaps: the run spec (`run.json`) of each Job (create; get when it already exists).
- services / deployments: distributed training's headless Service; Triton serving (Kopf lists
  and watches the Deployments it made: their readiness becomes the InferenceService's); a canary's
  Deployment and Service are deleted on promotion or rollback, the Service's selector is patched
  when the replica ratio splits traffic.
- httproutes / grpcroutes / scaledobjects / horizontalpodautoscalers: a canary's weighted routes
  (Gateway API: the HTTPRoute for HTTP, the GRPCRoute for Triton's gRPC service where the cluster
  serves it), the autoscaler of spec.autoscaling (KEDA, else an HPA); updated in place, deleted when
  the canary or spec.autoscaling is removed.
- events: Kopf posts core v1 Events on every phase change.
- Kopf itself: CRD and namespace discovery, and peering (one active replica of two).
No access to Secrets: Jobs and Triton get the store Secret through `envFrom`, which the
kubelet resolves; the operator never reads it.
"""

from __future__ import annotations

from kubeforge import API_GROUP

KINDS_PLURAL = ("datasetversions", "trainingjobs", "benchmarks", "inferenceservices", "predictionjobs")

REQUIRED_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [API_GROUP], "resources": list(KINDS_PLURAL),
     "verbs": ["get", "list", "watch", "patch", "create"]},
    {"apiGroups": [API_GROUP], "resources": [f"{p}/status" for p in KINDS_PLURAL],
     "verbs": ["get", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # Serving rollouts: a canary's HTTPRoute and GRPCRoute (Gateway API), the autoscaler (KEDA's
    # ScaledObject or an HPA).
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes", "grpcroutes"],
     "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
     "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Kopf: discovery of resources and namespaces.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # Kopf peering: cluster-wide and per-namespace operators.
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings", "kopfpeerings"],
     "verbs": ["list", "watch", "patch", "get"]},
]

