"""A Kubernetes API emulator for tests and benchmarks: KMock's emulator, fixed where Kopf needs it.

`KubeEmulator` serves a subclass of `kmock.KubernetesEmulator` over real HTTP on 127.0.0.1 (a free
port) from its own thread and event loop, so a Kopf operator in another thread (`KopfThread`)
or another process talks to it exactly as to a cluster, through a kubeconfig.

Plain kmock 0.8 does not stamp uid/resourceVersion/generation/creationTimestamp, answers a failed
JSON-patch `test` with 500 (Kopf's finalizer patches need 422), cannot resume a watch from a
resourceVersion, can drop events between a list and its watch, and routes each request over every
request it ever served. The subclass keeps kmock's discovery endpoints and error rendering, and
serves resource requests from `kube_store.ObjectStore` (see there for the semantics) without
remembering them, so routing time stays flat however long a test runs.

Not emulated: schema validation (test manifests against the CRD schemas instead), admission,
RBAC, server-side apply field ownership (apply-patch is treated as a merge patch), strategic
merge of lists (treated as a merge patch), pagination (`limit` returns everything), controllers
(nothing runs Jobs or Deployments: tests play the controllers by patching status).
"""

from __future__ import annotations

import asyncio
import collections
import json
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

from kubeforge.testing.kopf_thread import KopfThread  # noqa: F401  (re-exported: one import for tests)
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_store import ApiError, Body, ObjectStore, ResourceType

T = TypeVar("T")

VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})

# The built-in resources an operator of ours touches; CRDs add theirs when POSTed.
BUILTINS: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, subresources=frozenset({"status"})),
    ResourceType("", "v1", "configmaps", "ConfigMap"),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "services", "Service", subresources=frozenset({"status"})),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount"),
    ResourceType("", "v1", "pods", "Pod", subresources=frozenset({"status"})),
    ResourceType("", "v1", "events", "Event"),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=frozenset({"status"})),
    ResourceType("apps", "v1", "deployments", "Deployment", subresources=frozenset({"status"})),
    ResourceType("batch", "v1", "jobs", "Job", subresources=frozenset({"status"})),
    ResourceType("events.k8s.io", "v1", "events", "Event"),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                 namespaced=False, subresources=frozenset({"status"})),
)


