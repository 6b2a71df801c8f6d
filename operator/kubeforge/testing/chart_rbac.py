"""The Helm chart's RBAC in the emulator: the operator logs in as the chart's ServiceAccount.

`install_chart_rbac(emulator)` renders helm/kubeforge with the Helm v4 SDK (PyPI
`helm-python-sdk`, once per process and set of values) and POSTs what it renders for RBAC (its
ServiceAccounts, ClusterRoles, Roles and their bindings) as the admin, exactly as `helm install`
would; the emulator then authorizes every request against those objects. So what the operator
may do in the tests is what the chart grants, not what the operator's code says it needs.

Needs the repository's helm/ folder (test infrastructure: not usable from an installed wheel).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubeforge.testing.kube_objects import ApiError
from kubeforge.testing.rbac_authorizer import UserInfo

CHART = Path(__file__).resolve().parents[3] / "helm" / "kubeforge"
RELEASE = NAMESPACE = "kubeforge"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")


@dataclass(frozen=True)
class ChartAccounts:
    """Who the chart makes: the operator's ServiceAccount and the step pods' (namespace, name)."""

    operator: tuple[str, str]
    step: tuple[str, str] | None
    objects: tuple[dict[str, Any], ...]

    @property
    def operator_user(self) -> str:
        return UserInfo.service_account(*self.operator).name

    @property
    def step_user(self) -> str | None:
        return UserInfo.service_account(*self.step).name if self.step else None


@functools.cache
def _render(values_json: str) -> ChartAccounts:
    import helm_python as helm

    if not CHART.is_dir():
        raise FileNotFoundError(f"{CHART}: the Helm chart is needed to install its RBAC (a source checkout)")
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    objects = [doc for path, text in sorted(manifests.items()) if not path.endswith("NOTES.txt")
               for doc in yaml.safe_load_all(text) if doc]
    operator = next(o for o in objects if o["kind"] == "Deployment"
                    and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "operator")
    pod = operator["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env") or []}
    step_name = env.get("KUBEFORGE_STEP_SERVICE_ACCOUNT") or ""
    step_account = next((o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == step_name),
                        None)
    return ChartAccounts(
        operator=(operator["metadata"].get("namespace") or NAMESPACE, pod["serviceAccountName"]),
        step=(step_account["metadata"]["namespace"], step_name) if step_account else None,
        objects=tuple(o for o in objects if o["kind"] in RBAC_KINDS),
    )


def chart_accounts(values: dict[str, Any] | None = None) -> ChartAccounts:
    return _render(json.dumps(values or {}, sort_keys=True))


def install_chart_rbac(emulator: Any, values: dict[str, Any] | None = None) -> ChartAccounts:
    """POST the chart's RBAC objects (and their namespaces) unless they are there already."""
    accounts = chart_accounts(values)
    namespaces = {o["metadata"]["namespace"] for o in accounts.objects if o["metadata"].get("namespace")}
    for ns in sorted(namespaces):
        _create(emulator, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for obj in accounts.objects:
        _create(emulator, obj)
    return accounts


def _create(emulator: Any, obj: dict[str, Any]) -> None:
    try:
        emulator.create(obj)
    except ApiError as exc:
        if exc.code != 409:
            raise


def operator_kubeconfig(emulator: Any, values: dict[str, Any] | None = None) -> Path:
    """A kubeconfig that logs in as the chart's operator ServiceAccount (installing the chart's RBAC)."""
    accounts = install_chart_rbac(emulator, values)
    token = emulator.service_account_token(*accounts.operator)
    return emulator.kubeconfig_for(token, "operator")
