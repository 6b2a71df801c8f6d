"""The Kubernetes emulator (KMock's, subclassed) and a real Kopf operator against it, over HTTP.

Emulated: the Kubernetes API server (no cluster on these machines). Everything the operator
tests rely on is proven here against the real Kopf: stamped metadata, 409/422, resumable watches,
CRD discovery, the status subresource, finalizers, garbage collection, pruning, selectors.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any

import kopf
import pytest

from kubeforge.testing.kube_emulator import KubeEmulator

GROUP, VERSION, PLURAL = "demo.kubeforge.io", "v1", "widgets"
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP, "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": PLURAL, "singular": "widget", "listKind": "WidgetList"},
        "versions": [{
            "name": VERSION, "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}},
        }],
    },
}


@pytest.fixture(scope="module")
def emu(kube_emulator: KubeEmulator) -> KubeEmulator:
    """The module's emulator with the demo Widget CRD POSTed (as `kubectl apply` would)."""
    kube_emulator.create(WIDGET_CRD)
    return kube_emulator


def widget(name: str, ns: str, size: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": {"size": size}}


def test_posted_crds_are_discoverable(emu: KubeEmulator) -> None:
    """The generated crds/*.yaml (applied by the fixture) and a POSTed CRD show up in discovery."""
    status, listing = emu.request("GET", "/apis/kubeforge.io/v1alpha1")
    assert status == 200
    names = {r["name"]: r for r in listing["resources"]}
    for plural in ("datasetversions", "trainingjobs", "benchmarks", "inferenceservices"):
        assert names[plural]["namespaced"] is True
        assert f"{plural}/status" in names
    assert names["trainingjobs"]["kind"] == "TrainingJob"
    groups = {g["name"] for g in emu.request("GET", "/apis")[1]["groups"]}
    assert {"kubeforge.io", GROUP, "batch", "apps"} <= groups
    crd = emu.get("CustomResourceDefinition", f"{PLURAL}.{GROUP}", None)
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"


def test_metadata_is_stamped_and_versions_grow(emu: KubeEmulator, kube_namespace: str) -> None:
    """uid, a monotonic resourceVersion, generation bumped by spec changes only, creationTimestamp."""
    obj = emu.create(widget("w", kube_namespace))
    meta = obj["metadata"]
    assert len(meta["uid"]) == 36 and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z") and meta["namespace"] == kube_namespace
    labelled = emu.patch("Widget", "w", {"metadata": {"labels": {"a": "b"}}}, kube_namespace)
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    resized = emu.patch("Widget", "w", {"spec": {"size": 2}}, kube_namespace)
    assert resized["metadata"]["generation"] == 2 and resized["metadata"]["uid"] == meta["uid"]
    same = emu.patch("Widget", "w", {"spec": {"size": 2}}, kube_namespace)
    assert same["metadata"]["resourceVersion"] == resized["metadata"]["resourceVersion"]  # no-op write
    assert emu.request("POST", emu.path(emu.resource("Widget"), kube_namespace), widget("w", kube_namespace))[0] == 409


def test_failed_json_patch_test_is_422_and_stale_version_is_409(emu: KubeEmulator, kube_namespace: str) -> None:
    """Kopf's finalizer patches carry a `test` on resourceVersion and expect 422 when it fails."""
    obj = emu.create(widget("w", kube_namespace))
    path = emu.path(emu.resource("Widget"), kube_namespace, "w")
    stale = obj["metadata"]["resourceVersion"]
    emu.patch("Widget", "w", {"spec": {"size": 5}}, kube_namespace)
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": stale},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]
    status, body = emu.request("PATCH", path, ops, "application/json-patch+json")
    assert status == 422 and body["kind"] == "Status" and body["code"] == 422
    assert "finalizers" not in emu.get("Widget", "w", kube_namespace)["metadata"]
    status, body = emu.request("PATCH", path, {"metadata": {"resourceVersion": stale}, "spec": {"size": 9}},
                               "application/merge-patch+json")
    assert status == 409 and body["reason"] == "Conflict"
    current = emu.get("Widget", "w", kube_namespace)
    assert current["spec"]["size"] == 5
    replaced = {**current, "spec": {"size": 7}}
    assert emu.request("PUT", path, replaced)[0] == 200
    assert emu.request("PUT", path, replaced)[0] == 409  # its resourceVersion is now stale
    ops[0]["value"] = emu.get("Widget", "w", kube_namespace)["metadata"]["resourceVersion"]
    assert emu.request("PATCH", path, ops, "application/json-patch+json")[0] == 200


def read_watch(emu: KubeEmulator, query: str) -> list[dict[str, Any]]:
    with emu.stream(f"/apis/{GROUP}/{VERSION}/{PLURAL}?watch=true&timeoutSeconds=1&{query}", timeout=10) as rsp:
        return [json.loads(line) for line in rsp.read().splitlines() if line.strip()]


def test_watch_resumes_from_a_version_and_expired_versions_get_410(emu: KubeEmulator, kube_namespace: str) -> None:
    """A watch from resourceVersion N replays exactly what happened after N (Kopf reconnects so)."""
    first = emu.create(widget("a", kube_namespace))
    emu.create(widget("b", kube_namespace))
    emu.patch("Widget", "a", {"spec": {"size": 3}}, kube_namespace)
    events = read_watch(emu, f"resourceVersion={first['metadata']['resourceVersion']}"
                             f"&fieldSelector=metadata.namespace={kube_namespace}")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("MODIFIED", "a")]
    assert events[1]["object"]["spec"]["size"] == 3
    fresh = read_watch(emu, f"labelSelector=missing&fieldSelector=metadata.namespace={kube_namespace}")
    assert fresh == []  # a selector filters the initial state too
    initial = read_watch(emu, f"fieldSelector=metadata.namespace={kube_namespace}")
    assert sorted(e["object"]["metadata"]["name"] for e in initial) == ["a", "b"]
    with KubeEmulator(history=2) as small:
        small.create(WIDGET_CRD)
        created = [small.create(widget(f"w{i}", "x")) for i in range(4)]
        old = read_watch(small, f"resourceVersion={created[0]['metadata']['resourceVersion']}")
        assert old[0]["type"] == "ERROR" and old[0]["object"]["code"] == 410


