"""Free loopback ports for the servers we start (tritonserver, SeaweedFS, the operator's probes)."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: all are held open together, so none repeats.

    They are closed again before the caller's server binds them, so another process may
    still take one in between: a caller that can tell (a server that fails to bind)
    asks again.
    """
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """One free loopback port (closed again, so there is a small race)."""
    return free_ports(1)[0]
