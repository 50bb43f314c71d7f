"""Keeps the child processes of ``modelog up`` running: restart with backoff, stop in order.

Pure process management (``subprocess`` and signals; no Kafka): each child runs
in its own session (process group), so it and whatever it started (the
projector's reader process, Streamlit's) are signalled together. When a child
dies, for any reason and with any exit code, what is left of its process group
is killed and the child is started again after a delay (:class:`Backoff`: 1 s,
doubling up to 30 s, back to 1 s once it had stayed up a minute), with a log
line naming it, its exit code and the next attempt. :meth:`Supervisor.stop`
sends SIGTERM to every child at once, newest first, and SIGKILL to those still
running after ``stop_timeout`` seconds; children named ``last`` stop after the
others, one at a time, after a hook (``modelog up`` lets the projector drain the
broker before the broker stops).

It may import only the standard library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["Backoff", "Child", "Supervisor"]


@dataclasses.dataclass
class Backoff:
    """Delays between restarts of one child: ``initial``, doubling up to ``maximum``.

    A child that stayed up at least ``stable_after`` seconds before it died
    starts over at ``initial``.

    Examples
    --------
    >>> b = Backoff(initial=1.0, maximum=30.0, stable_after=60.0)
    >>> [b.next_delay(uptime=0.5) for _ in range(7)]
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    >>> b.next_delay(uptime=61.0)
    1.0
    """

    initial: float = 1.0
    maximum: float = 30.0
    stable_after: float = 60.0
    _next: float | None = None

    def next_delay(self, uptime: float) -> float:
        """The delay before restarting a child that just died after ``uptime`` seconds."""
        if self._next is None or uptime >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self.maximum, delay * 2)
        return delay


@dataclasses.dataclass
class Child:
    """One supervised program and its current process."""

    name: str
    argv: list[str]
    env: Mapping[str, str] | None = None
    log: Path | None = None
    #: Called after every restart (not the first start), e.g. to refill a fresh broker.
    after_restart: Callable[[], None] | None = None
    #: Called when it died, before the restart is scheduled: to end what it started
    #: outside its process group (e.g. a server it ran in a session of its own).
    on_exit: Callable[[], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    backoff: Backoff = dataclasses.field(default_factory=Backoff)


class Supervisor:
    """Start child processes, restart those that die, stop them all on request.

    Parameters
    ----------
    initial_backoff, max_backoff, stable_after
        The :class:`Backoff` of each child, in seconds.
    stop_timeout
        Seconds :meth:`stop` waits for the children after SIGTERM before SIGKILL.
    echo
        Receives one line per event worth telling the operator (a child died,
        restarted, stopped).

    Examples
    --------
    >>> import sys
    >>> lines = []
    >>> sup = Supervisor(initial_backoff=0.01, echo=lines.append)
    >>> _ = sup.start("once", [sys.executable, "-c", "raise SystemExit(3)"])
    >>> sup.wait_for_exit("once", 30) is not None
    True
    >>> sup.poll()
    >>> lines[0]
    'once exited with code 3 after ... s; restarting it in 0.01 s (restart 1)'
    >>> sup.stop()
    """

    def __init__(self, *, initial_backoff: float = 1.0, max_backoff: float = 30.0,
                 stable_after: float = 60.0, stop_timeout: float = 10.0,
                 echo: Callable[[str], object] = print) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.echo = echo
        self.children: dict[str, Child] = {}
        self.stopped = False

    # -- starting ----------------------------------------------------------------------------
    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log: Path | None = None, after_restart: Callable[[], None] | None = None,
              on_exit: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the child ``name`` (output appended to ``log``, if given)."""
        child = Child(name, list(argv), env, log, after_restart, on_exit,
                      backoff=Backoff(self.initial_backoff, self.max_backoff, self.stable_after))
        self.children[name] = child
        return self._spawn(child)

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        out: IO[bytes] | int = subprocess.DEVNULL
        if child.log is not None:
            out = child.log.open("ab")
        try:
            child.process = subprocess.Popen(
                child.argv, env=dict(child.env) if child.env is not None else None,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own copy
        child.started_at = time.monotonic()
        child.restart_at = None
        return child.process

    # -- watching ----------------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        """The process id of the child ``name`` while it runs."""
        proc = self.children[name].process
        return proc.pid if proc is not None and proc.poll() is None else None

    def wait_for_exit(self, name: str, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for child ``name`` to exit; its exit code, or None."""
        proc = self.children[name].process
        if proc is None:
            return None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def poll(self) -> None:
        """Notice children that died (schedule their restart) and restart those due."""
        if self.stopped:
            return
        now = time.monotonic()
        for child in self.children.values():
            proc = child.process
            if proc is not None and child.restart_at is None and proc.poll() is not None:
                uptime = now - child.started_at
                _kill_group(proc.pid, signal.SIGKILL)  # what it started, if anything is left
                if child.on_exit is not None:
                    child.on_exit()
                delay = child.backoff.next_delay(uptime)
                child.restart_at = now + delay
                where = f"; see {child.log}" if child.log is not None else ""
                self.echo(f"{child.name} exited with code {proc.returncode} after "
                          f"{uptime:.0f} s; restarting it in {delay:g} s "
                          f"(restart {child.restarts + 1}){where}")
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                new = self._spawn(child)
                self.echo(f"{child.name} restarted (pid {new.pid})")
                if child.after_restart is not None:
                    child.after_restart()

    def run(self, stopped: Callable[[], bool], interval: float = 0.2) -> None:
        """Supervise until ``stopped()`` is true (checked every ``interval`` seconds)."""
        while not stopped():
            self.poll()
            time.sleep(interval)

    # -- stopping ----------------------------------------------------------------------------
    def stop(self, *, last: Sequence[str] = (),
             before_last: Callable[[], object] | None = None) -> None:
        """SIGTERM every child (newest first), then SIGKILL what still runs after the timeout.

        The children named in ``last`` are stopped afterwards, one at a time in that
        order, after ``before_last()`` (``modelog up``: the projector drains the
        broker, then the broker stops, so nothing on it goes unrecorded).
        """
        self.stopped = True
        for child in self.children.values():
            child.restart_at = None  # no restart is due any more
        first = [c for c in reversed(self.children.values()) if c.name not in last]
        self._stop_together(first)
        if before_last is not None and any(self._running([self.children[n]])
                                           for n in last if n in self.children):
            before_last()
        for name in last:
            if name in self.children:
                self._stop_together([self.children[name]])

    @staticmethod
    def _running(children: Sequence[Child]) -> list[Child]:
        return [c for c in children if c.process is not None and c.process.poll() is None]

    def _stop_together(self, children: Sequence[Child]) -> None:
        running = self._running(children)
        for child in running:
            assert child.process is not None
            _kill_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(child.process.pid, signal.SIGKILL)
                child.process.wait()
                self.echo(f"  killed {child.name} (it did not stop within "
                          f"{self.stop_timeout:g} s)")
            else:
                self.echo(f"  stopped {child.name}")
        for child in running:  # what they started and left behind
            assert child.process is not None
            _kill_group(child.process.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pgid`` (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
