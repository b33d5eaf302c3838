"""Pick a sampling engine by name: ``make_engine("vllm" | "transformers" | "openai" | "auto", ...)``.

Why a factory: the CLI, the loop and the benchmark choose the engine from a string and
pass one bag of options; each engine takes only the options it understands, and an
unknown engine or option is an error that names the valid ones. This module is the one
home of engine choice: what ``auto`` means (``resolve_engine``, ``AUTO_HELP``) and the
per-process engine every Prefect flow samples with (``shared_engine``).
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prefwork.pipeline.checks import check_fields, field_problem, option_name

#: Options each engine accepts (``EngineOptions`` fields plus programmatic extras).
ENGINE_OPTIONS = {
    "vllm": ("tensor_parallel_size", "dtype", "max_model_len", "enforce_eager", "llm"),
    "transformers": ("threads", "batch_size"),
    "openai": ("base_url", "api_key_env", "max_concurrency", "max_retries", "request_timeout",
               "n_per_request", "api", "backoff_s"),
}
ENGINES = ("auto", *ENGINE_OPTIONS)
#: What ``--engine auto`` means; every help text that explains ``auto`` uses this line.
AUTO_HELP = ("auto = vllm when a CUDA GPU is present and vLLM is installed, else transformers (on CPU each "
             "vLLM engine start costs 40-60 s even for the tiny default policy; --engine vllm opts in)")
#: The help of a flow's or command's ``--engine`` option.
ENGINE_HELP = f"sampling engine: {', '.join(ENGINES)}; {AUTO_HELP}"
#: Options of the engines the flows hold (``shared_engine``): 2 torch threads for transformers.
FLOW_ENGINE_OPTIONS = {"threads": 2}


@dataclass
class EngineOptions:
    """Engine settings (each engine reads its own; the rest are ignored)."""

    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs to shard the model over", "min": 1})
    dtype: str = field(default="auto", metadata={"help": "vllm: weight dtype (auto, float32, bfloat16, ...)"})
    max_model_len: int = field(default=0, metadata={"help": "vllm: context window (0 = the model's)", "min": 0})
    enforce_eager: bool = field(default=False, metadata={"help": "vllm: skip graph compilation (faster start)"})
    threads: int = field(default=0, metadata={"help": "transformers: torch threads (0 = torch's default)", "min": 0})
    batch_size: int = field(default=128, metadata={"help": "transformers: prompts per generate call", "min": 1})
    base_url: str = field(default="", metadata={"help": "openai: server URL, e.g. http://127.0.0.1:8000/v1"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "openai: environment variable holding the key"})
    max_concurrency: int = field(default=16, metadata={"help": "openai: requests in flight", "min": 1})
    max_retries: int = field(default=5, metadata={"help": "openai: retries on 429/5xx/timeouts/connection errors",
                                                  "min": 0})
    request_timeout: float = field(default=120.0, metadata={"help": "openai: seconds per request", "above": 0.0})
    n_per_request: bool = field(default=True, metadata={"help": "openai: ask for all n candidates in one request"})
    api: str = field(default="chat", metadata={"help": "openai: 'chat' (server applies the template) or 'completions'",
                                                      "choices": ("chat", "completions")})

    def __post_init__(self):
        check_fields(self)


def resolve_engine(name: str) -> str:
    """The engine ``name`` stands for; ``auto`` as ``AUTO_HELP`` says.

    Why not vLLM whenever it is installed: on CPU the tiny default policy samples in seconds
    with transformers, while every vLLM engine start costs 40-60 s (measured by the loop, one
    start per policy), so on CPU vLLM is opt-in (``--engine vllm``).
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r} (valid: {', '.join(ENGINES)})")
    if name != "auto":
        return name
    if importlib.util.find_spec("vllm") is None:
        return "transformers"
    import torch

    return "vllm" if torch.cuda.is_available() else "transformers"


