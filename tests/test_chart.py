"""The Helm chart, rendered and linted with the Helm v4 SDK (no helm binary, no cluster).

Every rendered object is validated against the Kubernetes OpenAPI schemas and the CRD templates
are compared with crds/. What the rendered RBAC allows is judged by the Kubernetes emulator's RBAC
authorizer (tests/test_emulator_rbac.py) and by every operator test, which runs the operator as the
chart's ServiceAccount; here only its shape (bindings, scopes, no wildcards, no Secrets).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from kubeforge.api.registry import KINDS
from kubeforge.cli import chart as chart_cli
from kubeforge.cli.main import app

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm/kubeforge"
CRDS = REPO / "crds"
RELEASE, NAMESPACE = "kubeforge", "kubeforge"
# A recent Kubernetes that kubernetes-validate ships schemas for (kind-config.yaml uses 1.31).
KUBE_VERSION = "1.31.0"
# Kinds of CRDs (ours, Kopf's, Prometheus Operator's): no built-in schema to validate against.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}

EXTERNAL_S3 = {"minio": {"enabled": False},
               "store": {"url": "s3://ml-data/kf", "endpoint": "https://s3.example.com", "existingSecret": "s3-creds"}}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-s3": EXTERNAL_S3,
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "no-crds": {"crds": {"enabled": False}},
    "serving": {"serving": {"gateway": "infra/public", "prometheusUrl": "http://prom.mon:9090",
                            "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                                 "annotations": {"grafana_folder": "ML"}}}},
    "crds-not-kept": {"crds": {"keep": False}},
    "everything-else": {
        **EXTERNAL_S3, "operator": {"replicas": 2, "priorityClassName": "system-cluster-critical",
                                    "nodeSelector": {"pool": "system"}, "extraEnv": [{"name": "X", "value": "1"}]},
        "jobs": {"activeDeadlineSeconds": 3600}, "rbac": {"create": True},
        "serviceAccount": {"annotations": {"iam": "role"}}, "images": {"pullPolicy": "Never"},
    },
}


@pytest.fixture(scope="module")
def loaded() -> Iterator[Any]:
    with helm.Chart.load(CHART) as chart:
        yield chart


def render(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders (hooks included), NOTES.txt left out."""
    manifests = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


# --- every value set: lint, render, validate ---------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lints_clean(name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; info (an icon is recommended) is fine.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_object_validates_against_the_kubernetes_schemas(loaded: Any, name: str) -> None:
    objects = render(loaded, VALUE_SETS[name])
    assert any(o["kind"] == "Deployment" for o in objects)
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        # strict: an unknown field (a typo in a template) is an error, as kubectl's strict validation.
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        assert set(obj["metadata"]) <= {"name", "namespace", "labels", "annotations"}


# --- the operator Deployment ---------------------------------------------------------------


def test_operator_env_is_exactly_the_settings_contract(loaded: Any) -> None:
    settings = pytest.importorskip("kubeforge.operator.settings")
    expected = {f"KUBEFORGE_{field.upper()}" for field in settings.OperatorSettings.model_fields}
    deployment = only(render(loaded), "Deployment", RELEASE)
    assert set(env_of(deployment)) == expected
    # The chart's values parse with the operator's own settings class.
    parsed = settings.OperatorSettings(**{k.removeprefix("KUBEFORGE_").lower(): v
                                          for k, v in env_of(deployment).items()})
    assert parsed.clusterwide and parsed.metrics_port == 8080 and parsed.health_port == 8081


def test_operator_pod_is_locked_down_and_probed(loaded: Any) -> None:
    deployment = only(render(loaded), "Deployment", RELEASE)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["args"] == ["operator", "run"]
    assert ":latest" not in container["image"] and container["image"].endswith(":0.1.0")


