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
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # vLLM's internal queues stay on loopback (DESIGN.md)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from offline machines


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
    from prefwork.train.sft import init_policy

    return init_policy(workspace / ".cache", DATA / "corpus" / "sft.jsonl")


@pytest.fixture(scope="session")
def prefect_harness():
    """A real temporary Prefect server for the session's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900):
    """Run ``python -m prefwork.flows.cli ARGS`` in a subprocess; return the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "prefwork.flows.cli", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_random_policy(tmp_path_factory) -> Path:
    """A random (untrained) tiny Llama + tokenizer with the chat template: builds in about a second."""
    import json

    from prefwork.train.policy import build_random_policy

    lines = (DATA / "corpus" / "sft.jsonl").read_text().splitlines()[:400]
    texts = [json.loads(x)["prompt"] for x in lines] + [json.loads(x)["response"] for x in lines]
    return build_random_policy(tmp_path_factory.mktemp("random_policy") / "model", texts)


class VLLMServer:
    """A real vLLM OpenAI-compatible server (CPU build) on loopback, started once per session."""

    def __init__(self, model_dir: Path, log_path: Path, timeout: float = 600):
        import socket
        import subprocess
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.model = str(model_dir)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
             "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--max-model-len", "256",
             "--seed", "0",
             # vLLM 0.32 on CPU crashes when a seeded prompt's prefill is split across steps
             "--no-enable-chunked-prefill"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; log: {log_path}\n"
                                   + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server did not become healthy in {timeout} s; log: {log_path}")

    def metric(self, name: str) -> float:
        """Sum of a Prometheus counter from the server's /metrics (e.g. vllm:request_success_total)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def stop(self) -> None:
        from prefwork.pipeline.procs import stop_process_group

        stop_process_group(self.proc)
        self._log.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_random_policy, tmp_path_factory):
    """One real vLLM OpenAI-compatible server for the whole session (loopback only)."""
    server = VLLMServer(tiny_random_policy, tmp_path_factory.mktemp("vllm") / "server.log")
    yield server
    server.stop()
