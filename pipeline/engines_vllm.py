"""vLLM's offline ``LLM`` engine behind ``pipeline.sample.Engine``.

Why: on a GPU, vLLM's continuous batching samples N candidates per prompt many times faster than
``transformers.generate``; this wrapper adds only what the candidates contract needs.

- Prompts are rendered with the model's own chat template (``pipeline.chat.render_prompt``)
  and tokenised here, so vLLM sees exactly the prefix the transformers engine and the
  trainer see, and a prompt too long for the context window is found before generating.
- Shards are streamed through one engine (``generate_shards``): the next shard's requests are
  queued while the current shard's last sequences finish, so the batch never drains at a shard
  boundary, and each shard is handed back (and written) as soon as its last request ends.
  One ``SamplingParams(n=N, seed=...)`` per prompt: prompt ``i`` of a shard gets
  ``derive_seed(shard_seed, i)``; vLLM gives candidate ``j`` the seed ``seed + j`` (its
  parallel-sampling rule), which is what each row records, so
  ``SamplingParams(n=1, seed=row.seed)`` reproduces that row.
- The engine starts worker processes: a script that builds it needs an
  ``if __name__ == "__main__":`` guard (DESIGN.md, environment facts).
"""
from __future__ import annotations

import itertools
import os
from collections import deque
from pathlib import Path
from typing import Any

from prefwork.pipeline.chat import render_prompt
from prefwork.pipeline.engines import check_model_dir
from prefwork.pipeline.sample import Completion, PromptTooLong, SampleConfig, Skipped, apply_stop, derive_seed


def long_prompt(prompt: str, n_tokens: int, context: int, cfg: SampleConfig) -> str:
    """The reason a prompt of ``n_tokens`` cannot be sampled, or '' if it fits."""
    if n_tokens + cfg.max_tokens <= context:
        return ""
    return (f"the prompt has {n_tokens} tokens; the context window is {context} with max_tokens="
            f"{cfg.max_tokens} new tokens")


def check_long(prompt: str, reason: str, cfg: SampleConfig) -> None:
    """Raise for a too-long prompt unless ``cfg.on_long_prompt == 'skip'`` (``sample`` names its file and row)."""
    if reason and cfg.on_long_prompt != "skip":
        raise PromptTooLong(prompt, reason)


class VLLMEngine:
    """Sample with ``vllm.LLM`` (any device vLLM supports; tensor parallel via ``tensor_parallel_size``)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = None, enforce_eager: bool = False, llm: Any = None,
                 **llm_kwargs: Any):
        """Load the model (or wrap an already built ``llm``, which the benchmark shares)."""
        from transformers import AutoTokenizer

        path = check_model_dir(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if llm is None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; fits the small CPU machines
            # One-host engines keep their internal queues on loopback (vLLM otherwise binds the
            # machine's own address); a multi-host deployment sets VLLM_HOST_IP itself.
            os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
            from vllm import LLM
            from vllm.platforms import current_platform

            if current_platform.is_cpu():
                # vLLM 0.32's CPU runner crashes on a seeded request whose prefill is split over
                # steps ("CPU Generator does not use offset"): schedule whole prompts only.
                llm_kwargs.setdefault("enable_chunked_prefill", False)
                # CPUs without AVX-512/AMX emulate bf16 many times slower (DESIGN.md): a bf16
                # checkpoint runs in float32 here unless a dtype is asked for.
                dtype = "float32" if dtype == "auto" else dtype
            llm = LLM(str(path), tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                      max_model_len=max_model_len, enforce_eager=enforce_eager, **llm_kwargs)
        self.llm = llm
        self.context = int(llm.llm_engine.model_config.max_model_len)

    def close(self) -> None:
        """Stop the engine's core process and free its memory now (GPU memory included), not
        whenever the garbage collector gets to it: the loop trains right after sampling."""
        import gc

        import torch

        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def requests(self, prompts: list[str], cfg: SampleConfig, shard_seed: int):
        """(token prompts, sampling params, prompt indices, skip reasons) for one shard."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tok_prompts, params, keep, skipped = [], [], [], {}
        for i, p in enumerate(prompts):
            ids = self.tokenizer(render_prompt(self.tokenizer, p), add_special_tokens=False)["input_ids"]
            reason = long_prompt(p, len(ids), self.context, cfg)
            check_long(p, reason, cfg)
            if reason:
                skipped[i] = reason
                continue
            keep.append(i)
            tok_prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(
                n=cfg.n, seed=derive_seed(shard_seed, i), temperature=cfg.temperature, top_p=cfg.top_p,
                max_tokens=cfg.max_tokens, stop=list(cfg.stop) or None))
        return tok_prompts, params, keep, skipped

    def generate(self, prompts: list[str], cfg: SampleConfig, shard_seed: int) -> list[list[Completion]]:
        return next(iter(self.generate_shards([(prompts, shard_seed)], cfg)))

    def generate_shards(self, shards, cfg: SampleConfig, lookahead: int = 1):
        """Yield each shard's completions, in order, from ``(prompts, shard_seed)`` items.

        Up to ``1 + lookahead`` shards are queued in the engine at once, so vLLM's scheduler
        always has work while a shard's stragglers finish. Leaving the generator early (an
        error, a kill) aborts whatever it had queued.
        """
        engine, queue, items = self.llm.llm_engine, deque(), iter(shards)
        owner: dict[str, tuple[dict, int, Any]] = {}  # request id -> (shard job, prompt index, params)
        try:
            for _ in range(1 + lookahead):
                self._enqueue(next(items, None), cfg, queue, owner)
            while queue:
                if "error" in queue[0]:  # raised in turn: the shards before it are handed back first
                    raise queue[0]["error"]
                if queue[0]["left"] == 0:
                    done = queue.popleft()
                    self._enqueue(next(items, None), cfg, queue, owner)
                    yield done["outs"]
                    continue
                if not engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM finished every request but {queue[0]['left']} of this shard's")
                for res in engine.step():
                    if res.finished and res.request_id in owner:
                        job, i, sp = owner.pop(res.request_id)
                        job["outs"][i] = self._completions(res, sp, cfg)
                        job["left"] -= 1
        finally:
            if owner:
                engine.abort_request(list(owner))

    _ids = itertools.count()

    def _enqueue(self, item, cfg: SampleConfig, queue: deque, owner: dict) -> None:
        """Queue one shard's requests (ids of our own, so outputs map back to their shard)."""
        from vllm.sampling_params import RequestOutputKind

        if item is None:
            return
        prompts, shard_seed = item
        try:
            tok_prompts, params, keep, skipped = self.requests(prompts, cfg, shard_seed)
        except Exception as exc:  # e.g. a prompt too long for the context
            queue.append({"error": exc})
            return
        job = {"outs": [Skipped(reason=skipped.get(i, "")) for i in range(len(prompts))], "left": len(keep)}
        queue.append(job)
        for tp, sp, i in zip(tok_prompts, params, keep):
            sp.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when it ends
            rid = f"prefwork-{next(self._ids)}"
            owner[rid] = (job, i, sp)
            self.llm.llm_engine.add_request(rid, tp, sp)

    @staticmethod
    def _completions(res, sp, cfg: SampleConfig) -> list[Completion]:
        comps = []
        for c in sorted(res.outputs, key=lambda c: c.index):
            text, cut = apply_stop(c.text, cfg.stop)
            reason = "stop" if cut else (c.finish_reason or "length")
            comps.append(Completion(text.strip(), reason, len(c.token_ids), sp.seed + c.index))
        return comps
