"""How well a model already separates each pair: the sDPO curriculum's easiness measure.

``logp_margins`` returns, per pair, the model's mean per-token log-prob of the chosen
answer minus that of the rejected one. Large = the model already prefers chosen = easy.
Per-token means keep long answers from looking hard just for their length. ``chunk_pairs``
is the one place where pairs become easy-to-hard chunks (the loop's chunks stage and the
training entry point both call it).
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefwork.pipeline.curriculum import ChunkConfig, make_chunks
from prefwork.train.logps import concatenated_logps, encode_pairs
from prefwork.train.shared_prompt import SharedPromptCollator


@torch.no_grad()
def logp_margins(model_dir: str | Path, pairs: pl.DataFrame, *, max_length: int = 256,
                 batch_size: int = 32) -> pl.Series:
    """Mean per-token log p(chosen) - log p(rejected) under ``model_dir``, one float per pair row."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    examples = encode_pairs(tokenizer, pairs.iter_rows(named=True), max_length)
    collator = SharedPromptCollator(tokenizer.pad_token_id)  # the prompt runs once per pair
    out: list[float] = []
    for start in range(0, len(examples), batch_size):
        r = concatenated_logps(model, collator(examples[start:start + batch_size]))
        chosen = r["policy_chosen_logps"] / r["chosen_counts"].clamp(min=1)
        rejected = r["policy_rejected_logps"] / r["rejected_counts"].clamp(min=1)
        out += (chosen - rejected).tolist()
    return pl.Series("logp_margin", out, dtype=pl.Float64)


def chunk_pairs(pairs: pl.DataFrame, model_dir: str | Path, cfg: ChunkConfig, *, max_length: int) -> pl.DataFrame:
    """``pairs`` with ``difficulty`` and ``chunk`` (``pipeline.curriculum.make_chunks``); the default
    measure, ``logp_margin``, is read from ``model_dir`` at ``max_length`` tokens (the training length)."""
    margin = logp_margins(model_dir, pairs, max_length=max_length) if cfg.method == "logp_margin" else None
    return make_chunks(pairs, cfg, margin)
