"""A small synchronous Kubernetes API client over plain HTTP, for tests and benchmarks.

Deliberately not the `kubernetes` package: a test should see the exact status codes and bodies
the server sends (409, 422, 410...), and a benchmark should not pay for model classes.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubeforge.testing.kube_objects import ApiError, Body, ResourceType

T = TypeVar("T")


class KubeClient:
    """Create/get/list/patch/delete objects by Kind on the API server at `url`."""

    def __init__(self, url: str = "", token: str | None = None) -> None:
        self._url = url
        self.token = token  # bearer token; None: anonymous
        self._discovered: list[ResourceType] | None = None

    @property
    def url(self) -> str:
        return self._url

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        """One HTTP call: (status, parsed JSON body). Errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as rsp:
                return rsp.status, json.loads(rsp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stream(self, path: str, timeout: float = 30) -> Any:
        """An open streaming GET (a watch) with this client's credentials: iterate its lines."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=timeout)

    def _ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        status, result = self.request(method, path, body, content_type)
        if status >= 400:
            result = result if isinstance(result, dict) else {}
            raise ApiError(status, result.get("reason", ""), result.get("message", ""), result.get("details"))
        return result

    def resource(self, kind: str, api_version: str | None = None) -> ResourceType:
        """A resource by Kind, plural or singular (and apiVersion where two groups share it).

        Resolved through the server's discovery, as kubectl does; re-read once on a miss
        (a CRD applied since the last look).
        """
        for refresh in (False, True):
            found = [rt for rt in self._discover(refresh)
                     if kind in (rt.kind, rt.plural, rt.singular or rt.kind.lower())
                     and (api_version is None or rt.api_version == api_version)]
            if len(found) > 1:
                found = [rt for rt in found if rt.group != "events.k8s.io"]  # `events`: the core ones
            if len(found) == 1:
                return found[0]
        raise KeyError(f"{'unknown' if not found else 'ambiguous'} resource {kind!r} ({api_version})")

    def _discover(self, refresh: bool) -> list[ResourceType]:
        if self._discovered is None or refresh:
            versions = [("", v) for v in self._ok("GET", "/api")["versions"]]
            versions += [(g["name"], g["preferredVersion"]["version"]) for g in self._ok("GET", "/apis")["groups"]]
            found: list[ResourceType] = []
            for group, version in versions:
                listing = self._ok("GET", f"/apis/{group}/{version}" if group else f"/api/{version}")
                names = [r["name"] for r in listing["resources"]]
                found += [
                    ResourceType(group, version, r["name"], r["kind"], namespaced=bool(r["namespaced"]),
                                 singular=r.get("singularName") or "",
                                 subresources=frozenset(n.split("/", 1)[1] for n in names
                                                        if n.startswith(r["name"] + "/")))
                    for r in listing["resources"] if "/" not in r["name"]
                ]
            self._discovered = found
        return self._discovered

    def path(self, rt: ResourceType, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None, **query: str) -> str:
        base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
        if rt.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{rt.plural}" + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")
        return base + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def create(self, body: Body, namespace: str | None = None) -> Body:
        rt = self.resource(body["kind"], body.get("apiVersion"))
        ns = namespace or body.get("metadata", {}).get("namespace") or ("default" if rt.namespaced else None)
        return self._ok("POST", self.path(rt, ns), body)

    def apply_crds(self, directory: str | Path) -> list[str]:
        """POST every CRD in `directory/*.yaml`; returns their names."""
        names = []
        for file in sorted(Path(directory).glob("*.yaml")):
            for doc in yaml.safe_load_all(file.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    names.append(self.create(doc)["metadata"]["name"])
        return names

    def get(self, kind: str, name: str, namespace: str | None = "default", api_version: str | None = None) -> Body:
        rt = self.resource(kind, api_version)
        return self._ok("GET", self.path(rt, namespace, name))

    def find(self, kind: str, name: str, namespace: str | None = "default",
             api_version: str | None = None) -> Body | None:
        """Like get(), but None when it does not exist."""
        rt = self.resource(kind, api_version)
        status, body = self.request("GET", self.path(rt, namespace, name))
        return body if status == 200 else None

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
             api_version: str | None = None) -> list[Body]:
        rt = self.resource(kind, api_version)
        query = {"labelSelector": label_selector} if label_selector else {}
        return list(self._ok("GET", self.path(rt, namespace, **query))["items"])

    def patch(self, kind: str, name: str, patch: Any, namespace: str | None = "default",
              subresource: str | None = None, content_type: str = "application/merge-patch+json",
              api_version: str | None = None) -> Body:
        rt = self.resource(kind, api_version)
        return self._ok("PATCH", self.path(rt, namespace, name, subresource), patch, content_type)

    def patch_status(self, kind: str, name: str, status: Body, namespace: str | None = "default",
                     api_version: str | None = None) -> Body:
        """Merge-patch `status` through the status subresource (as a controller would)."""
        rt = self.resource(kind, api_version)
        sub = "status" if "status" in rt.subresources else None
        return self.patch(kind, name, {"status": status}, namespace, sub, api_version=api_version)

    def delete(self, kind: str, name: str, namespace: str | None = "default", api_version: str | None = None,
               missing_ok: bool = False) -> Body | None:
        rt = self.resource(kind, api_version)
        status, body = self.request("DELETE", self.path(rt, namespace, name))
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise ApiError(status, body.get("reason", ""), body.get("message", ""), body.get("details"))
        return body

    @staticmethod
    def wait_for(fn: Callable[[], T], timeout: float = 20.0, interval: float = 0.05,
                 message: str = "condition") -> T:
        """Poll `fn` until it returns something truthy; that value is returned."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(ApiError):
                value = fn()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
            time.sleep(interval)
