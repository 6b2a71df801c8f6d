"""The exact Kubernetes permissions the operator uses (least privilege).

One source of truth: the Helm chart's ClusterRole is tested against `REQUIRED_RULES`, so a
handler that starts using a new verb fails that test until the chart grants it, and the
chart never grants more than is listed here.

Why each rule:
- our four kinds: Kopf lists and watches them, patches metadata (finalizers, its progress
  annotations) and status; the operator creates the Benchmark a TrainingJob owns
  (`spec.benchmark.enabled`).
- batch Jobs: one per step; watched for completion; a superseded serve Job is deleted;
  `suspend` is patched through.
- pods (read only): a failed Job's container termination reason (OOMKilled) and message.
- configmaps: the run spec (`run.json`) of each Job (create; get when it already exists).
- services / deployments: distributed training's headless Service; Triton serving (Kopf lists
  and watches the Deployments it made: their readiness becomes the InferenceService's).
- events: Kopf posts core v1 Events on every phase change.
- Kopf itself: CRD and namespace discovery, and peering (one active replica of two).
No access to Secrets: Jobs and Triton get the store Secret through `envFrom`, which the
kubelet resolves; the operator never reads it.
"""

from __future__ import annotations

from typing import Any

from kubeforge import API_GROUP

KINDS_PLURAL = ("datasetversions", "trainingjobs", "benchmarks", "inferenceservices")

REQUIRED_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [API_GROUP], "resources": list(KINDS_PLURAL),
     "verbs": ["get", "list", "watch", "patch", "create"]},
    {"apiGroups": [API_GROUP], "resources": [f"{p}/status" for p in KINDS_PLURAL],
     "verbs": ["get", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Kopf: discovery of resources and namespaces.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # Kopf peering: cluster-wide and per-namespace operators.
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings", "kopfpeerings"],
     "verbs": ["list", "watch", "patch", "get"]},
]


def _expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out: set[tuple[str, str, str]] = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add((group, resource, verb))
    return out


def missing(granted: list[dict[str, Any]], required: list[dict[str, Any]] | None = None) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples in `required` (default REQUIRED_RULES) that `granted` lacks.

    Wildcards in `granted` are not honoured: a least-privilege role should not have any.
    """
    return sorted(_expand(required or REQUIRED_RULES) - _expand(granted))


def excess(granted: list[dict[str, Any]], required: list[dict[str, Any]] | None = None) -> list[tuple[str, str, str]]:
    """Triples `granted` gives beyond what the operator uses."""
    return sorted(_expand(granted) - _expand(required or REQUIRED_RULES))
