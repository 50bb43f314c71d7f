"""The supervisor of ``modelog up`` restarts children with backoff and stops them all.

Real, small subprocesses (``python -c``) that exit, hang or ignore SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelog.streams.supervisor import Backoff, Supervisor

PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(120)"]


def until(what: Callable[[], bool], sup: Supervisor, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.poll()
        if what():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def sup(lines: list[str]) -> Iterator[Supervisor]:
    s = Supervisor(initial_backoff=0.05, max_backoff=0.2, stable_after=60.0, stop_timeout=3.0,
                   echo=lines.append)
    try:
        yield s
    finally:
        s.stop()


def test_backoff_doubles_to_the_maximum_and_resets_after_a_stable_run() -> None:
    b = Backoff(initial=1.0, maximum=30.0, stable_after=60.0)
    assert [b.next_delay(0.1) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.next_delay(60.0) == 1.0
    assert b.next_delay(59.0) == 2.0


def test_a_child_that_keeps_dying_is_restarted_with_growing_delays(
        sup: Supervisor, lines: list[str], tmp_path: Path) -> None:
    log = tmp_path / "flaky.log"
    sup.start("flaky", [PY, "-c", "print('up'); raise SystemExit(3)"], log=log)
    until(lambda: sup.children["flaky"].restarts >= 4, sup)
    died = [line for line in lines if "exited" in line]
    assert died[0].startswith("flaky exited with code 3 after ")
    assert f"see {log}" in died[0]
    delays = [float(line.split("restarting it in ")[1].split(" s")[0]) for line in died[:4]]
    assert delays == [0.05, 0.1, 0.2, 0.2]
    assert [line.split("(restart ")[1].split(")")[0] for line in died[:4]] == ["1", "2", "3", "4"]
    assert any(line.startswith("flaky restarted (pid ") for line in lines)
    assert log.read_text().count("up") >= 4  # each run appends to the same log


def test_a_child_that_stayed_up_long_enough_restarts_after_the_first_delay(
        lines: list[str]) -> None:
    sup = Supervisor(initial_backoff=0.05, max_backoff=5.0, stable_after=0.3,
                     echo=lines.append)
    try:
        sup.start("steady", [PY, "-c", "import time; time.sleep(0.5); raise SystemExit(1)"])
        until(lambda: sup.children["steady"].restarts >= 2, sup)
        died = [line for line in lines if "exited" in line]
        assert all("restarting it in 0.05 s" in line for line in died), died
    finally:
        sup.stop()


def test_a_killed_child_comes_back_with_a_new_pid(sup: Supervisor, lines: list[str]) -> None:
    sup.start("worker", SLEEP)
    first = sup.pid("worker")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    until(lambda: sup.pid("worker") not in (None, first), sup)
    assert any(line.startswith("worker exited with code -9") for line in lines), lines


def test_after_restart_runs_on_restarts_only_and_on_exit_on_each_death(
        sup: Supervisor) -> None:
    calls: list[str] = []
    sup.start("broker", [PY, "-c", "raise SystemExit(0)"],
              after_restart=lambda: calls.append("restarted"),
              on_exit=lambda: calls.append("died"))
    assert not calls
    until(lambda: calls.count("restarted") >= 2, sup)
    assert calls[:4] == ["died", "restarted", "died", "restarted"]


def test_stop_ends_every_child_quickly_and_kills_one_that_ignores_sigterm(
        lines: list[str]) -> None:
    sup = Supervisor(stop_timeout=1.5, echo=lines.append)
    stubborn = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(120)")
    procs = [sup.start("a", SLEEP), sup.start("b", [PY, "-u", "-c", stubborn],
                                               log=None), sup.start("c", SLEEP)]
    time.sleep(1.0)  # let "b" install its handler
    started = time.monotonic()
    sup.stop()
    assert time.monotonic() - started < 5
    assert all(p.poll() is not None for p in procs)
    assert "  killed b (it did not stop within 1.5 s)" in lines
    assert {"  stopped a", "  stopped c"} <= set(lines)
    sup.poll()  # nothing is restarted after a stop
    assert all(c.restart_at is None for c in sup.children.values())


def test_a_child_with_children_of_its_own_is_cleaned_up_when_it_dies(
        sup: Supervisor, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = (f"import subprocess, sys, time; p = subprocess.Popen({SLEEP!r}); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    sup.start("parent", [PY, "-c", code])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    parent = sup.pid("parent")
    assert parent is not None
    os.kill(parent, signal.SIGKILL)
    until(lambda: sup.children["parent"].restart_at is not None
          or sup.children["parent"].restarts > 0, sup)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # a zombie until init reaps it: it counts as gone once its state is Z
        status = Path(f"/proc/{grandchild}/status")
        if status.exists() and "State:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the dead child's own child was left running")


def _gone(pid: int) -> bool:
    """Whether ``pid`` ended (a zombie waiting for init to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" in status.read_text()


def test_children_that_follow_stop_with_theirs_when_the_supervisor_is_killed(
        tmp_path: Path) -> None:
    """``kill -9`` of the supervisor alone: its children (and theirs) stop, none left behind."""
    pids = tmp_path / "pids"
    child = (  # a service as `modelog up` runs them: it follows, and started a helper
        "import os, subprocess, sys, time\n"
        "from modelog.streams.supervisor import follow_supervisor\n"
        "assert follow_supervisor(grace=2.0, every=0.1)\n"
        f"helper = subprocess.Popen({SLEEP!r})\n"
        f"with open({str(pids)!r}, 'a') as f: f.write(f'{{os.getpid()}} {{helper.pid}}\\n')\n"
        "time.sleep(120)\n")
    ignoring = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + child
    supervisor = (
        "import sys, time\n"
        "from modelog.streams.supervisor import Supervisor\n"
        "sup = Supervisor()\n"
        f"sup.start('a', [sys.executable, '-c', {child!r}])\n"
        f"sup.start('b', [sys.executable, '-c', {ignoring!r}])\n"
        "time.sleep(120)\n")
    import subprocess

    proc = subprocess.Popen([PY, "-c", supervisor], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while (not pids.exists() or len(pids.read_text().split()) < 4) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 4 and not any(_gone(p) for p in started)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10  # SIGTERM at once; SIGKILL after the grace
        while not all(_gone(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in started if not _gone(p)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_process_nobody_supervises_follows_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelog.streams.supervisor import SUPERVISOR_ENV, follow_supervisor

    monkeypatch.delenv(SUPERVISOR_ENV, raising=False)
    assert follow_supervisor() is False
    monkeypatch.setenv(SUPERVISOR_ENV, "not a pid")
    assert follow_supervisor() is False
    monkeypatch.setenv(SUPERVISOR_ENV, str(os.getpid()))  # not its parent
    assert follow_supervisor() is False


def test_a_second_holder_is_refused_and_waits_for_a_killed_ones_children(
        tmp_path: Path) -> None:
    import json
    import subprocess

    from modelog.streams.supervisor import RunLock

    path = tmp_path / "up.lock"
    holder = RunLock(path).acquire()
    with pytest.raises(RuntimeError, match=f"locked by pid {os.getpid()}"):
        RunLock(path).acquire()
    # a holder that died without releasing left a child still stopping: wait for it
    leftover = subprocess.Popen([PY, "-c", "import time; time.sleep(1.5)  # modelog"])
    holder.record([leftover.pid])
    holder._file.close()  # type: ignore[union-attr]  # as the kernel does for a killed holder
    started = time.monotonic()
    again = RunLock(path, wait=30).acquire()
    assert again.leftovers == [leftover.pid]
    assert 0.5 < time.monotonic() - started < 20 and leftover.wait(1) == 0
    assert json.loads(path.read_text()) == {"pid": os.getpid(), "children": []}
    # one that never stops is killed after the wait
    stuck = subprocess.Popen([PY, "-c", "import time; time.sleep(60)  # modelog"],
                             start_new_session=True)
    again.record([stuck.pid])
    again._file.close()  # type: ignore[union-attr]
    RunLock(path, wait=0.5).acquire().release()
    assert stuck.wait(5) == -signal.SIGKILL
