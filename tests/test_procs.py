"""stop_process_group: a started server goes down with every process it spawned."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from prefwork.pipeline.procs import stop_process_group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its reaper is gone too
            return fh.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _start(script: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    return proc, child


def test_stops_the_child_processes_too():
    proc, child = _start("sleep 300 & echo $!; wait")
    assert _alive(child)
    stop_process_group(proc)
    assert proc.poll() is not None
    deadline = time.time() + 5
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_escalates_to_sigkill_when_the_first_signal_is_ignored():
    proc, _ = _start("trap '' TERM; echo $$; while true; do sleep 0.1; done")
    t0 = time.time()
    stop_process_group(proc, first=signal.SIGTERM, wait=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.time() - t0 < 10


def test_a_finished_process_is_left_alone():
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    stop_process_group(proc)  # no error, nothing to signal
    assert proc.returncode == 0
