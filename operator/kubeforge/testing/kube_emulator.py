"""A Kubernetes API emulator for tests and benchmarks: KMock's emulator, fixed where Kopf needs it,
and refusing on every request what kube-apiserver refuses.

`KubeEmulator` serves a subclass of `kmock.KubernetesEmulator` over real HTTP on 127.0.0.1 (a free
port) from its own thread and event loop, so a Kopf operator in another thread (`KopfThread`)
or another process talks to it exactly as to a cluster, through a kubeconfig.

Plain kmock 0.8 does not stamp uid/resourceVersion/generation/creationTimestamp, answers a failed
JSON-patch `test` with 500 (Kopf's finalizer patches need 422), cannot resume a watch from a
resourceVersion, can drop events between a list and its watch, and routes each request over every
request it ever served. The subclass keeps kmock's discovery endpoints and error rendering, and
serves resource requests from `kube_store.ObjectStore` (see there for the semantics) without
remembering them, so routing time stays flat however long a test runs.

Enforced on every request, as a cluster does:
- Authentication: a bearer token per user. `kubeconfig_path` (and this client) is the admin, in
  `system:masters`; `service_account_token(ns, name)` gives an existing ServiceAccount's token,
  `kubeconfig_for(token)` a kubeconfig for it; no token is `system:anonymous`; an unknown one 401.
- RBAC (`rbac_authorizer`): Roles, ClusterRoles and their bindings stored here decide every
  resource request (verb from the method, subresources as `jobs/status`, namespace or cluster
  scope, resourceNames); a refusal is the API server's 403 Status, and is recorded (`denials()`).
  Discovery paths are open to authenticated users. The operator's tests install the Helm chart's
  rendered RBAC (`chart_rbac`) and run the operator as the chart's ServiceAccount.
- Admission (`admission`) of every create, update, patch and status write: custom resources by
  their CRD's openAPIV3Schema (`crd_schema`: pruning, structural defaults, types/enums/ranges/
  lengths/patterns/items/required/nullable/formats, CEL rules with oldSelf, 422 naming each
  field); built-in kinds by the Kubernetes 1.31 OpenAPI schemas (`core_schema`, 400 for a wrong
  type, 422 otherwise) plus kube-apiserver's rules for names, labels, annotations, Jobs,
  Deployments and pod templates (`object_meta`); unknown fields dropped with a Warning header, or
  refused with 400 under `?fieldValidation=Strict`. A write that changes a section of a custom
  resource re-validates that section only (validation ratcheting, Kubernetes 1.30+).

Not emulated: built-in defaulting (a Job's backoffLimit, a pod's restartPolicy...) and most of the
hand-written validation of built-in kinds (immutable fields of Jobs and Deployments, resource
quantities' syntax); CEL rules inside list items and map values and `messageExpression`; aggregated
ClusterRoles, impersonation, RBAC escalation checks, admission webhooks, quotas, Pod Security
admission; server-side apply field ownership (apply-patch is treated as a merge patch), strategic
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

from kubeforge.testing.admission import WriteOptions
from kubeforge.testing.crd_schema import CrdSchema
from kubeforge.testing.kopf_thread import KopfThread  # noqa: F401  (re-exported: one import for tests)
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_store import ApiError, Body, ObjectStore, ResourceType
from kubeforge.testing.rbac_authorizer import (
    AUTHENTICATED,
    MASTERS,
    RBAC_GROUP,
    Attributes,
    RbacAuthorizer,
    UserInfo,
    request_verb,
)

T = TypeVar("T")

VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})

# The built-in resources an operator of ours touches; CRDs add theirs when POSTed.
def _builtin(group: str, version: str, plural: str, kind: str, namespaced: bool = True,
             status: bool = False) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced=namespaced,
                        subresources=frozenset({"status"}) if status else frozenset(), builtin=True)


BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", namespaced=False, status=True),
    _builtin("", "v1", "configmaps", "ConfigMap"),
    _builtin("", "v1", "secrets", "Secret"),
    _builtin("", "v1", "services", "Service", status=True),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount"),
    _builtin("", "v1", "pods", "Pod", status=True),
    _builtin("", "v1", "events", "Event"),
    _builtin("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status=True),
    _builtin("apps", "v1", "deployments", "Deployment", status=True),
    _builtin("batch", "v1", "jobs", "Job", status=True),
    _builtin("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", status=True),
    _builtin("events.k8s.io", "v1", "events", "Event"),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
             namespaced=False, status=True),
    _builtin(RBAC_GROUP, "v1", "roles", "Role"),
    _builtin(RBAC_GROUP, "v1", "rolebindings", "RoleBinding"),
    _builtin(RBAC_GROUP, "v1", "clusterroles", "ClusterRole", namespaced=False),
    _builtin(RBAC_GROUP, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
)

# The tests' own client: in `system:masters`, which RBAC never refuses (as kind's kubeconfig).
ADMIN = UserInfo("kubernetes-admin", (MASTERS, AUTHENTICATED))
ADMIN_TOKEN = "kube-emulator-admin"


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
    prune: bool = True  # admit custom resources by their CRD schema (prune, default, validate)
    authorizer: RbacAuthorizer = attrs.field(default=None)
    # Every refused request (user, what it asked): lets a test prove nobody was refused.
    denials: list[tuple[UserInfo, Attributes]] = attrs.field(factory=list)
    # Every write admission refused (user, request, message): an operator's invalid object or status.
    rejected: list[tuple[UserInfo, str, str]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.authorizer = RbacAuthorizer(self.store.objects)
        self.authorizer.issue(ADMIN, ADMIN_TOKEN)
        self.store.listeners.append(self._on_change)
        self.register(BUILTINS)

    def _on_change(self, rt: ResourceType) -> None:
        if rt.group == RBAC_GROUP:
            self.authorizer.invalidate()

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
        user = None
        try:
            user = self.authorizer.authenticate(raw.headers.get("Authorization"))
            if parsed is not None:
                return await self._serve_resource(raw, user, *parsed)
            self.authorizer.authorize_path(user, raw.method, raw.path)
            return await self._serve_discovery(raw)
        except ApiError as exc:
            if getattr(exc, "admission", False) and user is not None:
                self.rejected.append((user, f"{raw.method} {raw.path_qs}", exc.message))
            return aiohttp.web.json_response(exc.status(), status=exc.code)

    def _authorize(self, user: UserInfo, raw: aiohttp.web.BaseRequest, rt: ResourceType, namespace: str | None,
                   name: str | None, sub: str | None) -> None:
        query = raw.query
        watch = query.get("watch") in ("true", "1")
        verb = request_verb(raw.method, name, watch)
        if name is None and verb in ("list", "watch"):
            # A list or watch of one object by its name is authorized for that name (as kube-apiserver).
            selector = query.get("fieldSelector") or ""
            if selector.startswith("metadata.name=") and "," not in selector:
                name = selector.split("=", 1)[1]
        attrs = Attributes(verb, rt.group, rt.plural, sub, namespace if rt.namespaced else None, name)
        if not self.authorizer.allowed(user, attrs):
            self.denials.append((user, attrs))
            self.authorizer.authorize(user, attrs)

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

    async def _serve_resource(self, raw: aiohttp.web.BaseRequest, user: UserInfo, group: str, version: str,
                              namespace: str | None, plural: str, name: str | None,
                              sub: str | None) -> aiohttp.web.StreamResponse:
        rt = self.store.types.get((group, plural))
        if rt is None or rt.version != version:
            if AUTHENTICATED not in user.groups:  # an anonymous request learns nothing
                self._authorize(user, raw, ResourceType(group, version, plural, plural), namespace, name, sub)
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({raw.path})")
        self._authorize(user, raw, rt, namespace, name, sub)
        method, query = raw.method.upper(), raw.query
        options = WriteOptions.from_query(query) if method in ("POST", "PUT", "PATCH") else None
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
            result = self.store.create(rt, namespace, payload, options)
            if plural == "customresourcedefinitions":
                result = self._establish_crd(rt, result)
            return self._respond(result, options, status=201)
        elif method in ("PATCH", "PUT") and name:
            result = self.store.update(rt, namespace, name, sub, raw.content_type or "", payload,
                                       replace=method == "PUT", options=options)
            if plural == "customresourcedefinitions" and sub is None:
                result = self._establish_crd(rt, result)  # a changed schema applies from now on
            return self._respond(result, options)
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

    @staticmethod
    def _respond(result: Body, options: WriteOptions | None, status: int = 200) -> aiohttp.web.Response:
        response = aiohttp.web.json_response(result, status=status)
        for warning in (options.warnings if options else ())[:50]:
            # RFC 7234 warn-text: a quoted string, inner quotes escaped (as kube-apiserver sends it).
            text = warning.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
            response.headers.add("Warning", f'299 - "{text}"')
        return response

    def _establish_crd(self, rt: ResourceType, crd: Body) -> Body:
        spec, names = crd.get("spec", {}), crd.get("spec", {}).get("names", {})
        types = []
        for v in spec.get("versions", []):
            if not v.get("served", True):
                continue
            schema = (v.get("schema") or {}).get("openAPIV3Schema") if self.prune else None
            types.append(ResourceType(
                spec["group"], v["name"], names["plural"], names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=frozenset(v.get("subresources") or {}), singular=names.get("singular", ""),
                shortnames=frozenset(names.get("shortNames") or ()),
                categories=frozenset(names.get("categories") or ()), schema=schema,
                # Compiled once here, used on every write of the kind (validators, CEL programs).
                crd=CrdSchema(names["kind"], spec["group"], v["name"], schema) if schema else None,
            ))
        self.register(types)
        for new in types:  # stored objects read as the new schema says (pruned and defaulted on read)
            if new.crd is not None:
                objects = self.store.objects[new.key]
                for key, obj in list(objects.items()):
                    objects[key] = new.crd.admit(obj, None, None)
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
        super().__init__(token=ADMIN_TOKEN)
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
        """The admin's kubeconfig (`system:masters`: what `kind` gives its creator)."""
        return self._workdir / "kubeconfig.yaml"

    def kubeconfig(self, token: str = ADMIN_TOKEN, user: str = "kube-emulator") -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "kube-emulator",
            "clusters": [{"name": "kube-emulator", "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "kube-emulator",
                          "context": {"cluster": "kube-emulator", "user": user, "namespace": "default"}}],
        }

    # --- who calls -------------------------------------------------------------------------
    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token of an existing ServiceAccount (what the kubelet mounts into its pods)."""
        if self.find("ServiceAccount", name, namespace) is None:
            raise KeyError(f"ServiceAccount {namespace}/{name} does not exist")
        return self.call(lambda: self.handler.authorizer.issue(UserInfo.service_account(namespace, name)))

    def user_token(self, name: str, groups: tuple[str, ...] = ()) -> str:
        return self.call(lambda: self.handler.authorizer.issue(UserInfo(name, (*groups, AUTHENTICATED))))

    def kubeconfig_for(self, token: str, label: str) -> Path:
        """A kubeconfig file that logs in with `token` (e.g. an operator's ServiceAccount)."""
        path = self._workdir / f"kubeconfig-{label}.yaml"
        path.write_text(yaml.safe_dump(self.kubeconfig(token, label)))
        return path

    def client(self, token: str) -> KubeClient:
        """A client of this server that authenticates with `token` instead of the admin's."""
        return KubeClient(self.url, token=token)

    def denials(self, user: str | None = None) -> list[tuple[UserInfo, Attributes]]:
        """Requests RBAC refused so far (of `user` when given)."""
        return self.call(lambda: [d for d in self.handler.denials if user is None or d[0].name == user])

    def rejected_writes(self, user: str | None = None) -> list[tuple[UserInfo, str, str]]:
        """Writes admission refused so far (400/422: schemas, metadata rules), of `user` when given."""
        return self.call(lambda: [r for r in self.handler.rejected if user is None or r[0].name == user])

    def request_count(self, method: str, plural: str) -> int:
        return self.handler.counts[(method.upper(), plural)]
