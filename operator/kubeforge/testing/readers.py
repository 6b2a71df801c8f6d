"""Independent reference readers in venvs of their own, for checking what our exporters write.

datumaro, the Supervisely SDK, labelme and Label Studio's SDK pin numpy, pydantic and pillow
versions that conflict with ours (and with each other), so each gets its own venv under
`.venv/readers/<name>` (inside `.venv`: `make clean` removes it with the rest), created on first use
from the package registry and kept.
A reader runs a short script there and prints one JSON document on stdout, which is returned.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
READERS: dict[str, tuple[str, ...]] = {
    "datumaro": ("datumaro==1.13.12",),
    "supervisely": ("supervisely==6.74.51",),
    # labelme 7 needs Python >= 3.12; 6.3 is the newest for our 3.11 (same JSON, LabelFile loader)
    "labelme": ("labelme==6.3.1",),
    "labelstudio": ("label-studio-sdk==2.1.2",),
}


def _root() -> Path:
    return Path(os.environ.get("KUBEFORGE_READERS_DIR", REPO / ".venv" / "readers"))


def reader_python(name: str) -> Path:
    """The python of reader venv `name`, creating it (once, under a file lock) when missing."""
    venv = _root() / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers or two sessions: one installs
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--progress-bar", "off",
                            *READERS[name]], check=True)
            stamp.touch()
    return python


def run_reader(name: str, script: str, *args: str, timeout: float = 600) -> Any:
    """Run `script` (Python source; `sys.argv[1:]` are `args`) in reader venv `name`; the JSON it
    prints last on stdout is returned. A failure raises with the reader's stderr."""
    proc = subprocess.run(
        [str(reader_python(name)), "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": ""},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reader {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
