"""Resolve references between resources and order them (pure: no I/O, no state writes).

A reference is satisfied by a resource in the applied set, or by one that already
Succeeded in the state directory (passed in as `existing`). Everything missing or cyclic
is reported, naming the file, the resource and the field, before anything runs.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubeforge.api import KINDS, Resource, TrainingJob
from kubeforge.api.owned import implicit_benchmark, implicit_dataset_version
from kubeforge.api.references import references
from kubeforge.local.manifests import LoadedResource, ManifestError, ResourceKey, resource_label
from kubeforge.local.manifests import _resolve_source as resolve_source

_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Dependency:
    key: ResourceKey
    field: str  # where the reference is written, e.g. "spec.models[0].trainingJob"
    role: str  # what the step uses it for (kubeforge.api.references.Role)
    in_plan: bool  # False: satisfied by a resource that already Succeeded in the state directory


@dataclass
class Node:
    resource: Resource
    where: str  # origin for messages: the file (and document), or the owner for implicit ones
    path: Path | None
    owner: ResourceKey | None = None
    deps: list[Dependency] = field(default_factory=list)

    @property
    def key(self) -> ResourceKey:
        return (self.resource.kind, self.resource.namespace, self.resource.name)

    @property
    def label(self) -> str:
        return resource_label(*self.key)

    def dep(self, role: str) -> Dependency | None:
        return next((d for d in self.deps if d.role == role), None)

    def deps_with(self, role: str) -> list[Dependency]:
        return [d for d in self.deps if d.role == role]


@dataclass
class Plan:
    nodes: list[Node]  # in run order
    existing: Mapping[ResourceKey, Resource]  # state resources the plan refers to

    def get(self, key: ResourceKey) -> Node | None:
        return next((n for n in self.nodes if n.key == key), None)


def _add_data_versions(nodes: list[Node], taken: dict[ResourceKey, Node], problems: list[str]) -> None:
    for node in list(nodes):
        job = node.resource
        if not (isinstance(job, TrainingJob) and job.spec.source is not None):
            continue
        where = f"{node.where}: {node.label}: spec.source"
        try:
            dsv = implicit_dataset_version(job)
        except ValueError as exc:  # e.g. a source the DatasetVersion model refuses
            problems.append(f"{where}: cannot make the implicit DatasetVersion: {exc}")
            continue
        clash = taken.get((dsv.kind, dsv.namespace, dsv.name))
        if clash is not None:
            problems.append(f"{where}: the implicit DatasetVersion {dsv.name!r} clashes with the one defined in "
                            f"{clash.where}; rename one or train on it with spec.datasetVersion")
            continue
        if node.path is not None:
            # Relative source paths are relative to the job's manifest, as for a DatasetVersion.
            item = LoadedResource(dsv, node.path, 1, 1)
            dsv, source_problems = resolve_source(item)  # type: ignore[assignment]
            problems.extend(p.replace(f"{item.where}: ", f"{node.where}: {node.label}: ", 1)
                            .replace("spec.source.uri", "spec.source.uri (implicit DatasetVersion)", 1)
                            for p in source_problems)
        implicit = Node(dsv, f"{node.where} (implicit, from {node.label} spec.source)", node.path, owner=node.key)
        nodes.append(implicit)
        taken[implicit.key] = implicit


def _with_implicit(loaded: list[LoadedResource], problems: list[str]) -> list[Node]:
    nodes = [Node(item.resource, item.where, item.path) for item in loaded]
    taken = {n.key: n for n in nodes}
    _add_data_versions(nodes, taken, problems)
    for node in list(nodes):
        job = node.resource
        if not (isinstance(job, TrainingJob) and job.spec.benchmark.enabled):
            continue
        where = f"{node.where}: {node.label}: spec.benchmark.enabled"
        try:
            bench = implicit_benchmark(job)
        except ValueError as exc:
            problems.append(f"{where}: cannot make the implicit Benchmark: {exc}")
            continue
        clash = taken.get((bench.kind, bench.namespace, bench.name))
        if clash is not None:
            problems.append(f"{where}: the implicit Benchmark {bench.name!r} clashes with the one defined in "
                            f"{clash.where}; rename one or set enabled: false")
            continue
        implicit = Node(bench, f"{node.where} (implicit, from {node.label} spec.benchmark.enabled)", node.path,
                        owner=node.key)
        nodes.append(implicit)
        taken[implicit.key] = implicit
    return nodes


def _resolve(node: Node, applied: Mapping[ResourceKey, Node], existing: Mapping[ResourceKey, Resource],
             problems: list[str]) -> None:
    """The node's dependencies from the references its kind declares (`kubeforge.api.references`)."""
    ns = node.resource.namespace

    def spec_of(kind: str, name: str) -> Resource | None:
        key = (kind, ns, name)
        return applied[key].resource if key in applied else existing.get(key)

    for ref in references(node.resource, spec_of):
        key = (ref.kind, ns, ref.name)
        if key in applied:
            node.deps.append(Dependency(key, ref.field, ref.role, in_plan=True))
        elif key in existing:
            node.deps.append(Dependency(key, ref.field, ref.role, in_plan=False))
        else:
            problems.append(f"{node.where}: {node.label}: {ref.field}: {ref.kind} {ref.name!r} not found in "
                            f"namespace {ns!r}; it is neither in the applied manifests nor Succeeded in the state "
                            "directory")


