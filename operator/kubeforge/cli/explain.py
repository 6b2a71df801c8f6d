"""`kubeforge explain KIND[.field.path]`: the field reference of every kind, like `kubectl explain`.

Read from the CRD schema that `kubeforge crds generate` builds from the API models
(`kubeforge.api.crd.resource_schema`), so it says exactly what the API server and the local runner
accept: type, description, enum, default, bounds, pattern, required, and the fields below.
Arrays are looked through (`benchmark.spec.models.trainingJob` is a field of each item).
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any

import typer

from kubeforge import GROUP_VERSION
from kubeforge.api.common import ResourceBase


class ExplainError(ValueError):
    """A path names a field that does not exist (the message lists those that do)."""


def type_name(node: dict[str, Any]) -> str:
    """kubectl's spelling of a schema node's type: string, integer, []Object, map[string]string, ..."""
    if node.get("x-kubernetes-int-or-string"):
        return "IntOrString"
    kind = node.get("type")
    if kind == "array":
        return "[]" + type_name(node.get("items") or {})
    if kind == "object" or "properties" in node or kind is None:
        if "properties" not in node and isinstance(node.get("additionalProperties"), dict):
            return "map[string]" + type_name(node["additionalProperties"])
        return "Object"
    return str(kind)


def constraints(node: dict[str, Any]) -> list[str]:
    """What the schema enforces on a node besides its type, one short phrase each."""
    out = []
    if "enum" in node:
        out.append("one of: " + ", ".join(json.dumps(v) for v in node["enum"]))
    if "default" in node:
        out.append(f"default: {json.dumps(node['default'])}")
    if "minimum" in node:
        out.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}")
    if "maximum" in node:
        out.append(f"{'<' if node.get('exclusiveMaximum') else '<='} {node['maximum']}")
    for key, phrase in (("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
                        ("minItems", "at least {} items"), ("maxItems", "at most {} items"),
                        ("minProperties", "at least {} entries"), ("maxProperties", "at most {} entries")):
        if key in node:
            out.append(phrase.format(node[key]))
    if node.get("uniqueItems"):
        out.append("items unique")
    if "pattern" in node:
        out.append(f"pattern: {node['pattern']}")
    if "format" in node:
        out.append(f"format: {node['format']}")
    if node.get("nullable"):
        out.append("may be null")
    out.extend(f"rule: {v.get('message') or v.get('rule')}" for v in node.get("x-kubernetes-validations") or [])
    return out


def _children(node: dict[str, Any]) -> dict[str, Any]:
    """The fields under a node (an array's items' fields)."""
    while node.get("type") == "array" and isinstance(node.get("items"), dict):
        node = node["items"]
    return node


@functools.cache
def _schema(cls: type[ResourceBase]) -> dict[str, Any]:
    from kubeforge.api.crd import resource_schema

    return resource_schema(cls)  # read only below


def resolve(cls: type[ResourceBase], path: list[str]) -> tuple[list[str], dict[str, Any], bool]:
    """(the path as spelled in the schema, its node, whether its parent requires it)."""
    node: dict[str, Any] = _schema(cls)
    trail: list[str] = [cls.__name__]
    required = False
    for part in path:
        holder = _children(node)
        props: dict[str, Any] = holder.get("properties") or {}
        name = part if part in props else next((p for p in props if p.lower() == part.lower()), None)
        where = ".".join(trail)
        if name is None:
            if isinstance(holder.get("additionalProperties"), dict):  # a map: any key, one value type
                node, required = holder["additionalProperties"], False
                trail.append(part)
                continue
            if props:
                raise ExplainError(f"field {part!r} does not exist in {where}; its fields: {', '.join(props)}")
            raise ExplainError(f"field {part!r} does not exist: {where} is <{type_name(node)}> and has no fields")
        required = name in (holder.get("required") or [])
        node = props[name]
        trail.append(name)
    return trail, node, required


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent) or [indent.rstrip()]


def explain_text(target: str, recursive: bool = False) -> str:
    """What `kubeforge explain TARGET` prints; KeyError for an unknown kind, ExplainError for a field."""
    from kubeforge.api.registry import kind_for

    kind, *path = target.split(".")
    cls = kind_for(kind)
    trail, node, required = resolve(cls, [p for p in path if p])
    lines = [f"KIND:     {cls.__name__}", f"VERSION:  {GROUP_VERSION}"]
    if not path:
        lines.append(f"RESOURCE: {cls.plural} (short names: {', '.join(cls.short_names)}; "
                     f"categories: {', '.join(cls.categories)})")
    else:
        lines += ["", f"FIELD:    {'.'.join(trail[1:])} <{type_name(node)}>" + (" -required-" if required else "")]
    lines += ["", "DESCRIPTION:"]
    lines += _wrap(node.get("description") or "(no description in the API model)", "    ")
    lines += [f"    {c}" for c in constraints(node)]
    holder = _children(node)
    props: dict[str, Any] = holder.get("properties") or {}
    if props:
        lines += ["", "FIELDS:"]
        if recursive:
            lines += _tree(holder, "   ")
        else:
            for name, child in props.items():
                req = " -required-" if name in (holder.get("required") or []) else ""
                lines.append(f"   {name}  <{type_name(child)}>{req}")
                said = [child["description"].rstrip(".")] if child.get("description") else []
                if said or constraints(child):
                    lines += _wrap("; ".join(said + constraints(child)) + ".", "     ")
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _tree(holder: dict[str, Any], indent: str) -> list[str]:
    out = []
    for name, child in (holder.get("properties") or {}).items():
        req = " -required-" if name in (holder.get("required") or []) else ""
        out.append(f"{indent}{name}  <{type_name(child)}>{req}")
        sub = _children(child)
        if sub.get("properties"):
            out += _tree(sub, indent + "   ")
    return out


def explain_command(
    target: Annotated[str, typer.Argument(
        help="KIND or KIND.field.path, e.g. trainingjob, trainingjob.spec.split, benchmark.spec.models.")],
    recursive: Annotated[bool, typer.Option("--recursive", help="Every field below, as a tree.")] = False,
) -> None:
    """Describe a kind's fields (type, description, enum, default, bounds, required), like `kubectl explain`."""
    try:
        typer.echo(explain_text(target, recursive), nl=False)
    except (KeyError, ExplainError) as exc:
        typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)
