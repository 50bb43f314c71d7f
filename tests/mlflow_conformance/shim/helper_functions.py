"""Stand-in for MLflow's ``tests/helper_functions.py``: only what the registry tests import."""

from __future__ import annotations

import socket


def get_safe_port() -> int:
    """A free loopback port (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