def test_status_subresource_and_pruning(emu: KubeEmulator, kube_namespace: str) -> None:
    """The main endpoint ignores status, /status ignores the rest; undeclared fields are pruned."""
    emu.create({**widget("w", kube_namespace), "status": {"phase": "Ignored"}})
    assert "status" not in emu.get("Widget", "w", kube_namespace)
    emu.patch_status("Widget", "w", {"phase": "Ready", "kopf": {"progress": {"h": {}}}}, kube_namespace)
    emu.patch("Widget", "w", {"spec": {"size": 4, "unknown": 1}, "status": {"phase": "Overwritten"}},
              kube_namespace)
    emu.patch("Widget", "w", {"spec": {"size": 99}}, kube_namespace, subresource="status")
    obj = emu.get("Widget", "w", kube_namespace)
    assert obj["status"] == {"phase": "Ready", "kopf": {"progress": {"h": {}}}}
    assert obj["spec"] == {"size": 4}  # `unknown` pruned; the /status write did not touch spec


def test_finalizers_block_deletion_and_owned_objects_are_collected(emu: KubeEmulator, kube_namespace: str) -> None:
    """deletionTimestamp while finalizers remain; removal when they are gone; dependents follow."""
    owner = emu.create({**widget("w", kube_namespace), "metadata": {
        "name": "w", "namespace": kube_namespace, "finalizers": ["demo/hold"]}})
    emu.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "cm", "namespace": kube_namespace, "labels": {"app": "demo"},
        "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": "w",
                             "uid": owner["metadata"]["uid"]}]}, "data": {"k": "v"}})
    assert [c["metadata"]["name"] for c in emu.list("ConfigMap", kube_namespace, "app=demo")] == ["cm"]
    assert emu.list("ConfigMap", kube_namespace, "app in (other)") == []
    emu.delete("Widget", "w", kube_namespace)
    marked = emu.get("Widget", "w", kube_namespace)
    assert marked["metadata"]["deletionTimestamp"] and emu.find("ConfigMap", "cm", kube_namespace)
    emu.patch("Widget", "w", {"metadata": {"finalizers": None}}, kube_namespace)
    assert emu.find("Widget", "w", kube_namespace) is None
    assert emu.find("ConfigMap", "cm", kube_namespace) is None


def test_request_routing_time_stays_flat(emu: KubeEmulator, kube_namespace: str) -> None:
    """Plain kmock routes each request over all it ever served; this one forgets served requests."""
    emu.create(widget("w", kube_namespace))
    path = emu.path(emu.resource("Widget"), kube_namespace, "w")

    def batch() -> float:
        times = []
        for _ in range(60):
            start = time.perf_counter()
            assert emu.request("GET", path)[0] == 200
            assert emu.request("GET", f"/apis/{GROUP}/{VERSION}")[0] == 200  # through kmock's DSL
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    early = batch()
    for _ in range(8):
        batch()
    late = batch()
    print(f"\nmedian request pair: first {early * 1e3:.2f} ms, after 1000 requests {late * 1e3:.2f} ms")
    assert late < early * 3 + 0.002
    assert emu.handler._requests == []


