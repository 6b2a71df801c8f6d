"""Deletion: honour `spec.artifactPolicy` (Retain by default) before the finalizer is released.

`Delete` removes only what this resource wrote: its output prefix (experiment, benchmark,
serving repository, or dataset-version manifest) and its run records. Never blobs (shared by
content), and never a dataset version that another DatasetVersion still references, as its
parent or by having the same content digest. Kubernetes objects go by garbage collection
(ownerReferences).
"""

from __future__ import annotations

import logging
from typing import Any

from kubeforge import GROUP_VERSION
from kubeforge.operator.kube import KubeError
from kubeforge.operator.reconcile import Context
from kubeforge.store import layout


def dataset_version_in_use(others: list[dict[str, Any]], body: dict[str, Any]) -> str | None:
    """Why a DatasetVersion's store data must stay (pure), or None."""
    meta, digest = body["metadata"], (body.get("status") or {}).get("digest")
    for other in others:
        ometa = other.get("metadata") or {}
        if ometa.get("uid") == meta.get("uid"):
            continue
        if digest and (other.get("status") or {}).get("digest") == digest:
            return f"DatasetVersion {ometa.get('namespace')}/{ometa.get('name')} has the same digest"
        if ometa.get("namespace") == meta.get("namespace") and (other.get("spec") or {}).get("parent") == meta["name"]:
            return f"DatasetVersion {ometa.get('name')} has it as parent"
    return None


def prefixes_to_delete(body: dict[str, Any]) -> list[str]:
    """What `artifactPolicy: Delete` removes for this resource (pure)."""
    meta, status = body["metadata"], body.get("status") or {}
    out = []
    if status.get("outputPrefix"):
        out.append(str(status["outputPrefix"]).rstrip("/") + "/")
    if meta.get("uid"):
        out.append(layout.run_prefix(meta["namespace"], body["kind"], meta["name"], meta["uid"]) + "/")
    return [p for p in out if not p.startswith("blobs/")]


def delete_artifacts(ctx: Context, body: dict[str, Any], logger: logging.Logger) -> list[str]:
    """Apply the policy; returns the store prefixes removed."""
    meta = body["metadata"]
    ctx.metrics.forget(body["kind"], meta["namespace"], meta["name"])
    if (body.get("spec") or {}).get("artifactPolicy", "Retain") != "Delete":
        return []
    if body["kind"] == "DatasetVersion":
        try:
            others = ctx.kube.list(GROUP_VERSION, "DatasetVersion", None)
        except KubeError as exc:  # cannot tell who references it: keeping is the safe answer
            logger.warning("keeping the dataset version's data: listing DatasetVersions failed: %s", exc)
            return []
        why = dataset_version_in_use(others, body)
        if why:
            logger.info("keeping the dataset version's data: %s", why)
            return []
    removed = []
    for prefix in prefixes_to_delete(body):
        for key in list(ctx.store.list(prefix)):
            ctx.store.delete(key)
        removed.append(prefix)
    logger.info("artifactPolicy Delete: removed %s", ", ".join(removed) or "nothing")
    return removed
