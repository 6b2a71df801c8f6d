"""The in-memory object store behind `KubeEmulator`: the Kubernetes API semantics Kopf relies on.

Everything here is synchronous and runs on the emulator's event loop, so each operation is
atomic without locks: a watch subscribes and snapshots in one step and can never miss an event
written between its list and its watch.

What a real API server does that matters to an operator, and this store does too: metadata.uid,
a monotonic resourceVersion, generation bumped on spec changes, creationTimestamp; 409 for a
stale resourceVersion or a duplicate name; 422 for a failed JSON-patch `test`; the `status`
subresource (the main endpoint ignores status, /status ignores the rest); admission of every
write (`admission`: schemas, defaults, metadata rules); deletion that waits for finalizers;
garbage collection of dependents by ownerReferences; label and field selectors;
watches that resume from a resourceVersion (410 Gone once it fell out of the kept history).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer

from kubeforge.testing.admission import WriteOptions, admit
from kubeforge.testing.kube_objects import (
    ApiError,
    Body,
    ObjKey,
    ResourceType,
    merge_patch,
    now_iso,
    parse_field_selector,
    parse_label_selector,
    spec_of,
)

__all__ = ["ApiError", "Body", "ObjectStore", "ResourceType", "Watcher"]


@dataclass(eq=False)  # hashed by identity: kept in sets
class Watcher:
    """One open watch: its filter and the queue the store pushes matching events into."""

    namespace: str | None
    name: str | None
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[Body], bool]
    queue: asyncio.Queue[Body | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Body) -> bool:
        meta = obj.get("metadata", {})
        return ((self.namespace is None or meta.get("namespace") == self.namespace)
                and (self.name is None or meta.get("name") == self.name)
                and self.labels(meta.get("labels") or {}) and self.fields(obj))

    def offer(self, etype: str, obj: Body, old: Body | None) -> None:
        if self.matches(obj):
            self.queue.put_nowait({"type": etype, "object": obj})
        elif old is not None and etype == "MODIFIED" and self.matches(old):
            # It left the selection: a real server tells the watcher it is gone for it.
            self.queue.put_nowait({"type": "DELETED", "object": obj})


class ObjectStore:
    """Objects by resource, an event history per resource, and the open watches."""

    def __init__(self, history: int = 50_000, garbage_collect: bool = True) -> None:
        self.rv = 0
        self.garbage_collect = garbage_collect
        self._history = history
        self.objects: dict[tuple[str, str], dict[ObjKey, Body]] = collections.defaultdict(dict)
        self._logs: dict[tuple[str, str], collections.deque[tuple[int, Body]]] = {}
        self._floors: dict[tuple[str, str], int] = collections.defaultdict(int)
        self._watchers: dict[tuple[str, str], set[Watcher]] = collections.defaultdict(set)
        self.types: dict[tuple[str, str], ResourceType] = {}
        # Called with the resource type of every change (the RBAC authorizer drops its cache).
        self.listeners: list[Callable[[ResourceType], None]] = []

    # --- events ----------------------------------------------------------------------------
    def _emit(self, rt: ResourceType, etype: str, obj: Body, old: Body | None = None) -> None:
        log = self._logs.setdefault(rt.key, collections.deque())
        log.append((self.rv, {"type": etype, "object": obj}))
        while len(log) > self._history:
            # Remember how far back a resumed watch can still be served; older ones get 410.
            self._floors[rt.key] = log.popleft()[0]
        for watcher in list(self._watchers[rt.key]):
            watcher.offer(etype, obj, old)
        for listener in self.listeners:
            listener(rt)

    def subscribe(self, rt: ResourceType, namespace: str | None, name: str | None,
                  label_selector: str | None, field_selector: str | None,
                  since: str | None, initial_bookmark: bool = False) -> Watcher:
        """Open a watch; the replay (or the initial state) is queued before any live event."""
        watcher = Watcher(namespace, name, parse_label_selector(label_selector),
                          parse_field_selector(field_selector))
        if since in (None, "", "0"):
            for obj in self.objects[rt.key].values():
                watcher.offer("ADDED", obj, None)
            if initial_bookmark:
                watcher.queue.put_nowait(self.bookmark(rt, initial_end=True))
        else:
            try:
                since_rv = int(since)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
            if since_rv < self._floors[rt.key]:
                raise ApiError(410, "Expired", f"too old resource version: {since_rv} "
                                               f"({self._floors[rt.key]})")
            for rv, event in self._logs.get(rt.key, ()):
                if rv > since_rv:
                    watcher.offer(event["type"], event["object"], None)
        self._watchers[rt.key].add(watcher)
        return watcher

    def unsubscribe(self, rt: ResourceType, watcher: Watcher) -> None:
        self._watchers[rt.key].discard(watcher)

    def close_watches(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(None)

    def bookmark(self, rt: ResourceType, initial_end: bool = False) -> Body:
        meta: Body = {"resourceVersion": str(self.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}}

    # --- reads -----------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Body:
        obj = self.objects[rt.key].get((namespace or "", name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rt.plural}.{rt.group} "{name}" not found')
        return obj

    def list(self, rt: ResourceType, namespace: str | None,
             label_selector: str | None = None, field_selector: str | None = None) -> Body:
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        items = [obj for (ns, _), obj in self.objects[rt.key].items()
                 if (namespace is None or ns == namespace)
                 and labels(obj["metadata"].get("labels") or {}) and fields(obj)]
        return {"apiVersion": rt.api_version, "kind": f"{rt.kind}List",
                "metadata": {"resourceVersion": str(self.rv), "continue": ""}, "items": items}

    # --- writes ----------------------------------------------------------------------------
    def create(self, rt: ResourceType, namespace: str | None, body: Body, options: WriteOptions | None = None) -> Body:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        ns = (namespace or meta.get("namespace") or "default") if rt.namespaced else ""
        if rt.namespaced and namespace and meta.get("namespace") not in (None, namespace):
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
        if "status" in rt.subresources:
            obj.pop("status", None)  # a real server drops status on create when it is a subresource
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        obj = admit(rt, obj, None, None, options)  # 400/422 come before 409, as in a cluster
        meta = obj["metadata"]
        if (ns, meta["name"]) in self.objects[rt.key]:
            raise ApiError(409, "AlreadyExists", f'{rt.plural}.{rt.group} "{meta["name"]}" already exists')
        if rt.namespaced:
            meta["namespace"] = ns
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        self.rv += 1
        meta.update(uid=str(uuid.uuid4()), resourceVersion=str(self.rv), generation=1,
                    creationTimestamp=now_iso())
        self.objects[rt.key][(ns, meta["name"])] = obj
        self._emit(rt, "ADDED", obj)
        return obj

    def update(self, rt: ResourceType, namespace: str | None, name: str, subresource: str | None,
               content_type: str, payload: Any, replace: bool = False, options: WriteOptions | None = None) -> Body:
        """PATCH (merge, strategic treated as merge, JSON-patch) or PUT (replace=True)."""
        old = self.get(rt, namespace, name)
        if subresource not in (None, "status") or (subresource == "status" and "status" not in rt.subresources):
            raise ApiError(404, "NotFound", f"no subresource {subresource!r} for {rt.plural}")
        if replace:
            new = copy.deepcopy(payload)
        elif "json-patch" in content_type:
            try:
                new = jsonpatch.JsonPatch(payload).apply(old)  # returns a deep copy
            except jsonpatch.JsonPatchTestFailed as exc:
                raise ApiError(422, "Invalid", f"the JSON patch test operation failed: {exc}") from exc
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
        elif content_type.startswith("application/") and ("merge-patch" in content_type
                                                           or "apply-patch" in content_type):
            new = merge_patch(copy.deepcopy(old), payload)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch content type {content_type!r}")
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the result of the patch is not an object")

        sent_rv = (new.get("metadata") or {}).get("resourceVersion") if replace else \
            (payload.get("metadata") or {}).get("resourceVersion") if isinstance(payload, dict) else None
        if sent_rv is not None and str(sent_rv) != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural}.{rt.group} "{name}": '
                                            "the object has been modified; please apply your changes "
                                            "to the latest version and try again")
        new = admit(rt, self._keep_invariants(rt, old, new, subresource), old, subresource, options)
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if spec_of(new) != spec_of(old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        key = (old["metadata"].get("namespace", ""), name)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(rt, key, new)
        else:
            self.objects[rt.key][key] = new
            self._emit(rt, "MODIFIED", new, old)
        return new

    def _keep_invariants(self, rt: ResourceType, old: Body, new: Body, subresource: str | None) -> Body:
        """What a client cannot change: identity, timestamps, and the other side of /status."""
        if "status" in rt.subresources:
            if subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for fixed in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
        if old["metadata"].get("deletionTimestamp"):
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]  # cannot be undone
        else:
            meta.pop("deletionTimestamp", None)  # only DELETE sets it
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        return new

    def delete(self, rt: ResourceType, namespace: str | None, name: str) -> Body:
        old = self.get(rt, namespace, name)
        key = (old["metadata"].get("namespace", ""), name)
        if old["metadata"].get("deletionTimestamp"):
            return old  # already waiting for its finalizers
        if old["metadata"].get("finalizers"):
            new = copy.deepcopy(old)
            self.rv += 1
            new["metadata"].update(deletionTimestamp=now_iso(), deletionGracePeriodSeconds=0,
                                   resourceVersion=str(self.rv))
            self.objects[rt.key][key] = new
            self._emit(rt, "MODIFIED", new, old)
            return new
        self.rv += 1
        new = copy.deepcopy(old)
        new["metadata"]["resourceVersion"] = str(self.rv)
        self._remove(rt, key, new)
        return new

    def _remove(self, rt: ResourceType, key: ObjKey, last: Body) -> None:
        self.objects[rt.key].pop(key, None)
        self._emit(rt, "DELETED", last)
        if self.garbage_collect:
            self._collect_dependents(last["metadata"]["uid"])

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background cascading deletion: what names the removed object as its owner goes too."""
        for rkey, objs in list(self.objects.items()):
            rt = self.types.get(rkey)
            if rt is None:
                continue
            for obj in list(objs.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == owner_uid for ref in refs):
                    try:
                        self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                    except ApiError:
                        pass  # removed meanwhile by an earlier cascade

    def register(self, types: Iterable[ResourceType]) -> None:
        for rt in types:
            self.types[rt.key] = rt