def make_operator(seen: list[tuple[Any, ...]]) -> kopf.OperatorRegistry:
    """A tiny operator with every kind of handler the real one uses; `seen` records calls."""
    registry = kopf.OperatorRegistry()

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="created")
    def created(name: str, namespace: str, spec: Any, body: Any, patch: Any, **_: Any) -> dict[str, Any]:
        seen.append(("create", namespace, name))
        kopf.info(body, reason="Created", message=f"widget of size {spec.get('size')}")
        patch.status["phase"] = "Created"
        return {"size": spec.get("size")}  # Kopf stores it in status.created

    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="updated")
    def updated(name: str, namespace: str, **_: Any) -> None:
        seen.append(("update", namespace, name))

    @kopf.on.field(GROUP, VERSION, PLURAL, field="spec.size", registry=registry, id="resized")
    def resized(name: str, namespace: str, old: Any, new: Any, **_: Any) -> None:
        seen.append(("field", namespace, name, old, new))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="deleted")
    def deleted(name: str, namespace: str, **_: Any) -> None:
        seen.append(("delete", namespace, name))

    @kopf.timer(GROUP, VERSION, PLURAL, interval=0.2, labels={"tick": "yes"}, registry=registry, id="tick")
    def tick(status: Any, patch: Any, **_: Any) -> None:
        patch.status["ticks"] = int(status.get("ticks") or 0) + 1

    # Kopf re-checks an exiting daemon only every `cancellation_polling` seconds (60 by default)
    # and keeps the finalizer until then: a short one keeps deletion prompt.
    @kopf.daemon(GROUP, VERSION, PLURAL, labels={"tick": "yes"}, registry=registry, id="watchdog",
                 cancellation_polling=0.2)
    def watchdog(name: str, namespace: str, stopped: Any, **_: Any) -> None:
        seen.append(("daemon", namespace, name))
        while not stopped:
            stopped.wait(0.1)

    return registry


def test_kopf_handlers_all_fire(emu: KubeEmulator, kube_namespace: str, kopf_operator: Any) -> None:
    """create, update, field, finalizer/delete, timer and daemon handlers of real Kopf all run."""
    seen: list[tuple[Any, ...]] = []
    kopf_operator(make_operator(seen))
    ns = kube_namespace
    emu.create(widget("w", ns, size=1, labels={"tick": "yes"}))
    done = emu.wait_for(lambda: emu.get("Widget", "w", ns).get("status", {}).get("created"), message="create")
    assert done == {"size": 1}
    obj = emu.get("Widget", "w", ns)
    assert obj["status"]["phase"] == "Created" and obj["metadata"]["finalizers"]
    emu.wait_for(lambda: emu.get("Widget", "w", ns)["status"].get("ticks", 0) >= 2, message="timer")
    emu.wait_for(lambda: ("daemon", ns, "w") in seen, message="daemon")
    emu.patch("Widget", "w", {"spec": {"size": 3}}, ns)
    emu.wait_for(lambda: ("field", ns, "w", 1, 3) in seen and ("update", ns, "w") in seen, message="update")
    emu.delete("Widget", "w", ns)
    emu.wait_for(lambda: emu.find("Widget", "w", ns) is None, message="deletion through the finalizer")
    assert ("delete", ns, "w") in seen
    assert seen.count(("create", ns, "w")) == 1  # progress was kept: nothing ran twice
    event = emu.wait_for(lambda: [e for e in emu.list("Event", ns) if e["involvedObject"]["name"] == "w"],
                         message="the Kubernetes Event posted by the handler")[0]
    assert (event["reason"], event["message"]) == ("Created", "widget of size 1")


def test_two_hundred_resources_are_all_handled(emu: KubeEmulator, kube_namespace: str, kopf_operator: Any) -> None:
    """200 objects created while Kopf runs are all handled once, within a bounded time."""
    seen: list[tuple[Any, ...]] = []
    kopf_operator(make_operator(seen))
    start = time.monotonic()
    creators = [threading.Thread(target=lambda k=k: [emu.create(widget(f"w{i}", kube_namespace))
                                                    for i in range(k, 200, 4)]) for k in range(4)]
    for thread in creators:
        thread.start()
    for thread in creators:
        thread.join()

    def handled() -> bool:
        items = emu.list("Widget", kube_namespace)
        return len(items) == 200 and all(i.get("status", {}).get("created") for i in items)

    emu.wait_for(handled, timeout=90, interval=0.25, message="200 widgets handled")
    elapsed = time.monotonic() - start
    print(f"\n200 resources created and handled in {elapsed:.1f} s")
    created = sorted(n for kind, ns, n, *_ in seen if kind == "create" and ns == kube_namespace)
    assert created == sorted(f"w{i}" for i in range(200))
    assert elapsed < 90
