"""A tiny protobuf text-format writer for Triton's `config.pbtxt`.

Why not `tritonclient.grpc.model_config_pb2`: importing it imports `tritonclient.grpc`,
which needs `grpcio`, and the serve step must run in a pod with only `tritonclient[http]`.
The tests parse our output back with `google.protobuf.text_format` into `ModelConfig`,
so the two cannot drift silently.

A message is a dict; values are str (quoted), bool, int, float, `Enum` (a bare
identifier such as TYPE_FP32), a nested dict (sub-message), or a list of one of those
(a repeated field). Keys whose value is None are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class Enum(str):
    """An enum value: written bare (TYPE_FP32), never quoted."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escaping is valid protobuf text escaping for the characters we emit.
        return json.dumps(value)
    raise TypeError(f"config.pbtxt: cannot write a {type(value).__name__} value ({value!r})")


def _field(name: str, value: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, Mapping):
        out.append(f"{pad}{name} {{")
        _message(value, indent + 1, out)
        out.append(f"{pad}}}")
    elif isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping) for v in value):
            out.append(f"{pad}{name}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            for item in value:
                _field(name, item, indent, out)
    else:
        out.append(f"{pad}{name}: {_scalar(value)}")


def _message(message: Mapping[str, Any], indent: int, out: list[str]) -> None:
    for name, value in message.items():
        if value is not None:
            _field(name, value, indent, out)


def render(message: Mapping[str, Any]) -> str:
    """Render a message dict as protobuf text format (one field per line, 2-space indent)."""
    out: list[str] = []
    _message(message, 0, out)
    return "\n".join(out) + "\n"
