"""Stopping a service on SIGTERM, the way Ctrl-C stops it.

Every long-running service (projector, delivery, retrain runner) loops until a
``threading.Event`` is set. :func:`stop_on_sigterm` sets it on SIGTERM; while the
service is still starting (connecting to a broker that may not answer), SIGTERM
interrupts at once instead, so a service stops within a second whatever the
broker's state.

Examples
--------
>>> import os, signal, threading
>>> stop = threading.Event()
>>> with stop_on_sigterm(stop):
...     os.kill(os.getpid(), signal.SIGTERM)
>>> stop.is_set()
True
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["stop_on_sigterm"]


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event,
                    started: threading.Event | None = None) -> Iterator[threading.Event]:
    """Within the block, SIGTERM sets ``stop`` (only in the main thread; else a no-op).

    With ``started``, a SIGTERM before ``started`` is set also raises
    :class:`KeyboardInterrupt` (the service gives up connecting), as Ctrl-C does.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        if started is not None and not started.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
