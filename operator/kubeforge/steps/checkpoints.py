"""`spec.model.checkpoint`: weights to start from, taken from the store (air-gapped clusters).

The field takes a store key (`weights/resnet18.pth`) or a URI inside the run's store
(`s3://bucket/prefix/weights/resnet18.pth`, or a local store's absolute path). The file is a
Kubeforge checkpoint (a dict with `model`) or a plain state dict such as a published `.pth`.
"""

from __future__ import annotations

from kubeforge.store import Store


def store_key(store: Store, ref: str) -> str:
    """The store key `ref` names; errors name the field and the store."""
    root = store.url("_")[: -len("_")]  # what every URI of this store starts with
    if ref.startswith(root):
        key = ref[len(root):]
    elif "://" in ref or ref.startswith("/"):
        raise ValueError(f"spec.model.checkpoint: {ref!r} is not in the run's store {store.uri}; "
                         "upload it there (kubeforge store put) or give its key in the store")
    else:
        key = ref
    if not store.exists(key):
        raise ValueError(f"spec.model.checkpoint: {store.url(key)} does not exist in the store")
    return key
