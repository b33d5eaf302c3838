"""sDPO (arXiv 2403.19270): preference data used step by step, easy to hard.

The CHUNKS table splits the pairs into chunks (``chunk`` 0 = easiest). Step t trains on
chunk t starting from the model after step t-1, and that same model is its reference
(its log-probs are precomputed by ``train_dpo`` at the start of the step), so the
reference grows more aligned as the steps go. Step 0 starts from ``model_dir``.
``schedule="dpo"`` is the baseline: all chunks at once, one DPO run against ``model_dir``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from prefwork.pipeline.schemas import CHUNKS, PAIRS, validate
from prefwork.pipeline.store import write_json
from prefwork.train.dpo import DPOConfig, train_dpo

log = logging.getLogger(__name__)
SCHEDULES = ("sdpo", "dpo")


def step_dir(out_dir: str | Path, step: int) -> Path:
    """Run directory of sDPO step ``step`` (its final model is ``step_dir(...)/final``)."""
    return Path(out_dir) / f"step_{step}"


def _pairs_of(chunks: pl.DataFrame) -> pl.DataFrame:
    """The PAIRS columns of chunk rows (``chunk`` and ``difficulty`` dropped)."""
    return chunks.select([c for c in chunks.columns if c in PAIRS.columns])


def train_sdpo(model_dir: str | Path, chunks: pl.DataFrame, out_dir: str | Path, cfg: DPOConfig | None = None,
               *, schedule: str = "sdpo") -> Path:
    """Train over the chunks with ``schedule`` ("sdpo" or "dpo"); return the final model dir.

    sdpo: one ``train_dpo`` run per chunk in ``out_dir/step_{t}/``, each from (and with the
    reference of) the previous step's ``final/``. A step whose ``final/`` exists is skipped,
    so a re-run resumes where it stopped (an unfinished step resumes from its checkpoint).
    dpo: a single run on all chunks in ``out_dir/dpo/``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{schedule}'; valid schedules: {', '.join(SCHEDULES)}")
    cfg = cfg or DPOConfig()
    chunks = validate(chunks, CHUNKS, "chunks given to train_sdpo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(chunks["chunk"].unique().to_list())
    write_json(out_dir / "sdpo.json", {"schedule": schedule, "model_dir": str(model_dir), "chunks": order,
                                       "pairs_per_chunk": [int((chunks["chunk"] == c).sum()) for c in order]})
    if schedule == "dpo":
        return train_dpo(model_dir, _pairs_of(chunks), out_dir / "dpo", cfg)
    current = Path(model_dir)
    for t, chunk in enumerate(order):
        run = step_dir(out_dir, t)
        if (run / "final").is_dir():
            log.info("sDPO step %d (chunk %s) already finished in %s: skipped", t, chunk, run)
        else:
            log.info("sDPO step %d: chunk %s from %s", t, chunk, current)
            train_dpo(current, _pairs_of(chunks.filter(pl.col("chunk") == chunk)), run, cfg)
        current = run / "final"
    return current
