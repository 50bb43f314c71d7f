"""Stopping a service on SIGTERM or Ctrl-C without interrupting it mid-step.

Every long-running service (projector, delivery, retrain runner) loops until a
``threading.Event`` is set. :func:`stop_on_signal` sets it on SIGTERM and SIGINT, so
the service finishes the batch in hand, commits and closes: a ``KeyboardInterrupt``
raised at an arbitrary point of a loop could leave a lock held or a batch half
written, and the close that follows would wait on it. While the service is still
starting (connecting to a broker that may not answer), a signal interrupts at once
instead, and a second Ctrl-C always does, so a service stops within a second whatever
the broker's state.

Examples
--------
>>> import os, signal, threading
>>> stop = threading.Event()
>>> with stop_on_signal(stop):
...     os.kill(os.getpid(), signal.SIGTERM)
...     os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C: the same, no KeyboardInterrupt
>>> stop.is_set()
True
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["stop_on_signal"]


@contextlib.contextmanager
def stop_on_signal(stop: threading.Event,
                   started: threading.Event | None = None) -> Iterator[threading.Event]:
    """Within the block, SIGTERM and SIGINT set ``stop`` (only in the main thread; else a
    no-op).

    With ``started``, a signal before ``started`` is set also raises
    :class:`KeyboardInterrupt` (the service gives up connecting); a second SIGINT after
    ``stop`` was set raises it too (Ctrl-C twice forces the stop).
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = {"count": 0}

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        stop.set()
        if sig == signal.SIGINT:
            signals["count"] += 1
        if (started is not None and not started.is_set()) or signals["count"] > 1:
            raise KeyboardInterrupt

    previous: dict[int, Any] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