def test_store_settings_with_an_existing_s3(loaded: Any) -> None:
    objects = render(loaded, EXTERNAL_S3)
    env = env_of(only(objects, "Deployment", RELEASE))
    assert env["KUBEFORGE_STORE"] == "s3://ml-data/kf"
    assert env["KUBEFORGE_S3_ENDPOINT"] == "https://s3.example.com"
    assert env["KUBEFORGE_STORE_SECRET"] == "s3-creds"
    container = only(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    # No MinIO, no generated Secret: the chart never holds the user's credentials.
    assert not [o for o in objects if o["kind"] in ("Secret", "PersistentVolumeClaim")]
    assert not [o for o in objects if "minio" in o["metadata"]["name"]]


def test_bundled_minio_is_wired_to_the_operator(loaded: Any) -> None:
    objects = render(loaded)
    env = env_of(only(objects, "Deployment", RELEASE))
    service = only(objects, "Service", f"{RELEASE}-minio")
    assert env["KUBEFORGE_S3_ENDPOINT"] == f"{RELEASE}-minio.{NAMESPACE}.svc:9000"
    assert service["spec"]["ports"][0]["port"] == 9000
    secret = only(objects, "Secret")
    assert secret["metadata"]["name"] == env["KUBEFORGE_STORE_SECRET"]
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    minio = only(objects, "Deployment", f"{RELEASE}-minio")
    # MinIO's pods are what the Service selects, and its volume is the chart's claim.
    pod_labels = minio["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    claim = only(objects, "PersistentVolumeClaim")
    minio_pod = minio["spec"]["template"]["spec"]
    assert minio_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in minio_pod["containers"][0]["env"] if "valueFrom" in e}
    assert refs == {secret["metadata"]["name"]}
    job = only(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert 'mc mb --ignore-existing "store/kubeforge"' in job["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_store_without_minio_needs_an_endpoint_and_a_secret(loaded: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"store\.(endpoint|existingSecret) is required"):
        render(loaded, {"minio": {"enabled": False}})


def test_metrics_service_selects_the_operator_and_the_service_monitor_selects_it(loaded: Any) -> None:
    objects = render(loaded, VALUE_SETS["service-monitor"])
    pod_labels = only(objects, "Deployment", RELEASE)["spec"]["template"]["metadata"]["labels"]
    service = only(objects, "Service", f"{RELEASE}-metrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = only(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0] == {"port": "metrics", "path": "/metrics", "interval": "30s"}
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert not [o for o in render(loaded) if o["kind"] == "ServiceMonitor"]


# --- RBAC -----------------------------------------------------------------------------------


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_clusterwide_rbac_binds_the_operators_account_without_wildcards_or_secrets(loaded: Any) -> None:
    objects = render(loaded)
    role = only(objects, "ClusterRole")
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    binding = only(objects, "ClusterRoleBinding")
    account = only(objects, "ServiceAccount", RELEASE)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    assert only(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]["serviceAccountName"] == \
        account["metadata"]["name"]
    assert not any("*" in part for triple in triples(role["rules"]) for part in triple)
    assert not any(resource == "secrets" for _, resource, _ in triples(role["rules"]))


def test_namespaced_rbac_grants_namespaced_resources_only_in_the_watched_namespaces(loaded: Any) -> None:
    objects = render(loaded, VALUE_SETS["namespaced"])
    cluster_role = only(objects, "ClusterRole")
    cluster_resources = {r for _, r, _ in triples(cluster_role["rules"])}
    assert cluster_resources == {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert not {r for _, r, _ in triples(role["rules"])} & cluster_resources
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert env_of(only(objects, "Deployment", RELEASE))["KUBEFORGE_WATCH_NAMESPACES"] == "team-a,team-b"
    # Jobs in each watched namespace find the store Secret and the step ServiceAccount there.
    secrets = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "Secret")
    assert secrets == ["kubeforge", "team-a", "team-b"]
    steps = [o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"].endswith("-step")]
    assert sorted(o["metadata"]["namespace"] for o in steps) == ["team-a", "team-b"]
    assert all(o["automountServiceAccountToken"] is False for o in steps)
    # No binding names the step account: steps get no API rights at all.
    assert not [s for b in [*bindings, only(objects, "ClusterRoleBinding")] for s in b["subjects"]
                if s["name"].endswith("-step")]


def test_step_service_account_name_follows_its_values(loaded: Any) -> None:
    def step_account(values: dict[str, Any]) -> str:
        return env_of(only(render(loaded, values), "Deployment", RELEASE))["KUBEFORGE_STEP_SERVICE_ACCOUNT"]

    assert step_account({}) == f"{RELEASE}-step"
    assert step_account({"stepServiceAccount": {"create": False, "name": "ml-steps"}}) == "ml-steps"
    # Neither created nor named: the namespace's default account, not a name that does not exist.
    assert step_account({"stepServiceAccount": {"create": False}}) == ""


def test_no_rbac_when_rbac_create_is_false(loaded: Any) -> None:
    kinds = {o["kind"] for o in render(loaded, {"rbac": {"create": False}})}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


# --- peering --------------------------------------------------------------------------------


def test_peering_object_matches_the_operators_peering_name(loaded: Any) -> None:
    objects = render(loaded)
    peering = only(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == env_of(only(objects, "Deployment", RELEASE))["KUBEFORGE_PEERING_NAME"]
    # Created after the release's CRDs exist.
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    namespaced = render(loaded, VALUE_SETS["namespaced"])
    assert sorted(o["metadata"]["namespace"] for o in namespaced if o["kind"] == "KopfPeering") == ["team-a", "team-b"]
    assert not [o for o in namespaced if o["kind"] == "ClusterKopfPeering"]


def test_replicas_get_distinct_peering_priorities_unless_one_is_fixed(loaded: Any) -> None:
    settings = pytest.importorskip("kubeforge.operator.settings")
    env = env_of(only(render(loaded, {"operator": {"replicas": 2}}), "Deployment", RELEASE))
    # Empty: each pod draws its own (Kopf pauses every operator of a priority tie).
    assert env["KUBEFORGE_PEERING_PRIORITY"] == "" and env["KUBEFORGE_PEERING_LIFETIME_SECONDS"] == "60"
    assert len({settings.OperatorSettings(peering_priority="").peering_priority for _ in range(20)}) > 1
    fixed = env_of(only(render(loaded, {"peering": {"priority": 2000000}}), "Deployment", RELEASE))
    assert fixed["KUBEFORGE_PEERING_PRIORITY"] == "2000000"
    with pytest.raises(helm.HelmRenderError, match=r"peering\.priority must be empty with operator\.replicas > 1"):
        render(loaded, {"operator": {"replicas": 2}, "peering": {"priority": 5}})


# --- CRDs -----------------------------------------------------------------------------------


def rendered_crds(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "CustomResourceDefinition"}


def test_chart_crds_are_the_generated_crds(loaded: Any) -> None:
    crds = rendered_crds(render(loaded))
    generated = {p.name.removesuffix(".yaml"): yaml.safe_load(p.read_text()) for p in CRDS.glob("*.kubeforge.io.yaml")}
    assert set(crds) == set(generated) | {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    for name, expected in generated.items():
        got = crds[name]
        assert got["spec"] == expected["spec"], f"{name}: the chart's CRD differs from crds/"
        assert got["metadata"]["labels"].items() >= expected["metadata"]["labels"].items()
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crds_gated_by_crds_enabled_and_keep(loaded: Any) -> None:
    assert rendered_crds(render(loaded, {"crds": {"enabled": False}})) == {}
    not_kept = rendered_crds(render(loaded, {"crds": {"keep": False}}))
    assert len(not_kept) == len(KINDS) + 2  # ours and the two Kopf peering CRDs
    assert all("annotations" not in crd["metadata"] for crd in not_kept.values())


def test_kopf_peering_crds_are_what_kopf_expects(loaded: Any) -> None:
    crds = rendered_crds(render(loaded))
    for name, scope, kind in (("kopfpeerings.kopf.dev", "Namespaced", "KopfPeering"),
                              ("clusterkopfpeerings.kopf.dev", "Cluster", "ClusterKopfPeering")):
        spec = crds[name]["spec"]
        assert (spec["group"], spec["scope"], spec["names"]["kind"]) == ("kopf.dev", scope, kind)
        version = spec["versions"][0]
        assert version["name"] == "v1" and version["storage"] is True
        # Kopf keeps its keep-alives under status, keyed by operator identity.
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_chart_sync_check_passes_on_the_committed_chart() -> None:
    result = CliRunner().invoke(app, ["chart", "sync", "--chart", str(CHART), "--crds", str(CRDS), "--check"])
    assert result.exit_code == 0, result.output


def test_chart_sync_detects_and_repairs_drift(tmp_path: Path) -> None:
    chart = tmp_path / "kubeforge"
    shutil.copytree(CHART, chart)
    edited = chart / "templates/crds/trainingjobs.kubeforge.io.yaml"
    edited.write_text(edited.read_text().replace("minimum: 1", "minimum: 0", 1))
    stale = chart / "templates/crds/removed.kubeforge.io.yaml"
    stale.write_text("{{- if false }}{{- end }}\n")
    args = ["chart", "sync", "--chart", str(chart), "--crds", str(CRDS)]
    result = CliRunner().invoke(app, [*args, "--check"])
    assert result.exit_code == 1
    assert f"differs {edited}" in result.output and f"extra {stale}" in result.output
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--check"]).exit_code == 0
    assert not stale.exists()


def test_crd_with_template_braces_is_refused() -> None:
    crd = yaml.safe_load((CRDS / "benchmarks.kubeforge.io.yaml").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "use {{ .Values }}"
    with pytest.raises(chart_cli.ChartSyncError, match="Helm would evaluate"):
        chart_cli.crd_template(crd, "benchmarks.kubeforge.io.yaml")


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"minoi": {"enabled": True}}, "minoi"),                       # a typo'd top-level key
        ({"operator": {"resource": {}}}, "resource"),                  # a typo'd nested key
        ({"operator": {"image": {"tag": "latest"}}}, "/operator/image/tag"),
        ({"store": {"url": "minio://bucket"}}, "/store/url"),
        ({"images": {"pullPolicy": "Sometimes"}}, "/images/pullPolicy"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ],
)
def test_values_schema_rejects_bad_values(loaded: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        loaded.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(loaded, values)


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    ancestors: list[tuple[int, bool]] = []  # (indent, has a comment above) of the enclosing keys
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z0-9_]+):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        following = next((ln for ln in lines[i + 1:] if ln.strip()), "")
        is_parent = not rest.strip() and len(following) - len(following.lstrip()) > indent
        # A leaf needs a comment, unless it is part of a documented value (resources.requests.cpu).
        if not is_parent and not commented and not any(doc for _, doc in ancestors):
            undocumented.append(key)
        if is_parent:
            ancestors.append((indent, commented))
    assert undocumented == []


def test_default_values_validate_and_notes_render(loaded: Any) -> None:
    loaded.validate_schema({})
    notes = next(t for p, t in loaded.render(values={}, name=RELEASE, namespace=NAMESPACE).items()
                 if p.endswith("NOTES.txt"))
    assert f"deployment/{RELEASE}" in notes and "s3://kubeforge/store" in notes


# --- serving: the Grafana dashboard and rollout settings ----------------------------------------


def test_grafana_dashboard_is_off_by_default_and_a_sidecar_configmap_when_on(loaded: Any) -> None:
    import json

    assert not [o for o in render(loaded) if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]
    objects = render(loaded, VALUE_SETS["serving"])
    cm = only(objects, "ConfigMap", f"{RELEASE}-triton-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["kubeforge-triton.json"])
    assert dashboard["uid"] == "kubeforge-triton"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("nv_inference_request_success", "nv_inference_request_duration_us",
                   "nv_inference_queue_duration_us", "nv_inference_count", "nv_inference_exec_count"):
        assert metric in exprs
    env = env_of(only(objects, "Deployment", RELEASE))
    assert env["KUBEFORGE_GATEWAY"] == "infra/public" and env["KUBEFORGE_PROMETHEUS_URL"] == "http://prom.mon:9090"


@pytest.mark.parametrize(("values", "error"), [
    ({"serving": {"grafanaDashboard": {"enabeld": True}}}, "additional properties 'enabeld' not allowed"),
    ({"serving": {"gateway": "Not A Gateway"}}, "'Not A Gateway' does not match pattern"),
])
def test_serving_values_are_typed(loaded: Any, values: dict[str, Any], error: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(error)):
        render(loaded, values)
