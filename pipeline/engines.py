"""Sampling engines behind ``pipeline.sample.Engine``.

- ``TransformersEngine``: ``model.generate`` with left padding; the no-install fallback.
  Candidate ``j`` of a shard is drawn in one batched call over the shard's prompts with
  its own seed, so every candidate records a seed that reproduces it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from prefwork.pipeline.chat import render_prompt
from prefwork.pipeline.sample import Completion, PromptTooLong, SampleConfig, Skipped, apply_stop, derive_seed
from prefwork.pipeline.schemas import SchemaError


def check_model_dir(model_dir: str | Path) -> Path:
    """A clear error for a model directory that does not exist or is not a HF model."""
    path = Path(model_dir)
    if not path.is_dir():
        raise SchemaError(str(path), None, None, "model directory does not exist")
    if not (path / "config.json").exists():
        raise SchemaError(str(path), None, "config.json", "is not a Hugging Face model directory (no config.json)")
    return path


def stop_token_ids(model, tokenizer) -> list[int]:
    """The token ids that end an answer: the generation config's ``eos_token_id`` (one id or a list,
    e.g. Llama 3's end-of-text and end-of-turn) plus the tokenizer's EOS, as vLLM stops on them too."""
    gen = getattr(model, "generation_config", None)
    ids = getattr(gen, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model has no end-of-sequence token (generation_config.eos_token_id and the "
                         "tokenizer's eos_token are both unset): answers would never stop")
    return ids


class TransformersEngine:
    """Sample with ``transformers`` ``generate`` on CPU (or whatever device torch picks)."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, threads: int | None = None, batch_size: int = 128):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_model_dir(model_dir)
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.batch_size = batch_size
        self.eos_ids = stop_token_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]

    def _encode(self, prompts: list[str], cfg: SampleConfig) -> tuple[list[list[int]], list[int]]:
        """Token ids per prompt, and the indices of prompts that fit the context window."""
        ids = [self.tokenizer(render_prompt(self.tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
        limit = self.context - cfg.max_tokens
        too_long = [i for i, x in enumerate(ids) if len(x) > limit]
        if too_long and cfg.on_long_prompt == "error":
            i = too_long[0]
            raise PromptTooLong(prompts[i], self._too_long(len(ids[i]), cfg))
        return ids, [i for i in range(len(ids)) if i not in set(too_long)]

    def _too_long(self, n_tokens: int, cfg: SampleConfig) -> str:
        return (f"the prompt has {n_tokens} tokens; the context window is {self.context} with max_tokens="
                f"{cfg.max_tokens} new tokens")

    @torch.inference_mode()
    def _generate_batch(self, ids: list[list[int]], cfg: SampleConfig, seed: int) -> list[Completion]:
        pad, eos = self.pad_id, self.eos_ids
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        torch.manual_seed(seed)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=mask, do_sample=cfg.temperature > 0,
            temperature=cfg.temperature if cfg.temperature > 0 else None, top_p=cfg.top_p,
            max_new_tokens=cfg.max_tokens, pad_token_id=pad, eos_token_id=eos,
        )[:, width:]
        comps = []
        for row in out.tolist():
            end = next((k for k, t in enumerate(row) if t in eos), None)
            ended = end is not None
            toks = row[:end] if ended else row
            text, cut = apply_stop(self.tokenizer.decode(toks, skip_special_tokens=True), cfg.stop)
            comps.append(Completion(text.strip(), "stop" if ended or cut else "length", len(toks), seed))
        return comps

    def generate(self, prompts: list[str], cfg: SampleConfig, shard_seed: int) -> list[list[Completion]]:
        ids, keep = self._encode(prompts, cfg)
        kept = set(keep)  # the others are too long: recorded as skipped, with the reason
        outs: list[list[Completion]] = [[] if i in kept else Skipped(self._too_long(len(ids[i]), cfg))
                                        for i in range(len(prompts))]
        for j in range(cfg.n):
            seed = derive_seed(shard_seed, j)
            for start in range(0, len(keep), self.batch_size):
                idx = keep[start:start + self.batch_size]
                for i, comp in zip(idx, self._generate_batch([ids[i] for i in idx], cfg, seed)):
                    outs[i].append(comp)
        return outs