def _order(nodes: list[Node]) -> tuple[list[Node], list[Node]]:
    """Kahn's algorithm, ties broken by kind order then namespace then name. Returns (ordered, left)."""
    by_key = {n.key: n for n in nodes}
    waiting = {n.key: {d.key for d in n.deps if d.in_plan} for n in nodes}
    dependents: dict[ResourceKey, list[ResourceKey]] = {k: [] for k in by_key}
    for key, deps in waiting.items():
        for dep in deps:
            dependents[dep].append(key)

    def rank(key: ResourceKey) -> tuple[int, str, str]:
        return (_KIND_ORDER[key[0]], key[1], key[2])

    ready = [(*rank(k), k) for k, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        *_, key = heapq.heappop(ready)
        ordered.append(by_key[key])
        for child in dependents[key]:
            waiting[child].discard(key)
            if not waiting[child]:
                heapq.heappush(ready, (*rank(child), child))
    done = {n.key for n in ordered}
    return ordered, [n for n in nodes if n.key not in done]


def _cycle_message(left: list[Node]) -> str:
    """Follow in-plan references among the unordered nodes until one repeats."""
    by_key = {n.key: n for n in left}
    node = left[0]
    path: list[tuple[Node, str]] = []
    seen: dict[ResourceKey, int] = {}
    while node.key not in seen:
        seen[node.key] = len(path)
        dep = next(d for d in node.deps if d.in_plan and d.key in by_key)
        path.append((node, dep.field))
        node = by_key[dep.key]
    cycle = path[seen[node.key]:]
    chain = " -> ".join(f"{n.label} ({f})" for n, f in cycle) + f" -> {node.label}"
    first = cycle[0][0]
    return f"{first.where}: {first.label}: {cycle[0][1]}: reference cycle: {chain}"


def build_plan(loaded: list[LoadedResource], existing: Mapping[ResourceKey, Resource] | None = None) -> Plan:
    """Resolve every reference and order the resources; raises ManifestError listing every problem."""
    existing = existing or {}
    problems: list[str] = []
    nodes = _with_implicit(loaded, problems)
    applied = {n.key: n for n in nodes}
    for node in nodes:
        _resolve(node, applied, existing, problems)
    if problems:
        raise ManifestError(problems)
    ordered, left = _order(nodes)
    if left:
        raise ManifestError([_cycle_message(left)])
    used = {d.key for n in ordered for d in n.deps if not d.in_plan}
    return Plan(ordered, {k: existing[k] for k in used})