class EngineSlot:
    """Hands back the last engine built while the same model is asked for; one engine at a time.

    The loop samples one policy in consecutive stages (the SFT policy for the baseline, its own
    evaluation and round 1's candidates; round r's policy for its evaluation and round r+1's
    candidates). A vLLM engine costs 40-60 s to start, so reusing it halves the starts. Asking
    for another model, or ``close()`` (before training, which needs the memory), shuts the held
    engine down first, so two engines never hold GPU memory at once.
    """

    def __init__(self, build):
        """``build(model_dir) -> engine``, e.g. ``lambda d: make_engine("vllm", d)``."""
        self.build, self.key, self.engine, self.built = build, None, None, 0

    def get(self, model_dir: str | Path):
        key = str(Path(model_dir).resolve()) if model_dir is not None else None
        if self.engine is None or key != self.key:
            self.close()
            self.engine, self.key = self.build(model_dir), key
            self.built += 1
        return self.engine

    def close(self) -> None:
        engine, self.engine, self.key = self.engine, None, None
        if engine is not None and hasattr(engine, "close"):
            engine.close()


def make_engine(name: str, model_dir: str | Path | None, **opts: Any):
    """Build the named engine. ``model_dir`` is a model directory (vllm, transformers) or,
    for openai, the served model name (``None`` = the server's first model)."""
    name = resolve_engine(name)
    known = {o for names in ENGINE_OPTIONS.values() for o in names}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"unknown engine option(s) {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
    mine = {k: v for k, v in opts.items() if k in ENGINE_OPTIONS[name]}
    bounds = {f.name: f.metadata for f in fields(EngineOptions)}
    for k, v in mine.items():  # the same bounds as the command line's (pipeline.checks), for every caller
        if problem := field_problem(bounds.get(k, {}), v):
            raise ValueError(f"{k} ({option_name(k)}) {problem}")
    if name != "openai" and model_dir is not None:  # a .gguf, alias or hub id becomes a folder (converted once)
        from prefwork.pipeline.models import default_cache_root, resolve_model
        model_dir = resolve_model(model_dir, default_cache_root())
    if name == "vllm":
        from prefwork.pipeline.engines_vllm import VLLMEngine

        if not mine.get("max_model_len"):
            mine.pop("max_model_len", None)
        return VLLMEngine(model_dir, **mine)
    if name == "transformers":
        from prefwork.pipeline.engines import TransformersEngine

        mine["threads"] = mine.get("threads") or None
        return TransformersEngine(model_dir, **mine)
    from prefwork.pipeline.engines_openai import OpenAIEngine

    return OpenAIEngine(model=str(model_dir) if model_dir else None, **mine)


class _OneAtATime:
    """An engine whose ``generate`` runs one call at a time in this process.

    The transformers engine seeds torch's global RNG per batch, so two threads sampling at
    once (a flow's shards on its thread pool) would make each other's candidates
    irreproducible; shards still fan out across processes and over an OpenAI-compatible server.
    """

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name

    def generate(self, prompts, cfg, shard_seed):
        with _LOCK:
            return self.engine.generate(prompts, cfg, shard_seed)

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()


_LOCK = threading.RLock()
#: engine name -> its slot; at most one slot holds an engine at a time (``shared_engine``)
_SLOTS: dict[str, EngineSlot] = {}


def shared_engine(name: str, model_dir: str | Path):
    """This process's sampling engine for ``model_dir``, shared by every flow's stages and shards.

    Why one per process: an engine start is the expensive part (a vLLM engine costs 40-60 s),
    and two engines must not hold (GPU) memory at once. The engine stays loaded while the
    same policy is asked for (the loop's consecutive stages on one policy, a refresh's shards,
    a later run in the same process); another policy or engine name shuts it down first.
    ``release_engine()`` frees it (the loop does before training). Calls are serialised
    (``_OneAtATime``). Options: ``FLOW_ENGINE_OPTIONS``.
    """
    name = resolve_engine(name)
    with _LOCK:
        for other in [n for n in _SLOTS if n != name]:
            _SLOTS[other].close()
        slot = _SLOTS.setdefault(name, EngineSlot(lambda d: _OneAtATime(make_engine(name, d, **FLOW_ENGINE_OPTIONS))))
        return slot.get(model_dir)


def release_engine() -> None:
    """Shut down the engine ``shared_engine`` holds, if any (before training, and when a run ends)."""
    with _LOCK:
        for slot in _SLOTS.values():
            slot.close()


def engines_started() -> int:
    """How many engines ``shared_engine`` has started in this process (a run logs its difference)."""
    return sum(slot.built for slot in _SLOTS.values())
