"""Open a store from a URI and the environment."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from kubeforge.store.base import Store, StoreError
from kubeforge.store.local import LocalStore

ENV_STORE = "KUBEFORGE_STORE"
ENV_S3_ENDPOINT = "KUBEFORGE_S3_ENDPOINT"  # host:port or http(s)://host:port
DEFAULT_LOCAL_STORE = ".kubeforge/store"


def open_store(uri: str | None = None) -> Store:
    """`file:///dir`, a plain path, or `s3://bucket/prefix`.

    S3 credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    and the endpoint from KUBEFORGE_S3_ENDPOINT, so they never appear in specs or status.
    """
    uri = uri or os.environ.get(ENV_STORE) or DEFAULT_LOCAL_STORE
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme == "file" else uri))
    if parsed.scheme == "s3":
        from kubeforge.store.s3 import S3Store

        return S3Store.from_uri(uri)
    raise StoreError(f"store URI {uri!r}: expected file:///path, a directory path or s3://bucket/prefix")
