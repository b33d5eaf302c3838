"""Pairwise judgments of a model against a baseline from per-answer scores (the rule judge).

Repeat ``r`` of an evaluation is candidate ``r`` of each side (each sampled with its own
seed), so ``k`` repeats cost one ``n=k`` sampling call per model. The higher score wins,
equal scores tie (0.5); a side whose score failed makes the judgment fail (null preference
with ``error`` set), which the win-rate statistics count and leave out of the rate.
"""
from __future__ import annotations

import polars as pl

from prefwork.pipeline.schemas import JUDGMENTS, validate


def _side(cands: pl.DataFrame, scores: pl.DataFrame, tag: str) -> pl.DataFrame:
    joined = cands.select("prompt_id", "candidate_id", "text", "model").join(
        scores.select("prompt_id", "candidate_id", "score", "error"), on=["prompt_id", "candidate_id"], how="left")
    return joined.rename({"text": f"{tag}_text", "model": tag, "score": f"{tag}_score", "error": f"{tag}_error"})


def judgments_from_scores(model_cands: pl.DataFrame, model_scores: pl.DataFrame,
                          baseline_cands: pl.DataFrame, baseline_scores: pl.DataFrame,
                          judge: str = "rules") -> pl.DataFrame:
    """One judgment per (prompt, repeat) present on both sides, in the judgments contract."""
    m, b = _side(model_cands, model_scores, "model"), _side(baseline_cands, baseline_scores, "baseline")
    both = m.join(b, on=["prompt_id", "candidate_id"], how="inner")
    ms, bs = pl.col("model_score"), pl.col("baseline_score")
    failed = ms.is_null() | bs.is_null() | ms.is_nan() | bs.is_nan()
    out = both.select(
        "prompt_id", pl.col("candidate_id").alias("repeat"), "model", "baseline", pl.lit(judge).alias("judge"),
        "model_text", "baseline_text",
        pl.col("model_text").str.len_chars().cast(pl.Int64).alias("model_len"),
        pl.col("baseline_text").str.len_chars().cast(pl.Int64).alias("baseline_len"),
        pl.when(failed).then(None).when(ms > bs).then(1.0).when(ms < bs).then(0.0).otherwise(0.5)
        .alias("preference"),
        pl.when(failed).then(pl.coalesce("model_error", "baseline_error", pl.lit("score missing")))
        .otherwise(None).alias("error"),
    ).sort(["repeat", "prompt_id"])
    return validate(out, JUDGMENTS)
