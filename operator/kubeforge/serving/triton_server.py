"""Launch the `tritonserver` shipped in PyPI `nvidia-pytriton` as a local, detached process.

What it takes (shared/RECIPES.md, verified with 0.7.0 = tritonserver 2.51):
- a writable backend directory: the wheel's `backends/` plus the Python 3.11 stub copied
  into `backends/python/` (a stub in the model folder is not found);
- LD_LIBRARY_PATH with `nvidia_pytriton.libs` (without it the model stays "loading"
  forever, silently) and the venv's `bin` first on PATH (the stub finds numpy and
  onnxruntime through the `python3` on PATH);
- explicit loopback addresses (the default is 0.0.0.0).

The repository is a local directory or `s3://HOST:PORT/BUCKET/PREFIX`; S3 credentials go
to the child's environment only (`env=`), never on its command line or in our errors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubeforge.ports import free_ports

STUB_NAME = "triton_python_backend_stub"
DEFAULT_BACKEND_CACHE = Path("~/.cache/kubeforge/triton-backends")
LOG_TAIL_LINES = 40
PORT_ATTEMPTS = 3
# Triton's glog-style error lines (E1124 06:15:35 ...) and its final "error: ..." line.
_ERROR_LINE = re.compile(r"^(E\d{4} |error: )")


class TritonError(RuntimeError):
    """tritonserver could not be found, started or made ready."""


@dataclass(frozen=True)
class TritonProcess:
    pid: int
    model_name: str
    http_url: str
    grpc_url: str
    metrics_url: str
    log_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "log_path": str(self.log_path)}


def triton_home() -> Path:
    """The `pytriton/tritonserver` directory (bin/, backends/, python_backend_stubs/)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("tritonserver not found: install the serve extra (pip install 'nvidia-pytriton==0.7.0')")
    home = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        raise TritonError(f"{home}/bin/tritonserver is missing: the nvidia-pytriton install is incomplete")
    return home


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_backend_dir(cache_dir: Path | None = None) -> Path:
    """A writable backend directory with the Python stub in place; built once, then reused.

    The cache key includes the tritonserver path, so two venvs never share a copy.
    Built in a temporary directory and renamed, so concurrent callers never see half a copy.
    """
    home = triton_home()
    stub = home / "python_backend_stubs" / _python_tag() / STUB_NAME
    if not stub.is_file():
        raise TritonError(f"{stub} is missing: no Python {_python_tag()} stub in this nvidia-pytriton")
    key = f"{_stable_key(str(home.resolve()))}-py{_python_tag()}"
    root = (cache_dir or DEFAULT_BACKEND_CACHE).expanduser()
    target = root / key
    if (target / "python" / STUB_NAME).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        shutil.copytree(home / "backends", tmp / "backends")
        shutil.copy2(stub, tmp / "backends" / "python" / STUB_NAME)
        try:
            (tmp / "backends").rename(target)
        except OSError:
            if not (target / "python" / STUB_NAME).is_file():  # lost a race to a complete copy: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stable_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def triton_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours, plus `extra` (e.g. AWS credentials), plus the library paths."""
    env = {**os.environ, **(extra or {})}
    libs = triton_home().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in (venv_bin, env.get("PATH", "")) if p)
    # A local repository lives in the store: the Python backend must not write __pycache__ into it.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` of a Triton log, preceded by its error lines that fall outside them.

    Triton prints its reason ("load failed for model ...") among long status tables, so
    the error lines are pulled forward where a user reads first.
    """
    try:
        all_lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    tail = all_lines[-lines:]
    errors = [line for line in all_lines[:-lines] if _ERROR_LINE.match(line)][-10:]
    return "\n".join([*errors, *(["..."] if errors else []), *tail])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_triton(
    repository: str,
    model_name: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120,
    backend_dir: Path | None = None,
) -> TritonProcess:
    """Start tritonserver detached (it outlives this process) and wait until `model_name` is ready.

    `repository` is a local directory or `s3://HOST:PORT/BUCKET/PREFIX`; `env` is added to the
    child's environment. On exit or timeout the process is killed and TritonError carries the
    tail of its log. `backend_dir` is one `prepare_backend_dir` made (default: the cached one).
    """
    backends = backend_dir or prepare_backend_dir()
    for attempt in range(PORT_ATTEMPTS):
        try:
            return _start_on_free_ports(repository, model_name, Path(log_path), env, ready_timeout, backends)
        except _PortTaken:
            # Another process bound one of the ports between our pick and tritonserver's bind.
            if attempt == PORT_ATTEMPTS - 1:
                raise TritonError(
                    f"tritonserver for model {model_name!r} found its ports taken {PORT_ATTEMPTS} times "
                    f"in a row; log {log_path}:\n{log_tail(Path(log_path))}") from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


# What tritonserver 2.51 logs when a port it was given is in use (or two coincide).
_PORT_CLASH = re.compile(r"cannot listen to HTTP requests and GRPC requests at the same address|"
                         r"already in use")


def _start_on_free_ports(repository: str, model_name: str, log_path: Path, env: dict[str, str] | None,
                         ready_timeout: float, backends: Path) -> TritonProcess:
    http_port, grpc_port, metrics_port = free_ports(3)
    cmd = [
        str(triton_home() / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        f"--load-model={model_name}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        # A stop (SIGINT) should not wait the default 30 s for in-flight requests.
        "--exit-timeout-secs=5",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logged_before = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=triton_env(env), start_new_session=True,  # its own session: survives the CLI's exit and ^C
        )
    http = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + ready_timeout
    while True:
        code = proc.poll()
        if code is not None:
            with open(log_path, "rb") as log:
                log.seek(logged_before)
                if _PORT_CLASH.search(log.read().decode(errors="replace")):
                    raise _PortTaken()
            raise TritonError(f"tritonserver for model {model_name!r} from {_safe(repository)} exited with "
                              f"code {code} before it was ready; log {log_path}:\n{log_tail(log_path)}")
        if _http_ok(f"{http}/v2/health/ready") and _http_ok(f"{http}/v2/models/{model_name}/ready"):
            break
        if time.monotonic() > deadline:
            stop_triton(proc.pid, timeout=5)
            raise TritonError(f"tritonserver for model {model_name!r} from {_safe(repository)} was not ready "
                              f"after {ready_timeout:.0f} s; log {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.2)
    return TritonProcess(
        pid=proc.pid, model_name=model_name, http_url=http, grpc_url=f"127.0.0.1:{grpc_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics", log_path=log_path,
    )


def _safe(repository: str) -> str:
    # A repository URI never carries credentials by design; strip any userinfo just in case.
    if "@" in repository and repository.startswith("s3://"):
        return "s3://" + repository.split("@", 1)[1]
    return repository


def _reap(pid: int) -> bool:
    """True when `pid` is gone (reaping it if it is our exited child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass  # not our child: the caller started it in another process
    return not is_running(pid)


def is_running(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_triton(pid: int, timeout: float = 15) -> bool:
    """SIGINT (Triton's graceful stop), then SIGKILL after `timeout` s. True when it had to be killed."""
    if _reap(pid):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _reap(pid):
            return False
        time.sleep(0.1)
    try:
        # start_new_session made it a group leader: take the Python stubs with it.
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    while not _reap(pid):
        time.sleep(0.05)
    return True
