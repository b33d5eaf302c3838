"""Stopping what we start (a training command, vLLM and Prefect servers) with every process it spawned.

A launched command runs in its own session (``start_new_session=True``); stopping only its
leader would leave ``accelerate``'s ranks or a server's workers running.
"""
from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, first: int = signal.SIGTERM, wait: float = 30) -> None:
    """Send ``first`` to the process group of ``proc`` (started with ``start_new_session=True``),
    wait up to ``wait`` seconds, then SIGKILL the group: a server's workers go down with it."""
    for sig, timeout in ((first, wait), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return
