"""RBAC in the Kubernetes emulator, and the Helm chart's RBAC judged by it.

The emulator authorizes every request against the Roles/ClusterRoles and bindings stored in it, as
kube-apiserver's RBAC authorizer does; the chart's rendered RBAC is installed there exactly as
`helm install` would (kubeforge.testing.chart_rbac). Every operator test already runs the operator
as the chart's ServiceAccount and fails on any refusal (the `kubeforge_operator` fixture); here:
the authorizer's own semantics and its 403 body, the step pods' ServiceAccount that may do nothing,
and the namespaced install.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from kubeforge.operator.settings import OperatorSettings
from kubeforge.testing.chart_rbac import chart_accounts, install_chart_rbac, operator_kubeconfig
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_emulator import KopfThread, KubeEmulator
from kubeforge.testing.kube_operator import build_operator, dataset_version, training_job

RBAC = "rbac.authorization.k8s.io/v1"


@pytest.fixture
def emu() -> Any:
    with KubeEmulator() as emulator:
        emulator.apply_crds("crds")
        for ns in ("t-1", "t-2"):
            emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        yield emulator


def account(emu: KubeEmulator, ns: str, name: str) -> KubeClient:
    """A client authenticated as a (new) ServiceAccount."""
    emu.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
    return emu.client(emu.service_account_token(ns, name))


def grant(emu: KubeEmulator, name: str, rules: list[dict[str, Any]], subject: dict[str, Any],
          namespace: str | None = None, cluster_role: bool = True) -> None:
    """A (Cluster)Role with `rules` bound to `subject`: cluster-wide, or in `namespace` by a RoleBinding."""
    role_kind = "ClusterRole" if cluster_role else "Role"
    role_meta = {"name": name} if cluster_role else {"name": name, "namespace": namespace}
    emu.create({"apiVersion": RBAC, "kind": role_kind, "metadata": role_meta, "rules": rules})
    binding_kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta = {"name": name, "namespace": namespace} if namespace else {"name": name}
    emu.create({"apiVersion": RBAC, "kind": binding_kind, "metadata": meta, "subjects": [subject],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}})


def sa(ns: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


# --- the authorizer -----------------------------------------------------------------------------


def test_a_missing_verb_is_403_with_the_api_servers_status_body(emu: KubeEmulator) -> None:
    client = account(emu, "t-1", "reader")
    grant(emu, "job-getter", [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}], sa("t-1", "reader"))
    status, body = client.request("GET", "/apis/batch/v1/namespaces/t-1/jobs")
    assert status == 403
    assert body == {
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 403, "reason": "Forbidden",
        "message": 'jobs.batch is forbidden: User "system:serviceaccount:t-1:reader" cannot list resource "jobs" '
                   'in API group "batch" in the namespace "t-1"',
        "details": {"group": "batch", "kind": "jobs"},
    }
    # The granted verb works (404: allowed, and there is no such Job); a named refusal names the object.
    assert client.request("GET", "/apis/batch/v1/namespaces/t-1/jobs/x")[0] == 404
    status, body = client.request("DELETE", "/apis/batch/v1/namespaces/t-1/jobs/x")
    assert status == 403 and body["details"] == {"group": "batch", "kind": "jobs", "name": "x"}
    assert body["message"].startswith('jobs.batch "x" is forbidden: User "system:serviceaccount:t-1:reader" '
                                      'cannot delete resource "jobs"')
    # Core group and cluster scope, in the API server's words.
    status, body = client.request("GET", "/api/v1/namespaces")
    assert status == 403 and body["message"] == (
        'namespaces is forbidden: User "system:serviceaccount:t-1:reader" cannot list resource "namespaces" '
        'in API group "" at the cluster scope')
    assert [(d[1].verb, d[1].resource) for d in emu.denials("system:serviceaccount:t-1:reader")] == [
        ("list", "jobs"), ("delete", "jobs"), ("list", "namespaces")]


def test_verbs_follow_the_http_method_and_subresources_need_their_own_grant(emu: KubeEmulator) -> None:
    client = account(emu, "t-1", "writer")
    grant(emu, "tj-writer", [{"apiGroups": ["kubeforge.io"], "resources": ["trainingjobs"],
                              "verbs": ["create", "get", "patch", "watch"]}], sa("t-1", "writer"))
    path = "/apis/kubeforge.io/v1alpha1/namespaces/t-1/trainingjobs"
    assert client.request("POST", path, training_job("a", "t-1", "d"))[0] == 201
    assert client.request("GET", f"{path}/a")[0] == 200
    assert client.request("GET", path)[0] == 403  # list is not watch
    with client.stream(f"{path}?watch=true&timeoutSeconds=1") as watch:
        assert watch.status == 200 and b'"name": "a"' in watch.read()
    merge = "application/merge-patch+json"
    assert client.request("PATCH", f"{path}/a", {"metadata": {"labels": {"x": "y"}}}, merge)[0] == 200
    assert client.request("PUT", f"{path}/a", emu.get("TrainingJob", "a", "t-1"))[0] == 403  # update != patch
    status, body = client.request("PATCH", f"{path}/a/status", {"status": {"phase": "Running"}}, merge)
    assert status == 403 and 'cannot patch resource "trainingjobs/status"' in body["message"]
    assert client.request("DELETE", path)[0] == 403  # deletecollection
    grant(emu, "tj-status", [{"apiGroups": ["kubeforge.io"], "resources": ["trainingjobs/status"],
                              "verbs": ["patch"]}], sa("t-1", "writer"))
    assert client.request("PATCH", f"{path}/a/status", {"status": {"phase": "Running"}}, merge)[0] == 200


def test_role_bindings_grant_in_their_namespace_only_and_resource_names_narrow(emu: KubeEmulator) -> None:
    client = account(emu, "t-1", "scoped")
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["only-this"]}]
    grant(emu, "cm-reader", rules, sa("t-1", "scoped"), namespace="t-2")  # a ClusterRole, bound in t-2
    assert client.request("GET", "/api/v1/namespaces/t-2/configmaps")[0] == 200
    assert client.request("GET", "/api/v1/namespaces/t-1/configmaps")[0] == 403
    assert client.request("GET", "/api/v1/configmaps")[0] == 403  # all namespaces = cluster scope
    assert client.request("GET", "/api/v1/namespaces/t-2/secrets/only-this")[0] == 404  # allowed, absent
    assert client.request("GET", "/api/v1/namespaces/t-2/secrets/other")[0] == 403
    assert client.request("GET", "/api/v1/namespaces/t-2/secrets")[0] == 403  # a list has no name
    # Removing the binding takes effect at once (the decision cache is dropped).
    emu.delete("RoleBinding", "cm-reader", "t-2")
    assert client.request("GET", "/api/v1/namespaces/t-2/configmaps")[0] == 403


def test_authentication_discovery_and_the_admin(emu: KubeEmulator) -> None:
    assert emu.client("not-a-token").request("GET", "/api")[0] == 401
    anonymous = KubeClient(emu.url)
    assert anonymous.request("GET", "/version")[0] == 200
    status, body = anonymous.request("GET", "/api/v1/namespaces/t-1/pods")
    assert status == 403 and 'User "system:anonymous"' in body["message"]
    assert anonymous.request("GET", "/apis")[0] == 403  # discovery is for authenticated users
    nobody = account(emu, "t-1", "nobody")  # authenticated, no grants: discovery only
    assert nobody.request("GET", "/apis")[0] == 200 and nobody.request("GET", "/api/v1")[0] == 200
    assert nobody.resource("TrainingJob").plural == "trainingjobs"
    assert nobody.request("GET", "/api/v1/namespaces/t-1/pods")[0] == 403
    assert emu.request("GET", "/api/v1/namespaces/t-1/secrets")[0] == 200  # system:masters
    with pytest.raises(KeyError, match="does not exist"):
        emu.service_account_token("t-1", "missing")


# --- the chart's RBAC -------------------------------------------------------------------------


def test_the_operator_logs_in_as_the_charts_service_account(emu: KubeEmulator) -> None:
    accounts = chart_accounts()
    assert accounts.operator_user == "system:serviceaccount:kubeforge:kubeforge"
    kubeconfig = operator_kubeconfig(emu)
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    operator = emu.client(token)
    # What the operator watches, it may list and watch (Deployments: Triton readiness, the bug this caught).
    for path in ("/apis/apps/v1/namespaces/t-1/deployments", "/apis/batch/v1/namespaces/t-1/jobs",
                 "/apis/kubeforge.io/v1alpha1/namespaces/t-1/trainingjobs"):
        assert operator.request("GET", path)[0] == 200, path
        with operator.stream(path + "?watch=true&timeoutSeconds=1") as watch:
            assert watch.status == 200, path
    # ...and no more than it needs: no Secrets, no deleting our resources, no RBAC.
    assert operator.request("GET", "/api/v1/namespaces/t-1/secrets")[0] == 403
    assert operator.request("DELETE", "/apis/kubeforge.io/v1alpha1/namespaces/t-1/trainingjobs/x")[0] == 403
    assert operator.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles")[0] == 403


STEP_FORBIDDEN = [
    ("GET", "/api/v1/namespaces/{ns}/secrets/kubeforge-store"),
    ("GET", "/api/v1/namespaces/{ns}/secrets"),
    ("GET", "/api/v1/namespaces/{ns}/pods"),
    ("GET", "/api/v1/namespaces/{ns}/configmaps/x"),
    ("POST", "/apis/batch/v1/namespaces/{ns}/jobs"),
    ("GET", "/apis/batch/v1/namespaces/{ns}/jobs?watch=true"),
    ("PATCH", "/apis/kubeforge.io/v1alpha1/namespaces/{ns}/trainingjobs/x"),
    ("PATCH", "/apis/kubeforge.io/v1alpha1/namespaces/{ns}/trainingjobs/x/status"),
    ("GET", "/apis/kubeforge.io/v1alpha1/namespaces/{ns}/datasetversions"),
    ("POST", "/api/v1/namespaces/{ns}/events"),
    ("DELETE", "/apis/apps/v1/namespaces/{ns}/deployments/x"),
    ("GET", "/api/v1/namespaces"),
]


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["t-1"]}], ids=["clusterwide", "namespaced"])
def test_the_step_service_account_can_do_nothing(emu: KubeEmulator, values: dict[str, Any]) -> None:
    """Steps read and write only the store: their ServiceAccount may not touch the Kubernetes API."""
    accounts = install_chart_rbac(emu, values)
    assert accounts.step is not None and accounts.step[1] == "kubeforge-step"
    step = emu.client(emu.service_account_token(*accounts.step))
    for ns in sorted({"t-1", accounts.step[0]}):
        for method, path in STEP_FORBIDDEN:
            body = {} if method in ("POST", "PATCH") else None
            status, answer = step.request(method, path.format(ns=ns), body, "application/merge-patch+json")
            assert (status, answer["reason"]) == (403, "Forbidden"), (method, path, answer)
    assert not [d for d in emu.denials() if d[0].name != accounts.step_user]


def test_a_namespaced_install_grants_only_in_the_watched_namespaces(emu: KubeEmulator) -> None:
    team = f"team-{uuid.uuid4().hex[:6]}"
    accounts = install_chart_rbac(emu, {"watchNamespaces": [team]})
    operator = emu.client(emu.service_account_token(*accounts.operator))
    assert operator.request("GET", f"/apis/batch/v1/namespaces/{team}/jobs")[0] == 200
    assert operator.request("GET", "/apis/batch/v1/namespaces/t-1/jobs")[0] == 403
    assert operator.request("GET", "/apis/batch/v1/jobs")[0] == 403
    # Kopf's discovery stays cluster-wide.
    assert operator.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")[0] == 200
    with operator.stream("/api/v1/namespaces?watch=true&timeoutSeconds=1") as watch:
        assert watch.status == 200


def test_a_clusterwide_operator_under_the_charts_rbac_is_refused_nothing(emu: KubeEmulator, tmp_path: Any) -> None:
    """The chart's default install: one operator for the whole cluster (cluster-wide lists and watches)."""
    settings = OperatorSettings(store=str(tmp_path / "store"), s3_endpoint="", progress_interval_seconds=1)
    registry, _ = build_operator(settings, emu)
    with KopfThread(registry, emu.kubeconfig_path, clusterwide=True):
        emu.create(dataset_version("v", "t-1"))
        emu.create(dataset_version("w", "t-2"))
        emu.wait_for(lambda: emu.list("Job", "t-1", "kubeforge.io/name=v")
                     and emu.list("Job", "t-2", "kubeforge.io/name=w"), message="a Job in each namespace")
        emu.wait_for(lambda: (emu.get("DatasetVersion", "w", "t-2").get("status") or {}).get("phase") == "Pending",
                     message="status written")
    assert emu.denials() == []
