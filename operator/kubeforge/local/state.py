"""The local runner's state directory: what `kubectl get` would read from the API server.

Layout (`.kubeforge/` in the cwd unless --state-dir or KUBEFORGE_STATE_DIR say otherwise):
  resources/<Kind>/<namespace>/<name>.json   the resource with its status, specHash, store
  runs/<Kind>_<namespace>_<name>/            run.json, result.json, step.log (triton.log)
  store/                                     the default local store (file://<state>/store)
Every write is atomic (write beside, then rename) so a reader never sees half a record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kubeforge.atomic_file import atomic_write_text
from kubeforge.store import layout
from kubeforge.store.factory import ENV_STORE

if TYPE_CHECKING:  # the API models load on use: `local_store_uri` (every `kubeforge datasets` command) needs none
    from kubeforge.api import Phase, Resource
    from kubeforge.local.manifests import ResourceKey
    from kubeforge.steps.spec import StepRun

ENV_STATE_DIR = "KUBEFORGE_STATE_DIR"
DEFAULT_STATE_DIR = ".kubeforge"


class StateError(RuntimeError):
    """The state directory is unreadable or a resource is not in it."""


def resolve_state_dir(option: str | Path | None = None) -> Path:
    """--state-dir, else $KUBEFORGE_STATE_DIR, else ./.kubeforge (absolute)."""
    chosen = option or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


def local_store_uri(option: str | Path | None = None, state_dir: str | Path | None = None) -> str:
    """The one default store of the CLI and the local runner: --store, else $KUBEFORGE_STORE, else
    file://<state-dir>/store (state dir as `resolve_state_dir`). Plain paths become file:// URIs."""
    uri = str(option or os.environ.get(ENV_STORE) or (resolve_state_dir(state_dir) / "store").as_uri())
    if "://" not in uri:
        uri = Path(uri).expanduser().resolve().as_uri()
    return uri


def run_digest(run: StepRun) -> str:
    """sha256 of a run spec (which names the store, the spec and what every reference produced): a
    change anywhere upstream, in the spec or in the store changes it, and the resource runs again."""
    return hashlib.sha256(run.model_dump_json(exclude_unset=True).encode()).hexdigest()


def creation_timestamp(resource: Resource) -> str | None:
    return (resource.metadata.model_extra or {}).get("creationTimestamp")


@dataclass
class Record:
    """One resource in the state directory."""

    resource: Resource
    spec_hash: str | None = None  # run_digest of its last run spec
    manifest: str | None = None  # the file it was applied from
    store: str | None = None  # the store URI its run used

    @property
    def key(self) -> ResourceKey:
        return (self.resource.kind, self.resource.namespace, self.resource.name)

    @property
    def phase(self) -> Phase | None:
        return self.resource.status.phase if self.resource.status is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource.dump(),
            "specHash": self.spec_hash,
            "manifest": self.manifest,
            "store": self.store,
        }


class StateDir:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def resource_path(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / "resources" / kind / namespace / f"{name}.json"

    def run_dir(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / "runs" / f"{kind}_{namespace}_{name}"

    def load(self, kind: str, namespace: str, name: str) -> Record | None:
        path = self.resource_path(kind, namespace, name)
        try:
            data = json.loads(path.read_text())
            from kubeforge.api import parse_resource

            resource = parse_resource(data["resource"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # pydantic's ValidationError is a ValueError: the record was written by another version.
            raise StateError(f"{path}: unreadable state record ({exc}); delete it to start that resource over") from exc
        return Record(resource, data.get("specHash"), data.get("manifest"), data.get("store"))

    def save(self, record: Record) -> None:
        path = self.resource_path(*record.key)
        atomic_write_text(path, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Forget a resource and its run directory; returns False when it was not there."""
        path = self.resource_path(kind, namespace, name)
        existed = path.exists()
        path.unlink(missing_ok=True)
        shutil.rmtree(self.run_dir(kind, namespace, name), ignore_errors=True)
        return existed

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[Record]:
        """Records sorted by kind order, namespace, name."""
        from kubeforge.api import KINDS

        out = []
        for k in [kind] if kind else list(KINDS):
            base = self.root / "resources" / k
            if not base.is_dir():
                continue
            for path in sorted(base.glob(f"{namespace or '*'}/*.json")):
                record = self.load(k, path.parent.name, path.stem)
                if record is not None:
                    out.append(record)
        return sorted(out, key=lambda r: (list(KINDS).index(r.key[0]), r.key[1], r.key[2]))

    def get(self, kind: str, namespace: str, name: str) -> Record:
        """Like load, but a missing resource is a StateError saying where we looked."""
        record = self.load(kind, namespace, name)
        if record is None:
            from kubeforge.local.manifests import resource_label

            raise StateError(f"{resource_label(kind, namespace, name)} not found in the state directory {self.root}")
        return record

    def succeeded(self) -> dict[ResourceKey, Resource]:
        """Resources that can satisfy a reference without running again: Succeeded, or with a successful run."""
        from kubeforge.api import Phase

        return {r.key: r.resource for r in self.list() if r.phase == Phase.SUCCEEDED
                or (r.resource.status is not None and r.resource.status.latest_succeeded() is not None)}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One `kubeforge run` per state directory at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(f"{self.root}: another `kubeforge run` is using this state directory") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class ServiceEndpoint(NamedTuple):
    """What `kubeforge predict` needs to call a served model and preprocess for it."""

    url: str  # http://host:port (Open Inference Protocol v2)
    model_name: str
    store_uri: str  # open with kubeforge.store.open_store
    experiment_prefix: str  # the served TrainingJob's experiment; model_meta.json lives here

    @property
    def model_meta_key(self) -> str:
        return f"{self.experiment_prefix}/{layout.MODEL_META}"


def service_endpoint(name: str, namespace: str = "default", state_dir: Path | str | None = None) -> ServiceEndpoint:
    """Resolve an InferenceService name to its endpoint; StateError when it is not serving."""
    from kubeforge.api import InferenceService

    state = StateDir(resolve_state_dir(state_dir))
    record = state.get("InferenceService", namespace, name)
    status = record.resource.status
    from kubeforge.local.manifests import resource_label

    label = resource_label("InferenceService", namespace, name)
    if not isinstance(record.resource, InferenceService) or status is None or not status.ready or not status.url:
        phase = status.phase if status is not None else "never run"
        raise StateError(f"{label} is not ready (phase {phase}); `kubeforge run -f ...` serves it")
    experiment = status.experiment_prefix
    if not experiment or not record.store:
        raise StateError(f"{label}: its state record names no experiment; run it again")
    return ServiceEndpoint(status.url, status.model_name or name, record.store, experiment)
