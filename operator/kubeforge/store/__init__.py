"""The artifact store: one interface, a local directory or S3 behind it."""

from kubeforge.store.base import Store, StoreError, StoreUnreachableError
from kubeforge.store.factory import open_store
from kubeforge.store.local import LocalStore

__all__ = ["LocalStore", "Store", "StoreError", "StoreUnreachableError", "open_store"]
