"""The commands `make demo` prints (and the README repeats) read the state and store the demo wrote.

The demo script runs for real, with `kubeforge` replaced by a stub that records, for each call, the
state directory and store the real CLI would resolve (`kubeforge.local.state`) from its arguments,
environment and working directory: no training, a second. Then each command the demo printed is run
as a user would paste it, in the directory the demo was started from with the user's environment
(not the demo's), and must resolve the same state directory and store as the demo's `kubeforge run`.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kubeforge

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "quickstart" / "demo.sh"

STUB = """#!{python}
import json, os, sys
sys.path.insert(0, {source_root!r})
from kubeforge.local.state import local_store_uri, resolve_state_dir

args = sys.argv[1:]
def option(name):
    return args[args.index(name) + 1] if name in args else None
entry = {{"args": args, "cwd": os.getcwd(), "state": str(resolve_state_dir(option("--state-dir"))),
          "store": local_store_uri(option("--store"), option("--state-dir"))}}
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps(entry) + "\\n")
if args[:1] == ["describe"]:
    print("reportUri experimentUri")  # what the demo greps for
"""


def _stub(where: Path, log: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(STUB.format(python=sys.executable, source_root=str(Path(kubeforge.__file__).parents[1])))
    where.chmod(where.stat().st_mode | stat.S_IXUSR)
    return where


def _env(log: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBEFORGE_STATE_DIR", "KUBEFORGE_STORE")}
    return {**env, "STUB_LOG": str(log), **extra}


def _entries(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _printed_commands(stdout: str) -> list[list[str]]:
    after = stdout.split("Next, from", 1)[1].splitlines()[1:]
    return [shlex.split(line, comments=True) for line in after if line.startswith("  ")]


def _run_demo(start: Path, kubeforge_cmd: str, log: Path, demo_env: dict[str, str]) -> list[list[str]]:
    proc = subprocess.run(["bash", str(DEMO)], cwd=start, env={**demo_env, "KUBEFORGE": kubeforge_cmd,
                                                                 "DEMO_DIR": str(start / "demo")},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return _printed_commands(proc.stdout)


@pytest.mark.parametrize("case", ["default", "exported", "one-shot"])
def test_printed_commands_read_the_demos_state(tmp_path: Path, case: str) -> None:
    start = tmp_path / "start"
    start.mkdir()
    log = tmp_path / "calls.jsonl"
    _stub(start / "bin" / "kubeforge", log)
    user_env = _env(log)
    if case == "exported":  # `export KUBEFORGE_STATE_DIR=...` in the user's shell: the demo and the user see it
        user_env = _env(log, KUBEFORGE_STATE_DIR="mystate", KUBEFORGE_STORE="../elsewhere")
    demo_env = dict(user_env)
    if case == "one-shot":  # `KUBEFORGE_STATE_DIR=... make demo`: only the demo sees it
        demo_env.update(KUBEFORGE_STATE_DIR="mystate", KUBEFORGE_STORE="../elsewhere")  # relative to the start

    commands = _run_demo(start, "bin/kubeforge", log, demo_env)  # relative, as make passes .venv/bin/kubeforge
    demo_calls = _entries(log)
    run = next(c for c in demo_calls if c["args"][:1] == ["run"])
    expected_state = start / ("mystate" if case != "default" else ".kubeforge")
    assert run["state"] == str(expected_state)
    if case != "default":
        assert run["store"] == (tmp_path / "elsewhere").as_uri()
    assert {c["state"] for c in demo_calls} == {run["state"]}, "every demo command uses one state directory"

    assert [c[1:3] for c in commands] == [["get", "trainingjobs"], ["describe", "trainingjob"],
                                         ["store", "tree"], ["stop", "inferenceservice"]]
    log.unlink()
    for command in commands:
        assert command[0] == "bin/kubeforge"  # as given, runnable from the start directory
        proc = subprocess.run(command, cwd=start, env=user_env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    for call in _entries(log):
        assert call["state"] == run["state"], f"{call['args']} reads {call['state']}, the demo wrote {run['state']}"
        if call["args"][:2] == ["store", "tree"]:
            assert call["store"] == run["store"], f"store tree shows {call['store']}, the demo used {run['store']}"


def test_readme_shows_what_make_demo_prints(tmp_path: Path) -> None:
    # `make demo` passes KUBEFORGE=.venv/bin/kubeforge from the repository root.
    start = tmp_path / "repo"
    start.mkdir()
    log = tmp_path / "calls.jsonl"
    _stub(start / ".venv" / "bin" / "kubeforge", log)
    commands = _run_demo(start, ".venv/bin/kubeforge", log, _env(log))
    readme = (REPO / "README.md").read_text()
    for command in commands:
        assert shlex.join(command) in readme, f"README.md does not show `{shlex.join(command)}` after make demo"
    makefile = (REPO / "Makefile").read_text()
    assert "KUBEFORGE=$(BIN)/kubeforge bash examples/quickstart/demo.sh" in makefile
    assert "KUBEFORGE_STATE_DIR" not in makefile.split("demo: ", 1)[1].split("\n\n", 1)[0], \
        "make demo must not move the state away from where the README's commands look"
