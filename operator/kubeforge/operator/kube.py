"""A thin Kubernetes API wrapper over the `kubernetes` client, configured from Kopf's login.

Plain dicts in and out (what the builders make), JSON merge patches, and the two answers
reconciliation cares about turned into values: 404 -> None, 409 on create -> the existing
object. Credentials come from the `kopf.ConnectionInfo` of Kopf's login (service account in a
pod, kubeconfig elsewhere) so the operator and its Kubernetes calls use the same identity;
they are never logged.
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
from typing import Any
from urllib.parse import quote, urlencode

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


class KubeError(RuntimeError):
    """An API call failed; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def api_path(api_version: str, plural: str, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{quote(namespace)}")
    parts.append(plural)
    if name:
        parts.append(quote(name))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


# kind -> plural of everything the operator writes or reads (see rbac.REQUIRED_RULES).
PLURALS = {"ConfigMap": "configmaps", "Service": "services", "Job": "jobs", "Deployment": "deployments",
           "Pod": "pods", "Event": "events", "DatasetVersion": "datasetversions", "TrainingJob": "trainingjobs",
           "Benchmark": "benchmarks", "InferenceService": "inferenceservices", "PredictionJob": "predictionjobs",
           # Serving rollouts (builders_rollout), where the cluster serves their APIs.
           "HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes", "ScaledObject": "scaledobjects",
           "HorizontalPodAutoscaler": "horizontalpodautoscalers"}


def _write_temp(data: str | bytes, suffix: str) -> str:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    with tempfile.NamedTemporaryFile(delete=False, suffix=suffix) as fh:
        fh.write(raw)
    return fh.name


def configuration(info: kopf.ConnectionInfo) -> k8s.Configuration:
    """A kubernetes-client Configuration equivalent to Kopf's ConnectionInfo."""
    cfg = k8s.Configuration()
    cfg.host = info.server.rstrip("/")
    cfg.verify_ssl = not info.insecure
    if info.ca_path:
        cfg.ssl_ca_cert = str(info.ca_path)
    elif info.ca_data:
        cfg.ssl_ca_cert = _write_temp(info.ca_data, ".crt")
    if info.certificate_path:
        cfg.cert_file = str(info.certificate_path)
    elif info.certificate_data:
        cfg.cert_file = _write_temp(info.certificate_data, ".crt")
    if info.private_key_path:
        cfg.key_file = str(info.private_key_path)
    elif info.private_key_data:
        cfg.key_file = _write_temp(info.private_key_data, ".key")
    if info.token:
        cfg.api_key = {"authorization": info.token}
        cfg.api_key_prefix = {"authorization": info.scheme or "Bearer"}
    elif info.username and info.password:
        cfg.username, cfg.password = info.username, info.password
    if info.proxy_url:
        cfg.proxy = info.proxy_url
    return cfg


class Kube:
    """Sync API calls (Kopf runs sync handlers in its thread pool)."""

    def __init__(self, cfg: k8s.Configuration, timeout: float = 30.0) -> None:
        self._api = k8s.ApiClient(cfg)
        self._auth: dict[str, str] = {}
        token = cfg.get_api_key_with_prefix("authorization")
        if token:
            self._auth["Authorization"] = token
        elif cfg.username:
            self._auth["Authorization"] = cfg.get_basic_auth_token()
        self.timeout = timeout
        self.host = cfg.host

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo) -> Kube:
        return cls(configuration(info))

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              query: dict[str, str] | None = None) -> Any:
        url = self.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type, **self._auth}
        try:
            resp = self._api.call_api(method, url, header_params=headers,
                                      body=body, _request_timeout=self.timeout)  # the client encodes JSON
            data = resp.read() if hasattr(resp, "read") else resp.data
        except ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc)) from None
        if resp.status >= 400:
            raise KubeError(resp.status, _reason_text(data))
        return json.loads(data) if data else None

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves `plural` in `group/version` (discovery: a CRD such as Gateway API's
        HTTPRoute or KEDA's ScaledObject is installed). Discovery is open to every authenticated user."""
        try:
            found = self._call("GET", f"/apis/{group}/{version}") or {}
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", api_path(api_version, PLURALS[kind], namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None,
             labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        out = self._call("GET", api_path(api_version, PLURALS[kind], namespace), query=query) or {}
        items = out.get("items") or []
        # Filter here too: an API that ignores the selector must not widen what we act on.
        return [i for i in items if not labels or
                all((i.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items())]

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create `obj`; (the object, True) or, when it already exists, (the existing one, False)."""
        meta = obj["metadata"]
        path = api_path(obj["apiVersion"], PLURALS[obj["kind"]], meta.get("namespace"))
        try:
            return self._call("POST", path, obj), True
        except KubeError as exc:
            if exc.status != 409:
                raise
        existing = self.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if existing is None:  # deleted in between: the next reconcile creates it
            raise KubeError(409, f"{obj['kind']} {meta['name']} conflicted and vanished")
        return existing, False

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        return self._call("PATCH", api_path(api_version, PLURALS[kind], namespace, name, subresource), patch,
                          content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation (a Job's pods go too); False when it was already gone."""
        try:
            self._call("DELETE", api_path(api_version, PLURALS[kind], namespace, name),
                       {"propagationPolicy": "Background"})
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise


def _reason(exc: ApiException) -> str:
    return _reason_text(exc.body) or str(exc.reason)


def _reason_text(data: Any) -> str:
    try:
        body = json.loads(data)
        return str(body.get("message") or body)[:500]
    except (TypeError, ValueError, AttributeError):
        return str(data)[:500]


class KubeHolder:
    """The current Kube client, replaced at every (re-)login; one per operator instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kube: Kube | None = None

    def set(self, info: kopf.ConnectionInfo) -> None:
        with self._lock:
            self._kube = Kube.from_connection(info)

    def set_client(self, kube: Kube) -> None:
        with self._lock:
            self._kube = kube

    @property
    def kube(self) -> Kube:
        with self._lock:
            if self._kube is None:
                raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=5)
            return self._kube
