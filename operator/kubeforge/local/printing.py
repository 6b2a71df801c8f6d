"""What `kubeforge get` and `describe` print, built from state records (pure, unit-tested).

Columns come from each kind's `printer_columns`, the same list the CRDs' additionalPrinterColumns
are generated from, so `kubeforge get` and `kubectl get` show the same table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from kubeforge.api import Resource
from kubeforge.api.common import PrinterColumn
from kubeforge.local.manifests import resource_label
from kubeforge.local.state import Record, creation_timestamp

STATUS_HEADLINE_FIELDS = ("phase", "message", "startTime", "completionTime", "conditions", "observedGeneration",
                          "runs")


def json_path_get(obj: Any, path: str) -> Any:
    """Evaluate the simple `.a.b.c` JSON paths printer columns use; None when any part is missing."""
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def parse_time(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 5m30s, 42m, 3h20m, 30h, 3d4h, 40d, 2y10d."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    return f"{y}y{d % 365}d" if d % 365 and y < 8 else f"{y}y"


def format_cell(value: Any, column: PrinterColumn, now: datetime) -> str:
    if value is None:
        return ""  # kubectl leaves a missing printer-column value blank
    if column.type == "date":
        return human_duration((now - parse_time(value)).total_seconds())
    if column.type == "boolean":
        return "true" if value else "false"
    if column.type == "number" and isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def columns_for(cls: type[Resource], wide: bool) -> list[PrinterColumn]:
    """priority > 0 columns appear only with -o wide, as in kubectl."""
    return [c for c in cls.printer_columns if wide or c.priority == 0]


def table_rows(cls: type[Resource], records: list[Record], wide: bool = False, all_namespaces: bool = False,
               now: datetime | None = None) -> list[list[str]]:
    """Header row then one row per record: NAME (NAMESPACE with -A) and the kind's printer columns."""
    now = now or datetime.now(UTC)
    cols = columns_for(cls, wide)
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c.name.upper() for c in cols]
    rows = [header]
    for rec in records:
        obj = rec.resource.dump()
        cells = [format_cell(json_path_get(obj, c.json_path), c, now) for c in cols]
        rows.append(([rec.resource.namespace] if all_namespaces else []) + [rec.resource.name] + cells)
    return rows


def render_table(rows: list[list[str]]) -> str:
    """Left-aligned columns three spaces apart, like kubectl's tab writer."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line else line for line in text.splitlines())


def artifact_uris(record: Record) -> dict[str, str]:
    """Every URI or URL the status names, plus the store prefixes the run wrote."""
    status = record.resource.status.dump() if record.resource.status else {}
    out = {k: str(v) for k, v in sorted(status.items()) if (k.endswith("Uri") or k.endswith("Url") or k == "url")
           and v}
    if record.store:
        for key, name in (("outputPrefix", "output prefix"), ("experimentPrefix", "served run prefix")):
            if status.get(key):
                out.setdefault(name, f"{record.store.rstrip('/')}/{status[key]}")
    return out


def runs_rows(record: Record) -> list[list[str]]:
    """The table of a resource's runs, newest first (`kubeforge runs` and `describe`)."""
    status = record.resource.status
    rows = [["RUN", "PHASE", "GENERATION", "STARTED", "COMPLETED", "OUTPUT", "MESSAGE"]]
    for run in reversed(status.runs if status else []):
        current = " *" if status is not None and run.id == status.run_id else ""
        rows.append([run.id + current, run.phase, str(run.generation or ""), run.start_time or "",
                     run.completion_time or "", run.output_prefix or "", run.message[:80]])
    return rows


def failure_lines(records: list[Record]) -> list[str]:
    """`<kind>/<name>: <reason>` for each failed resource, the whole message (its status.message; later
    lines indented under the first), for `kubeforge run` to print after its table."""
    lines = []
    for record in records:
        res = record.resource
        message = (res.status.message if res.status is not None else "") or "failed (no message recorded)"
        first, *rest = message.splitlines() or [""]
        lines.append(f"{res.kind}/{res.name}: {first}" + "".join(f"\n    {more}" for more in rest))
    return lines


def describe(record: Record, run_dir: str | None = None) -> str:
    """The `kubectl describe` view of one record."""
    res = record.resource
    meta = res.metadata
    lines = [
        f"Name:          {meta.name}",
        f"Namespace:     {meta.namespace}",
        f"Kind:          {res.kind}",
        f"API Version:   {res.api_version}",
        f"Created:       {creation_timestamp(res) or '<unknown>'}",
        f"Generation:    {meta.generation or 1}",
    ]
    owners = (meta.model_extra or {}).get("ownerReferences") or []
    for owner in owners:
        lines.append(f"Owned by:      {owner.get('kind')}/{owner.get('name')}")
    if record.manifest:
        lines.append(f"Manifest:      {record.manifest}")
    if record.store:
        lines.append(f"Store:         {record.store}")
    lines += ["Spec:", _indent(yaml.safe_dump(res.spec.dump(), sort_keys=False).rstrip())]
    status = res.status
    lines.append("Status:")
    if status is None:
        lines.append("  <never run>")
    else:
        data = status.dump()
        lines.append(f"  Phase:       {status.phase}")
        if status.message:
            lines.append(f"  Message:     {status.message}")
        lines.append(f"  Started:     {status.start_time or ''}")
        lines.append(f"  Completed:   {status.completion_time or ''}")
        if status.start_time and status.completion_time:
            took = (parse_time(status.completion_time) - parse_time(status.start_time)).total_seconds()
            lines.append(f"  Duration:    {human_duration(took)}")
        rest = {k: v for k, v in data.items() if k not in STATUS_HEADLINE_FIELDS}
        if rest:
            lines.append(_indent(yaml.safe_dump(rest, sort_keys=True).rstrip()))
    if status is not None and status.runs:
        lines.append("Runs:  (* the current one; `kubeforge runs` lists them)")
        lines.append(_indent(render_table(runs_rows(record))))
    uris = artifact_uris(record)
    if uris:
        lines.append("Artifacts:")
        width = max(len(k) for k in uris) + 1
        lines += [f"  {(k + ':').ljust(width)}  {v}" for k, v in uris.items()]
    lines.append("Conditions:")
    conds = status.conditions if status else []
    if conds:
        rows = [["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"]]
        rows += [[c.type, c.status, c.reason, c.last_transition_time, c.message] for c in conds]
        lines.append(_indent(render_table(rows)))
    else:
        lines.append("  <none>")
    if run_dir:
        lines.append(f"Run directory: {run_dir}  (run.json, result.json, step.log)")
    return "\n".join(lines)


def list_object(records: list[Record]) -> dict[str, Any]:
    """What `kubectl get KIND -o json` prints: a v1 List of the objects."""
    return {"apiVersion": "v1", "kind": "List", "items": [r.resource.dump() for r in records]}


def label(record: Record) -> str:
    return resource_label(*record.key)
