"""Run a real Kopf operator in a thread against a kubeconfig (the emulator's, in tests).

Not `kopf.testing.KopfRunner`: it can hang on exit. This thread runs `kopf.operator()` with a
`stop_flag` and a `ready_flag` and joins with a bound, so a test never waits forever on teardown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Self

import kopf
import yaml
from kopf._core.intents.causes import Activity

LOGIN_ID = "kube-emulator-login"
# registry id -> kubeconfig path for the login handler below: a registry can be reused by a
# later thread (an operator "restart") against the same or another emulator.
_KUBECONFIGS: dict[int, Path] = {}


def connection_from_kubeconfig(path: str | Path) -> kopf.ConnectionInfo:
    """What `kopf.login_with_kubeconfig` reads, from one explicit file instead of $KUBECONFIG.

    $KUBECONFIG is process-wide; threads (and two emulators) need their own file.
    """
    config = yaml.safe_load(Path(path).read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next((u.get("user") or {} for u in config.get("users", []) if u["name"] == context.get("user")), {})
    return kopf.ConnectionInfo(
        server=cluster["server"], insecure=cluster.get("insecure-skip-tls-verify"),
        scheme="Bearer" if user.get("token") else None, token=user.get("token"),
        default_namespace=context.get("namespace"),
    )


def _ensure_login(registry: kopf.OperatorRegistry, kubeconfig: Path) -> None:
    _KUBECONFIGS[id(registry)] = kubeconfig
    handlers = registry._activities.get_handlers(activity=Activity.AUTHENTICATION)
    if handlers:
        return  # the operator logs in itself (then point $KUBECONFIG at the emulator)

    @kopf.on.login(registry=registry, id=LOGIN_ID)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_from_kubeconfig(_KUBECONFIGS[id(registry)])


class KopfThread(threading.Thread):
    """`with KopfThread(registry, kubeconfig) as op:` runs Kopf until the block ends."""

    def __init__(
        self,
        registry: kopf.OperatorRegistry,
        kubeconfig_path: str | Path,
        *,
        clusterwide: bool = True,
        namespaces: tuple[str, ...] = (),
        settings: kopf.OperatorSettings | None = None,
        server_timeout: float = 10.0,
        client_timeout: float = 15.0,
        memo: Any = None,
        ready_timeout: float = 30.0,
    ) -> None:
        super().__init__(name="kopf-operator", daemon=True)
        self.registry = registry
        self.kubeconfig_path = Path(kubeconfig_path)
        self.clusterwide = clusterwide and not namespaces
        self.namespaces = namespaces
        self.settings = settings or kopf.OperatorSettings()
        # A watch that stalls (a dropped connection nobody notices) must end and be resumed:
        # the server closes it after server_timeout, the client gives up after client_timeout.
        self.settings.watching.server_timeout = server_timeout
        self.settings.watching.client_timeout = client_timeout
        self.settings.watching.connect_timeout = 5.0
        self.settings.networking.request_timeout = 30.0
        self.settings.peering.standalone = True  # one operator per test; no peering CRD needed
        self.memo = memo
        self.ready_timeout = ready_timeout
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        _ensure_login(registry, self.kubeconfig_path)

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(kopf.operator(
                registry=self.registry, settings=self.settings, clusterwide=self.clusterwide,
                namespaces=self.namespaces, stop_flag=self.stop_flag, ready_flag=self.ready_flag,
                memo=self.memo, standalone=True,
            ))
        except BaseException as exc:  # kept for the test to see; a thread cannot raise to it
            self.error = exc
            logging.getLogger(__name__).exception("the Kopf operator failed")
        finally:
            loop.close()
            self.ready_flag.set()  # never leave a starter waiting on an operator that died

    def start(self) -> None:
        super().start()
        if not self.ready_flag.wait(self.ready_timeout):
            raise TimeoutError(f"the Kopf operator was not ready in {self.ready_timeout}s")
        if self.error is not None:
            raise RuntimeError("the Kopf operator failed to start") from self.error

    def stop(self, timeout: float = 20.0) -> None:
        self.stop_flag.set()
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"the Kopf operator did not stop within {timeout}s")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