def _split_path(path: str) -> tuple[str, str, str | None, str, str | None, str | None] | None:
    """(group, version, namespace, plural, name, subresource) of a resource URL, else None.

    Own parser: kmock's cannot parse `/api/v1/namespaces` (it takes it for a namespace prefix).
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return group, version, namespace, rest[0], name, sub


@attrs.define(kw_only=True)
class KubeApiHandler(kmock.KubernetesEmulator):
    """kmock's emulator with the API semantics of `ObjectStore`; an aiohttp low-level handler."""

    store: ObjectStore = attrs.field(factory=ObjectStore)
    # (METHOD, plural) -> requests served: lets tests assert "nothing new was created".
    counts: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter)
    prune: bool = True  # prune unknown fields of custom resources by their CRD schema

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.register(BUILTINS)

    def register(self, types: Iterable[ResourceType]) -> None:
        """Make resources discoverable (kmock's discovery reads `resources`) and servable."""
        for rt in types:
            self.store.register([rt])
            info = self.resources[f"{rt.group}/{rt.version}/{rt.plural}" if rt.group else f"v1/{rt.plural}"]
            info.kind, info.namespaced, info.singular = rt.kind, rt.namespaced, rt.singular or rt.kind.lower()
            info.verbs, info.subresources = set(VERBS), set(rt.subresources)
            info.shortnames, info.categories = set(rt.shortnames), set(rt.categories)

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        parsed = _split_path(raw.path)
        try:
            if parsed is not None:
                return await self._serve_resource(raw, *parsed)
            return await self._serve_discovery(raw)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)

    async def _serve_discovery(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's DSL routing only sees requests listed in `_requests`: list it while it is served,
        # then forget it (kmock keeps them all, and routing walks them all: quadratic time).
        request = await rendering.Request._parse(raw)
        self._requests.append(request)
        try:
            return await kmock.RawHandler._handle(self, request)
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        finally:
            self._requests.remove(request)
            for payload in self._payloads:
                payload._requests.clear()

    async def _serve_resource(self, raw: aiohttp.web.BaseRequest, group: str, version: str,
                              namespace: str | None, plural: str, name: str | None,
                              sub: str | None) -> aiohttp.web.StreamResponse:
        rt = self.store.types.get((group, plural))
        if rt is None or rt.version != version:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({raw.path})")
        method, query = raw.method.upper(), raw.query
        self.counts[(method, plural)] += 1
        payload: Any = None
        if raw.can_read_body:
            try:
                payload = json.loads(await raw.read() or b"null")
            except ValueError:
                if "yaml" not in (raw.content_type or ""):
                    raise ApiError(400, "BadRequest", "the request body is not JSON") from None
                payload = yaml.safe_load(await raw.text())
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._serve_watch(raw, rt, namespace, name)
        result: Body
        if method == "GET" and name:
            result = self.store.get(rt, namespace, name)
        elif method == "GET":
            result = self.store.list(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"))
        elif method == "POST" and not name:
            if not isinstance(payload, dict):
                raise ApiError(400, "BadRequest", "the request body must be a JSON object")
            result = self.store.create(rt, namespace, payload)
            if plural == "customresourcedefinitions":
                result = self._establish_crd(rt, result)
            return aiohttp.web.json_response(result, status=201)
        elif method in ("PATCH", "PUT") and name:
            result = self.store.update(rt, namespace, name, sub, raw.content_type or "", payload,
                                       replace=method == "PUT")
        elif method == "DELETE" and name:
            result = self.store.delete(rt, namespace, name)
        elif method == "DELETE":
            items = self.store.list(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"))
            for obj in items["items"]:
                self.store.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            result = {"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw.path}")
        return aiohttp.web.json_response(result)

    def _establish_crd(self, rt: ResourceType, crd: Body) -> Body:
        spec, names = crd.get("spec", {}), crd.get("spec", {}).get("names", {})
        self.register(
            ResourceType(
                spec["group"], v["name"], names["plural"], names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=frozenset(v.get("subresources") or {}), singular=names.get("singular", ""),
                shortnames=frozenset(names.get("shortNames") or ()),
                categories=frozenset(names.get("categories") or ()),
                schema=(v.get("schema") or {}).get("openAPIV3Schema") if self.prune else None,
            )
            for v in spec.get("versions", []) if v.get("served", True)
        )
        conditions = [{"type": t, "status": "True", "reason": "InitialNamesAccepted",
                       "message": ""} for t in ("NamesAccepted", "Established")]
        return self.store.update(rt, None, crd["metadata"]["name"], "status", "application/merge-patch+json",
                                 {"status": {"acceptedNames": names, "conditions": conditions,
                                             "storedVersions": [v["name"] for v in spec.get("versions", [])]}})

    async def _serve_watch(self, raw: aiohttp.web.BaseRequest, rt: ResourceType, namespace: str | None,
                           name: str | None) -> aiohttp.web.StreamResponse:
        query = raw.query
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            watcher = self.store.subscribe(
                rt, namespace, name, query.get("labelSelector"), query.get("fieldSelector"),
                query.get("resourceVersion"), initial_bookmark=query.get("sendInitialEvents") == "true")
        except ApiError as exc:
            if exc.code != 410:
                raise
            # As a real server: an expired version is an ERROR event in a 200 stream, then EOF.
            await response.prepare(raw)
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        loop = asyncio.get_running_loop()
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        deadline = loop.time() + timeout if timeout else None
        try:
            await response.prepare(raw)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                batch = [event]
                while not watcher.queue.empty():  # write what is queued in one go
                    batch.append(watcher.queue.get_nowait())
                closing = None in batch
                chunk = b"".join(json.dumps(e).encode() + b"\n" for e in batch if e is not None)
                if chunk:
                    await response.write(chunk)
                if closing:
                    break
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self.store.unsubscribe(rt, watcher)
        return response


def kopf_peering_crds() -> list[Body]:
    """Kopf's peering CRDs, as the Helm chart installs them (without them a non-standalone Kopf
    pauses every watch: "peering CRD is missing")."""
    return [{
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{prefix}kopfpeerings.kopf.dev"},
        "spec": {"scope": scope, "group": "kopf.dev",
                 "names": {"kind": kind, "plural": f"{prefix}kopfpeerings", "singular": f"{prefix}kopfpeering"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"status": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
    } for scope, prefix, kind in (("Cluster", "cluster", "ClusterKopfPeering"), ("Namespaced", "", "KopfPeering"))]


class KubeEmulator(KubeClient):
    """The emulator served from a background thread: `start()`/`stop()` or `with KubeEmulator() as k:`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, history: int = 50_000,
                 garbage_collect: bool = True, prune: bool = True, workdir: str | Path | None = None) -> None:
        super().__init__()
        self.host, self._port = host, port
        self.handler = KubeApiHandler(store=ObjectStore(history=history, garbage_collect=garbage_collect),
                                      prune=prune)
        self._workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kube-emulator-"))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        self.kubeconfig_path.write_text(yaml.safe_dump(self.kubeconfig()))
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), which is waiting
            self._error = exc
            self._started.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.handler:  # kmock's root needs its feeder task for discovery responses
            server = aiohttp.web.Server(self.handler)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, self.host, self._port)
            await site.start()
            self._port = runner.addresses[0][1]
            self._started.set()
            await self._stopping.wait()
            self.handler.store.close_watches()  # lets open watch streams end before shutdown
            await asyncio.sleep(0.05)
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(15)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop (the store is not thread-safe) and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    # --- where it is -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self._workdir / "kubeconfig.yaml"

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "kube-emulator",
            "clusters": [{"name": "kube-emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-emulator", "user": {"token": "kube-emulator"}}],
            "contexts": [{"name": "kube-emulator",
                          "context": {"cluster": "kube-emulator", "user": "kube-emulator", "namespace": "default"}}],
        }

    def request_count(self, method: str, plural: str) -> int:
        return self.handler.counts[(method.upper(), plural)]
