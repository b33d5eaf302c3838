"""Easy-to-hard chunks for stepwise DPO (sDPO, arXiv 2403.19270).

sDPO trains chunk t with the model after chunk t-1 as start and reference, and orders
chunks easy to hard. The paper's easiness is how well the starting model already
separates the pair; our default (``logp_margin``) is the starting model's mean per-token
log-prob of chosen minus rejected (large = easy), computed by ``train.logps`` and passed
in here so this module stays free of model code. ``judge_margin`` (large score margin =
easy) and ``random`` are the alternatives. ``difficulty`` is stored so that lower = easier.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from prefwork.pipeline.schemas import CHUNKS, PAIRS, SchemaError, validate

METHODS = ("logp_margin", "judge_margin", "random")


@dataclass
class ChunkConfig:
    chunks: int = field(default=2, metadata={"help": "number of sDPO steps T (1 = plain DPO on all pairs)"})
    method: str = field(default="logp_margin", metadata={"help": f"difficulty measure: {', '.join(METHODS)}"})
    seed: int = field(default=0, metadata={"help": "seed of the random method"})


def make_chunks(pairs: pl.DataFrame, cfg: ChunkConfig | None = None,
                logp_margin: pl.Series | None = None) -> pl.DataFrame:
    """Add ``difficulty`` and ``chunk`` (0 = easiest) to ``pairs``; chunk sizes differ by at most 1.

    ``logp_margin`` (one value per pair row, same order) is required for the default method.
    Ties in difficulty are broken by ``prompt_id`` so the split is deterministic.
    """
    cfg = cfg or ChunkConfig()
    pairs = validate(pairs, PAIRS)
    if cfg.method not in METHODS:
        raise ValueError(f"unknown curriculum method {cfg.method!r}; valid: {', '.join(METHODS)}")
    if cfg.chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {cfg.chunks}")
    if cfg.method == "logp_margin":
        if logp_margin is None or len(logp_margin) != pairs.height:
            raise SchemaError(None, None, "logp_margin", "the logp_margin method needs one starting-model "
                              f"log-prob margin per pair ({pairs.height} pairs)")
        difficulty = -pl.Series(logp_margin).cast(pl.Float64)
    elif cfg.method == "judge_margin":
        difficulty = -pairs["margin"]
    else:
        difficulty = pl.Series(np.random.default_rng(cfg.seed).random(pairs.height))
    n, t = pairs.height, cfg.chunks
    ranked = pairs.with_columns(difficulty=difficulty.alias("difficulty")).sort(["difficulty", "prompt_id"])
    # row r of n goes to chunk floor(r * t / n): sizes differ by at most one, easiest first
    chunk = (pl.int_range(0, n, eager=True) * t // max(n, 1)).cast(pl.Int64)
    return validate(ranked.with_columns(chunk=chunk), CHUNKS)
