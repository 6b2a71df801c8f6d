"""Load `-f FILE_OR_DIR` into validated API models, or fail naming file, resource and field.

Every problem in every document is collected before raising, so a user fixes them all in
one pass instead of one per run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import ValidationError

from kubeforge.api import DatasetVersion, PredictionJob, Resource, parse_resource

MANIFEST_SUFFIXES = (".yaml", ".yml")


class ManifestError(ValueError):
    """One or more manifests are invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


ResourceKey = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class LoadedResource:
    """A validated resource and where it came from (for error messages and relative paths)."""

    resource: Resource
    path: Path
    document: int  # 1-based index of the YAML document in its file
    documents_in_file: int

    @property
    def key(self) -> ResourceKey:
        return (self.resource.kind, self.resource.namespace, self.resource.name)

    @property
    def where(self) -> str:
        """`file` or `file (document N)`: how errors name the origin."""
        return describe_origin(self.path, self.document, self.documents_in_file)


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the cwd when it is below it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


def describe_origin(path: Path, document: int, documents_in_file: int) -> str:
    shown = display_path(path)
    return f"{shown} (document {document})" if documents_in_file > 1 else shown


def resource_label(kind: str, namespace: str, name: str) -> str:
    """`Kind/name` in the default namespace, `Kind/namespace/name` elsewhere."""
    return f"{kind}/{name}" if namespace == "default" else f"{kind}/{namespace}/{name}"


def manifest_files(target: Path) -> list[Path]:
    """A file, or the *.yaml / *.yml files directly in a directory (sorted, like kubectl -f)."""
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        if not files:
            raise ManifestError([f"{display_path(target)}: no *.yaml or *.yml manifests in this directory"])
        return files
    raise ManifestError([f"{display_path(target)}: no such file or directory"])


def _field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'models', 0, 'trainingJob') -> 'spec.models[0].trainingJob' (loc holds the aliases)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _raw_label(raw: Any) -> str:
    """Name a document that failed validation from whatever it does contain."""
    if not isinstance(raw, dict):
        return "<not a mapping>"
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    name = meta.get("name") or "<no metadata.name>"
    namespace = meta.get("namespace") or "default"
    return resource_label(str(raw.get("kind") or "<no kind>"), str(namespace), str(name))


def _validation_problems(where: str, raw: Any, exc: ValidationError) -> list[str]:
    label = _raw_label(raw)
    problems = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not in the API; check the spelling and camelCase)"
        field = _field_path(tuple(err["loc"])) or "<document>"
        problems.append(f"{where}: {label}: {field}: {msg}")
    return problems


def _absolute(loaded: LoadedResource, field: str, uri: str) -> tuple[str, list[str]]:
    """A local path made absolute, relative to its manifest's directory (an s3:// URI as it is)."""
    res = loaded.resource
    parsed = urlparse(uri)
    label = resource_label(res.kind, res.namespace, res.name)
    if parsed.scheme == "s3":
        return uri, []
    if parsed.scheme not in ("", "file"):
        return uri, [f"{loaded.where}: {label}: {field}: expected a local path or s3://bucket/prefix, got {uri!r}"]
    local = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
    if not local.is_absolute():
        local = loaded.path.resolve().parent / local
    local = local.resolve()
    if not local.exists():
        return uri, [f"{loaded.where}: {label}: {field}: {uri!r} resolves to {local}, which does not exist "
                     f"(relative paths are relative to the manifest's directory)"]
    return str(local), []


def _resolve_source(loaded: LoadedResource) -> tuple[Resource, list[str]]:
    """Make a DatasetVersion's (or a PredictionJob's) local source absolute, relative to its manifest's directory."""
    res = loaded.resource
    if isinstance(res, PredictionJob) and (res.spec.input.source is not None or res.spec.input.video is not None):
        source = res.spec.input.source
        field, uri = ("spec.input.source.uri", source.uri) if source is not None else \
            ("spec.input.video", res.spec.input.video or "")
        resolved, problems = _absolute(loaded, field, uri)
        if problems or resolved == uri:
            return res, problems
        copy = res.model_copy(deep=True)
        if copy.spec.input.source is not None:
            copy.spec.input.source.uri = resolved
        else:
            copy.spec.input.video = resolved
        return copy, []
    if not isinstance(res, DatasetVersion) or res.spec.source is None:  # derived versions read no source
        return res, []
    resolved, problems = _absolute(loaded, "spec.source.uri", res.spec.source.uri)
    if problems or resolved == res.spec.source.uri:
        return res, problems
    copy = res.model_copy(deep=True)
    copy.spec.source.uri = resolved
    return copy, []


def load_manifests(target: Path | str | Sequence[Path | str]) -> list[LoadedResource]:
    """Load and validate every document under `target` (one path or several, like repeated
    `kubectl -f`); raises ManifestError listing all problems."""
    targets = [target] if isinstance(target, (str, Path)) else list(target)
    problems: list[str] = []
    loaded: list[LoadedResource] = []
    paths = list(dict.fromkeys(p for t in targets for p in manifest_files(Path(t))))
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            problems.append(f"{display_path(path)}:{line} not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        except OSError as exc:
            problems.append(f"{display_path(path)}: cannot read: {exc.strerror or exc}")
            continue
        for index, raw in enumerate(docs, start=1):
            where = describe_origin(path, index, len(docs))
            try:
                resource = parse_resource(raw)
            except ValidationError as exc:
                problems.extend(_validation_problems(where, raw, exc))
                continue
            except ValueError as exc:
                problems.append(f"{where}: {_raw_label(raw)}: {exc}")
                continue
            item = LoadedResource(resource, path, index, len(docs))
            resolved, source_problems = _resolve_source(item)
            problems.extend(source_problems)
            loaded.append(LoadedResource(resolved, path, index, len(docs)))
    problems.extend(_duplicates(loaded))
    if problems:
        raise ManifestError(problems)
    return loaded


def _duplicates(loaded: list[LoadedResource]) -> list[str]:
    first: dict[ResourceKey, LoadedResource] = {}
    problems = []
    for item in loaded:
        if item.key in first:
            label = resource_label(*item.key)
            problems.append(f"{item.where}: {label}: metadata.name: duplicate; {label} is already defined in "
                            f"{first[item.key].where}")
        else:
            first[item.key] = item
    return problems
