"""tweetpulse/children.py, the one child-process supervisor of the demo and the bench: children run
in their own sessions, stop newest first (SIGKILL when deaf), and die with their parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tweetpulse import children

DEAF = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _wait_for(log: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text not in log.read_text():
        time.sleep(0.05)
    assert text in log.read_text(), log.read_text()


def test_stop_all_stops_newest_first_kills_a_deaf_child_and_reports_once_all_are_stopped(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    supervisor = children.Children(report=lines.append)
    sleeper = supervisor.start("sleeper", ["sleep", "60"], tmp_path / "sleeper.log")
    deaf = supervisor.start("deaf", [sys.executable, "-c", DEAF], tmp_path / "deaf.log")
    _wait_for(tmp_path / "deaf.log", "ready")
    started = time.monotonic()
    supervisor.stop_all(timeout=1)
    assert time.monotonic() - started < 10
    assert (deaf.returncode, sleeper.returncode) == (-signal.SIGKILL, -signal.SIGINT)
    assert lines == [f"deaf stopped (exit {-signal.SIGKILL})", f"sleeper stopped (exit {-signal.SIGINT})"]
    supervisor.stop_all()  # a second stop (the demo's `finally`) has nothing left to stop or report
    assert len(lines) == 2


def test_a_child_runs_in_its_own_session_with_the_default_sigint_even_when_its_parent_ignores_it(
    tmp_path: Path,
) -> None:
    code = "import os, signal; print(os.getsid(0) == os.getpid(), signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a demo started as a background job
    try:
        proc = children.spawn([sys.executable, "-c", code], tmp_path / "child.log")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.wait(20) == 0
    assert (tmp_path / "child.log").read_text().split() == ["True", "False"]


def test_a_child_dies_with_its_parent_killed_outright(tmp_path: Path) -> None:
    parent_code = (
        "import signal, sys, time; from pathlib import Path; from tweetpulse import children; "
        f"p = children.spawn(['sleep', '60'], Path({str(tmp_path / 'sleep.log')!r}), death_signal=signal.SIGKILL); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)
