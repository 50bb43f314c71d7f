"""Keeps the child processes of ``modelog up`` running: restart with backoff, stop in order.

Pure process management (``subprocess`` and signals; no Kafka): each child runs
in its own session (process group), so it and whatever it started (the
projector's reader process, Streamlit's) are signalled together. When a child
dies, for any reason and with any exit code, what is left of its process group
is killed and the child is started again after a delay (:class:`Backoff`: 1 s,
doubling up to 30 s, back to 1 s once it had stayed up a minute), with a log
line naming it, its exit code and the next attempt. Each child learns the
supervisor's pid (:data:`SUPERVISOR_ENV`); one that calls :func:`follow_supervisor`
stops, with what it started, when the supervisor is gone -- even after a ``kill -9``
of the supervisor alone, which would otherwise leave every child running
unsupervised. :meth:`Supervisor.stop`
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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["SUPERVISOR_ENV", "Backoff", "Child", "RunLock", "Supervisor", "follow_supervisor"]

SUPERVISOR_ENV = "MODELOG_SUPERVISOR_PID"
"""Environment variable through which a child learns the pid of its :class:`Supervisor`."""


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
        env = {**(child.env if child.env is not None else os.environ),
               SUPERVISOR_ENV: str(os.getpid())}
        try:
            child.process = subprocess.Popen(
                child.argv, env=env,
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

    def pids(self) -> list[int]:
        """The process ids of the children running now, in the order they were started."""
        return [p for p in map(self.pid, self.children) if p is not None]

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


def follow_supervisor(*, grace: float = 10.0, every: float = 0.5) -> bool:
    """In a child of a :class:`Supervisor`: stop when the supervisor is gone.

    A daemon thread checks every ``every`` seconds that this process's parent is
    still the supervisor named by :data:`SUPERVISOR_ENV`. Once it is not (the
    supervisor was killed, even with ``kill -9``), it sends SIGTERM to this
    process's group -- this process and what it started, as the supervisor's own
    stop would -- and SIGKILL ``grace`` seconds later if anything is left. Returns
    whether this process has a supervisor to follow.
    """
    try:
        supervisor = int(os.environ.get(SUPERVISOR_ENV, ""))
    except ValueError:
        return False
    if os.getppid() != supervisor:  # not its child (or it is gone already)
        return False
    os.environ.pop(SUPERVISOR_ENV, None)  # what this process starts is not its child

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(every)
        own = os.getpgrp() == os.getpid()  # the supervisor gave each child a session
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if own:
                _kill_group(os.getpid(), sig)
            else:
                os.kill(os.getpid(), sig)
            time.sleep(grace)

    threading.Thread(target=watch, name="modelog-follow-supervisor", daemon=True).start()
    return True


def _kill_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pgid`` (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class RunLock:
    """One supervisor per directory: a lock file naming it and its children.

    :meth:`acquire` takes ``path`` (an exclusive ``flock``, released by the kernel
    however the holder dies) or raises :class:`RuntimeError` naming the holder's
    pid. The file also lists the holder's children (:meth:`record`): a holder
    killed with ``kill -9`` leaves them stopping (:func:`follow_supervisor`), and
    :meth:`acquire` waits for those before it returns, so a new supervisor never
    races the old one's processes for ports, files and partitions.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "up.lock"
    >>> first = RunLock(path).acquire()
    >>> try:
    ...     RunLock(path).acquire()
    ... except RuntimeError as e:
    ...     print(str(e).split(" (")[0])
    locked by pid ...
    >>> first.release()
    >>> RunLock(path).acquire().release()
    """

    def __init__(self, path: Path, *, wait: float = 30.0) -> None:
        self.path = path
        self.wait = wait
        self._file: IO[str] | None = None
        self._children: list[int] = []
        #: Processes of a previous holder that had to be waited for (or killed).
        self.leftovers: list[int] = []

    def acquire(self) -> RunLock:
        """Take the lock (see the class); returns ``self``."""
        import fcntl
        import json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read()
            f.close()
            try:
                holder: object = json.loads(text)["pid"]
            except (ValueError, KeyError, TypeError):
                holder = "?"
            raise RuntimeError(f"locked by pid {holder} ({self.path})") from None
        f.seek(0)
        try:
            previous = [int(p) for p in json.loads(f.read() or "{}").get("children", [])]
        except (ValueError, TypeError, AttributeError):
            previous = []
        self._file = f
        self._write()
        self.leftovers = [p for p in previous if p != os.getpid() and _alive_child_of_ours(p)]
        deadline = time.monotonic() + self.wait
        while any(_alive_child_of_ours(p) for p in self.leftovers) and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.leftovers:  # still there: what follow_supervisor would have done
            if _alive_child_of_ours(pid):
                _kill_group(pid, signal.SIGKILL)
        return self

    def record(self, children: Sequence[int]) -> None:
        """Name the holder's current children in the file (cheap when unchanged)."""
        if self._file is not None and list(children) != self._children:
            self._children = list(children)
            self._write()

    def _write(self) -> None:
        import json

        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "children": self._children}))
        self._file.flush()

    def release(self) -> None:
        """Let the lock go (the file stays, naming no children)."""
        if self._file is not None:
            self._children = []
            self._write()
            self._file.close()
            self._file = None


def _alive_child_of_ours(pid: int) -> bool:
    """Whether ``pid`` runs a modelog command (a pid reused by another program is not ours).

    Without ``/proc`` (macOS) a process cannot be told apart from one that reused its
    pid, so none counts: nothing is waited for, and nothing is killed on a guess.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or no /proc at all
        return False
    return b"modelog" in cmdline
