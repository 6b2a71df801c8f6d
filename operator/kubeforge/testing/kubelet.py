"""How the pod runner's kubelet turns a container into a local process (test infrastructure).

See `kubeforge.testing.pod_runner` for the choices: the image is this virtual environment (the
container's command mapped to a local one), volumes are host folders with mount paths rewritten
in arguments and env values, and the env comes from `envFrom`/`env` read from the API.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeforge.cli.step import TERMINATION_LOG_ENV
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_objects import Body

NODE_NAME = "pod-runner"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class ContainerConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError (a Secret or ConfigMap it cannot read)."""


def default_commands(python: str = sys.executable) -> dict[str, list[str]]:
    """Container command[0] -> the local command that stands for it (the image is this venv)."""
    return {"kubeforge": [python, "-m", "kubeforge.cli.main"],
            "torchrun": [python, "-m", "torch.distributed.run"],
            "python": [python], "python3": [python]}


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """`$(VAR)` from `env`, as the kubelet expands command, args and env values; unknown refs stay."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def rewrite_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """A path under a mount path (the whole value, or the part after `--flag=`) -> the host folder."""
    head, sep, value = text.partition("=") if text.startswith("-") else ("", "", text)
    for mount in sorted(mounts, key=len, reverse=True):
        base = mount.rstrip("/") or "/"
        if value == base or value.startswith(base.rstrip("/") + "/"):
            value = str(mounts[mount]) + value[len(base):]
            break
    return f"{head}{sep}{value}"


class Kubelet:
    """Reads what a container needs from the API (as `namespace`'s kubelet would) and builds its process."""

    def __init__(self, api: KubeClient, namespace: str, image_env: Mapping[str, str],
                 commands: Mapping[str, list[str]]) -> None:
        self.api = api
        self.namespace = namespace
        self.image_env = dict(image_env)
        self.commands = dict(commands)

    def process(self, pod_spec: Body, container: Body, pod_name: str, pod_dir: Path,
                term_path: Path) -> tuple[list[str], dict[str, str], str]:
        """(argv, env, cwd) of the local process standing for `container`; its volumes written under `pod_dir`."""
        mounts = self.volumes(pod_spec, container, pod_dir)
        env = {**self.image_env, **self.container_env(container, pod_meta={"name": pod_name,
                                                                            "namespace": self.namespace})}
        env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        env[TERMINATION_LOG_ENV] = str(term_path)
        command = [expand_vars(a, env) for a in container.get("command") or []]
        args = [expand_vars(a, env) for a in container.get("args") or []]
        if not command:
            raise ContainerConfigError(f"container {container.get('name')!r}: no command (image entrypoints "
                                       "are not known to the pod runner)")
        local = self.commands.get(command[0])
        if local is None:
            raise ContainerConfigError(f"container {container.get('name')!r}: no local stand-in for command "
                                       f"{command[0]!r} (known: {sorted(self.commands)})")
        argv = [*local, *(rewrite_paths(a, mounts) for a in [*command[1:], *args])]
        cwd = rewrite_paths(container["workingDir"], mounts) if container.get("workingDir") else str(pod_dir)
        return argv, env, cwd

    def volumes(self, pod_spec: Body, container: Body, pod_dir: Path) -> dict[str, Path]:
        """Write each volume the container mounts into a host folder; mountPath -> folder."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ContainerConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
            if mount.get("subPath"):
                raise ContainerConfigError(f"volumeMount {mount['name']!r}: subPath is not supported here")
            folder = pod_dir / "volumes" / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                data = self.read("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("optional"))
                files = {k: v.encode() for k, v in (data.get("data") or {}).items()}
                files |= {k: base64.b64decode(v) for k, v in (data.get("binaryData") or {}).items()}
                self._write_items(folder, files, volume["configMap"].get("items"))
            elif "secret" in volume:
                data = self.read("Secret", volume["secret"]["secretName"], volume["secret"].get("optional"))
                self._write_items(folder, secret_data(data), volume["secret"].get("items"))
            elif "emptyDir" not in volume:
                raise ContainerConfigError(f"volume {mount['name']!r}: only configMap, secret and emptyDir are "
                                           "supported here")
            mounts[mount["mountPath"]] = folder
        return mounts

    @staticmethod
    def _write_items(folder: Path, files: Mapping[str, bytes], items: list[Body] | None) -> None:
        wanted = {i["key"]: i["path"] for i in items} if items else {k: k for k in files}
        for key, rel in wanted.items():
            if key not in files:
                raise ContainerConfigError(f"volume item {key!r} is not in the source object")
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[key])

    def read(self, kind: str, name: str, optional: bool | None) -> Body:
        obj = self.api.find(kind, name, self.namespace)
        if obj is None:
            if optional:
                return {}
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        return obj

    def container_env(self, container: Body, pod_meta: Mapping[str, Any]) -> dict[str, str]:
        """The container's environment from `envFrom` and `env`, read from the API as the kubelet does."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                ref = source["secretRef"]
                values = {k: v.decode() for k, v in secret_data(self.read("Secret", ref["name"],
                                                                           ref.get("optional"))).items()}
            elif "configMapRef" in source:
                ref = source["configMapRef"]
                values = dict(self.read("ConfigMap", ref["name"], ref.get("optional")).get("data") or {})
            else:
                raise ContainerConfigError(f"envFrom entry {source} is not supported")
            env.update({prefix + k: v for k, v in values.items()})
        for item in container.get("env") or []:
            if "valueFrom" not in item:
                env[item["name"]] = expand_vars(str(item.get("value", "")), env)
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                kind, ref = ("Secret", source["secretKeyRef"]) if "secretKeyRef" in source else \
                    ("ConfigMap", source["configMapKeyRef"])
                obj = self.read(kind, ref["name"], ref.get("optional"))
                values = secret_data(obj) if kind == "Secret" else \
                    {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                if ref["key"] not in values:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError(f'couldn\'t find key {ref["key"]} in {kind} '
                                               f'{self.namespace}/{ref["name"]}')
                env[item["name"]] = values[ref["key"]].decode()
            elif "fieldRef" in source:
                env[item["name"]] = field_value(source["fieldRef"]["fieldPath"], pod_meta)
            else:
                raise ContainerConfigError(f"env {item['name']!r}: valueFrom {sorted(source)} is not supported")
        return env


def secret_data(secret: Body) -> dict[str, bytes]:
    """A Secret's values as the kubelet sees them: `data` decoded. `stringData` is write-only on a real
    server (merged into `data` on write); the emulator keeps it as sent, so it counts here too."""
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out |= {k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()}
    return out


def field_value(path: str, pod_meta: Mapping[str, Any]) -> str:
    """The downward API for the fields a pod runner knows: metadata.name, metadata.namespace,
    metadata.annotations['k'] / labels['k'] (empty here: pods get the template's, not indexed ones)."""
    if path in ("metadata.name", "metadata.namespace"):
        return str(pod_meta.get(path.split(".")[1], ""))
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if match:
        return str((pod_meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path == "spec.nodeName":
        return NODE_NAME
    raise ContainerConfigError(f"fieldRef {path!r} is not supported here")
