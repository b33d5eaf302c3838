"""Win-rate comparisons beyond one model's summary: is model a better than model b on the same prompts
and repeats (``paired_difference``), and how much of the spread over repeats is judge noise rather
than generation noise (``decompose_variance``). Same JUDGMENTS contract and definitions as
``evaluators.winrate``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from prefwork.evaluators.winrate import (
    P, bootstrap_prompts, check_judgments, percentile_interval, prompt_cells, sample_std)


def decompose_variance(judgments: pl.DataFrame) -> dict:
    """Split the spread of repeat win rates into judge noise and generation noise.

    Needs a ``judge_repeat`` column: generation repeat ``repeat`` = g was judged several
    times (j). With W[g, j] the win rate of cell (g, j), a one-way random-effects model
    W = mu + a_g + e_gj gives, by the law of total variance,
    Var(one fresh evaluation) = Var(a) + Var(e):

    - judge variance  = pooled within-g variance of W (ddof=1 within each g);
    - generation var. = variance of the g-means (ddof=1) minus judge var * mean(1/J_g)
      (the g-means still carry judge noise averaged over J_g re-judgings), floored at 0;
    - total = generation + judge: the variance of a k-repeat table's rows when each
      repeat is both re-generated and re-judged.

    Returns stds (sqrt of those) plus ``std_observed`` (plain std of all cells) and the
    cells. A component that cannot be estimated (one g, or no g judged twice) is None.
    """
    df = check_judgments(judgments, extra=("judge_repeat",))
    cells = df.group_by("repeat", "judge_repeat").agg(win_rate=P.mean()).drop_nulls("win_rate")
    groups = cells.group_by("repeat").agg(
        mean=pl.col("win_rate").mean(), ss=((pl.col("win_rate") - pl.col("win_rate").mean()) ** 2).sum(),
        J=pl.len()).sort("repeat")
    dof = int((groups["J"] - 1).sum())
    judge_var = float(groups["ss"].sum()) / dof if dof > 0 else None
    gen_var = None
    if groups.height >= 2 and judge_var is not None:
        between = float(np.var(groups["mean"].to_numpy(), ddof=1))
        gen_var = max(0.0, between - judge_var * float((1.0 / groups["J"].cast(pl.Float64)).mean()))
    total = None if gen_var is None else gen_var + judge_var
    root = lambda v: None if v is None else math.sqrt(v)  # noqa: E731
    return {
        "std_total": root(total), "std_judge": root(judge_var), "std_generation": root(gen_var),
        "std_observed": sample_std(cells["win_rate"].to_numpy()),
        "n_generations": groups.height, "n_judge_repeats": int(groups["J"].max()),
        "cells": cells.sort("repeat", "judge_repeat"),
    }


@dataclass
class PairedDifference:
    """Win rate of model a minus model b (same prompts, repeats and baseline); diff = a - b."""

    mean_diff: float | None
    per_repeat: pl.DataFrame
    ci_low: float | None
    ci_high: float | None
    share_boot_le_zero: float | None  # bootstrap share of draws with a not better than b
    n_pairs: int
    n_dropped: int  # pairs where either judgment failed (left out of both rates)
    n_unmatched: int  # rows of a or b with no partner

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "per_repeat"}
        out["per_repeat"] = self.per_repeat.to_dicts()
        return out


def _paired_keys(a: pl.DataFrame, b: pl.DataFrame) -> list[str]:
    keys = ["prompt_id", "repeat"] + (["judge_repeat"] if "judge_repeat" in a.columns and
                                      "judge_repeat" in b.columns else [])
    for name, df in (("a", a), ("b", b)):
        if df.select(pl.struct(keys).is_duplicated().any()).item():
            raise ValueError(f"{name} has several rows per {'+'.join(keys)}; cannot pair them")
    if set(a["baseline"].unique()) != set(b["baseline"].unique()):
        raise ValueError("a and b were judged against different baselines; the difference means nothing")
    return keys


def paired_difference(a: pl.DataFrame, b: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> PairedDifference:
    """Is model a better than model b? Per-repeat and mean win-rate differences, paired.

    Rows are joined on prompt_id + repeat (+ judge_repeat when both have it); a pair where
    either judgment failed is dropped from both sides, so both rates use the same prompts.
    The 95% interval resamples prompts, carrying each prompt's pairs in every repeat.
    """
    a, b = check_judgments(a), check_judgments(b)
    keys = _paired_keys(a, b)
    joined = a.select(*keys, pa=P).join(b.select(*keys, pb=P), on=keys, how="inner")
    n_unmatched = a.height + b.height - 2 * joined.height
    both = joined.filter(pl.col("pa").is_not_null() & pl.col("pb").is_not_null())
    if both.height == 0:
        raise ValueError("a and b share no successfully judged prompt_id+repeat pairs")
    per_repeat = both.group_by("repeat").agg(
        rate_a=pl.col("pa").mean(), rate_b=pl.col("pb").mean(), n=pl.len().cast(pl.Int64),
    ).with_columns(diff=pl.col("rate_a") - pl.col("rate_b")).sort("repeat")
    sums, counts = prompt_cells(both.with_columns(preference=pl.col("pa") - pl.col("pb")))
    lo, hi, share = None, None, None
    if n_boot > 0:
        draws = bootstrap_prompts(sums, counts, n_boot=n_boot, seed=seed)
        lo, hi = percentile_interval(draws)
        share = float(np.mean(draws[~np.isnan(draws)] <= 0))
    return PairedDifference(
        mean_diff=float(per_repeat["diff"].mean()), per_repeat=per_repeat, ci_low=lo, ci_high=hi,
        share_boot_le_zero=share, n_pairs=both.height, n_dropped=joined.height - both.height,
        n_unmatched=n_unmatched)
