"""Deletion: honour `spec.artifactPolicy` (Retain by default) before the finalizer is released.

`Delete` removes only what this resource wrote: every run's output prefix (experiment run,
benchmark run, serving repository, or dataset-version manifest) and its run records. Never blobs
(shared by content), and never a dataset version that another resource still references or that
has the same content digest (`kubeforge.core.usage`, the local runner's rule too). Kubernetes
objects go by garbage collection (ownerReferences).
"""

from __future__ import annotations

import logging
from typing import Any

from kubeforge import GROUP_VERSION
from kubeforge.api import KINDS, DatasetVersion, Resource
from kubeforge.core.usage import artifacts_to_delete
from kubeforge.operator.kube import KubeError
from kubeforge.operator.reconcile import Context, resource_of
from kubeforge.store import layout


def delete_artifacts(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> list[str]:
    """Apply the policy; returns the store prefixes removed."""
    meta = body["metadata"]
    ctx.metrics.forget(body["kind"], meta["namespace"], meta["name"])
    if (body.get("spec") or {}).get("artifactPolicy", "Retain") != "Delete":
        return []
    res = resource_of(body)
    if res is None:
        logger.warning("keeping the artifacts: the spec is invalid, so what it wrote is unknown")
        return []
    others: list[Resource] = []
    if isinstance(res, DatasetVersion):
        try:
            others = [m for kind in KINDS for b in ctx.kube.list(GROUP_VERSION, kind, None)
                      if (m := resource_of(b)) is not None]
        except KubeError as exc:  # cannot tell who references it: keeping is the safe answer
            logger.warning("keeping the dataset version's data: listing resources failed: %s", exc)
            return []
    prefixes, why = artifacts_to_delete(res, others)
    if not prefixes:
        logger.info("keeping the artifacts: %s", why)
        return []
    if meta.get("uid"):  # the cluster runtime's run records (step results) go with it
        prefixes.append(layout.run_prefix(res.namespace, res.kind, res.name, meta["uid"]) + "/")
    removed = []
    for prefix in prefixes:
        for key in list(ctx.store.list(prefix)):
            ctx.store.delete(key)
        removed.append(prefix)
    logger.info("artifactPolicy Delete: removed %s", ", ".join(removed) or "nothing")
    return removed
