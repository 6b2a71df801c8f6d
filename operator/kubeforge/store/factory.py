"""Open a store from a URI and the environment."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from kubeforge.store.base import Store, StoreError
from kubeforge.store.local import LocalStore

ENV_STORE = "KUBEFORGE_STORE"
ENV_S3_ENDPOINT = "KUBEFORGE_S3_ENDPOINT"  # host:port or http(s)://host:port


def open_store(uri: str) -> Store:
    """`file:///dir`, a plain path, or `s3://bucket/prefix`.

    There is no default here: a caller names its store (the CLI's default, $KUBEFORGE_STORE or
    the state directory's store, is `kubeforge.local.state.local_store_uri`; the operator's is
    its settings; a step's is its run spec), so no two places can disagree about it.
    S3 credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    and the endpoint from KUBEFORGE_S3_ENDPOINT, so they never appear in specs or status.
    """
    if not uri:
        raise StoreError("no store URI given: expected file:///path, a directory path or s3://bucket/prefix")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme == "file" else uri))
    if parsed.scheme == "s3":
        from kubeforge.store.s3 import S3Store

        return S3Store.from_uri(uri)
    raise StoreError(f"store URI {uri!r}: expected file:///path, a directory path or s3://bucket/prefix")
