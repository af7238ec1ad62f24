"""Faults around ``launch``: a deadline for ranks that hang outside any collective, and ranks that
die with the process that launched them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalopt.distributed import LaunchError, launch

pytestmark = pytest.mark.distributed


def _sleep_forever(comm) -> None:
    while True:  # no collective: no peer ever notices
        time.sleep(0.1)


def test_launch_deadline_ends_ranks_hung_outside_collectives():
    with pytest.raises(LaunchError, match=r"deadline of 3 s with ranks 0, 1 still running") as info:
        launch(_sleep_forever, 2, deadline_s=3, timeout_s=30)
    assert info.value.rank == 0
    with pytest.raises(ValueError, match="deadline_s"):
        launch(_sleep_forever, 2, deadline_s=-1)


SCRIPT = """
import os, sys, time
from scalopt.distributed import launch

def work(comm, folder):
    with open(os.path.join(folder, f"rank{comm.rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)

if __name__ == "__main__":
    launch(work, 2, sys.argv[1])
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a PID 1 that may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_for(condition, limit_s: float) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ranks_die_when_the_launching_process_is_killed(tmp_path):
    script = tmp_path / "launcher.py"
    script.write_text(SCRIPT)
    # stderr dropped: the killed launcher's resource tracker reports (and removes) its queue's semaphores
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], env=os.environ.copy(), stderr=subprocess.DEVNULL
    )
    try:
        pid_files = [tmp_path / f"rank{r}.pid" for r in range(2)]
        assert _wait_for(lambda: all(p.exists() and p.read_text() for p in pid_files), 240)
        pids = [int(p.read_text()) for p in pid_files]
        assert all(_running(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: not any(_running(pid) for pid in pids), 60), "ranks outlived the parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
