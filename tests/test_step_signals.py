"""A step turns SIGTERM into a clean failure, but what it forks must still die on SIGTERM.

OpenVINO's model conversion forks a telemetry sender and, after a timeout, terminates it; with the
step's Python handler inherited, a child stuck in C code never ran it and the step hung at exit
joining the child (seen in the gate's operator test). Real processes and signals, nothing mocked.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

from kubeforge.cli.step import StepTerminatedError, install_sigterm_handler


def _blocked_in_c(ready: Any) -> None:
    # Blocks in a system call with SIGTERM's disposition as the fork left it.
    ready.set()
    signal.sigwait({signal.SIGUSR1})


def test_forked_children_die_on_sigterm_while_the_step_raises() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    child = None
    try:
        install_sigterm_handler()
        context = multiprocessing.get_context("fork")
        ready = context.Event()
        child = context.Process(target=_blocked_in_c, args=(ready,), daemon=True)
        child.start()
        assert ready.wait(timeout=30)
        child.terminate()  # what a library's timeout does
        child.join(timeout=10)
        assert child.exitcode == -signal.SIGTERM  # killed by the default action, not left running
        # The step itself still turns SIGTERM into StepTerminatedError (its cleanup runs).
        raised = False
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the handler runs at the next bytecode boundary
                time.sleep(0.01)
        except StepTerminatedError:
            raised = True
        assert raised
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child is not None and child.is_alive():  # the bug: it ignored SIGTERM; do not hang pytest's exit
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join(timeout=30)
