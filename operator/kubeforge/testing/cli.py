"""The `kubeforge` command as end-to-end tests run it: a subprocess of this interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def kubeforge(*args: str, env: dict[str, str], check: bool = True, timeout: float = 900
              ) -> subprocess.CompletedProcess[str]:
    """Run `kubeforge ARGS`; with `check`, a non-zero exit fails the test with both output streams."""
    proc = subprocess.run([sys.executable, "-m", "kubeforge.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubeforge {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def get_json(kind: str, name: str, env: dict[str, str]) -> dict[str, Any]:
    """`kubeforge get KIND NAME -o json`, parsed."""
    return json.loads(kubeforge("get", kind, name, "-o", "json", env=env).stdout)
