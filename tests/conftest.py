"""Shared, session-scoped test fixtures: each expensive thing is built once per test session.

- every test runs with its own PREFECT_HOME (a newer Prefect's database breaks an older one);
- ``sft_policy``: the real default policy (``init_policy`` on the shipped corpus), built once;
- ``prefect_harness``: one ``prefect_test_harness`` (a real temporary Prefect server) per session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFWORK_PROGRESS", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_prefect_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_home")
    old = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_LOGGING_LEVEL")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """One workspace (content cache, default policy) shared by the session's slow tests."""
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="session")
def sft_policy(workspace) -> Path:
    """The real default policy: tokenizer + tiny Llama + SFT on the shipped corpus (built once)."""
    from train.sft import init_policy

    return init_policy(workspace / ".cache", DATA / "corpus" / "sft.jsonl")


@pytest.fixture(scope="session")
def prefect_harness():
    """A real temporary Prefect server for the session's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900):
    """Run ``python -m flows.cli ARGS`` in a subprocess; return the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
