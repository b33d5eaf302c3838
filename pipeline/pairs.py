"""Best-vs-worst preference pairs from scored candidates.

Per prompt, chosen = the highest-scoring candidate, rejected = the lowest; ties are broken
by the lowest candidate id, never by length, so the result is deterministic and carries
no length bias of its own. Prompts whose candidates all tie, or whose margin is below
``min_margin``, are dropped and counted. Failed judgments (null score or error) take no part.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from pipeline.schemas import CANDIDATES, PAIRS, SCORES, validate


@dataclass
class PairConfig:
    min_margin: float = field(default=0.0, metadata={"help": "drop pairs whose score margin is at most this "
                                                              "(0 keeps every untied prompt)"})


@dataclass
class PairStats:
    """What pair building kept and dropped, for the run's metrics and report."""

    prompts: int
    pairs: int
    dropped_all_tied: int
    dropped_min_margin: int
    dropped_unscored: int
    mean_chosen_len: float | None
    mean_rejected_len: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def build_pairs(candidates: pl.DataFrame, scores: pl.DataFrame, cfg: PairConfig | None = None
                ) -> tuple[pl.DataFrame, PairStats]:
    """Pairs (pairs contract) and stats from a candidates and a scores table."""
    cfg = cfg or PairConfig()
    candidates = validate(candidates, CANDIDATES)
    scores = validate(scores, SCORES)
    n_prompts = candidates["prompt_id"].n_unique()
    ok = scores.filter(pl.col("error").is_null() & pl.col("score").is_not_null() & pl.col("score").is_not_nan())
    scored = candidates.select("prompt_id", "prompt", "candidate_id", "text").join(
        ok.select("prompt_id", "candidate_id", "score"), on=["prompt_id", "candidate_id"], how="inner")
    best, worst = pl.col("score").max(), pl.col("score").min()
    per_prompt = scored.group_by("prompt_id").agg(
        pl.col("prompt").first(),
        chosen_id=pl.col("candidate_id").filter(pl.col("score") == best).min(),
        rejected_id=pl.col("candidate_id").filter(pl.col("score") == worst).min(),
        chosen_score=best, rejected_score=worst,
    ).with_columns(margin=pl.col("chosen_score") - pl.col("rejected_score"))
    tied = per_prompt.filter(pl.col("margin") == 0)
    kept = per_prompt.filter(pl.col("margin") > max(cfg.min_margin, 0.0))
    texts = scored.select("prompt_id", "candidate_id", "text")
    pairs = (
        kept.join(texts.rename({"candidate_id": "chosen_id", "text": "chosen"}), on=["prompt_id", "chosen_id"])
        .join(texts.rename({"candidate_id": "rejected_id", "text": "rejected"}), on=["prompt_id", "rejected_id"])
        .select(list(PAIRS.required))
        .sort("prompt_id")
    )
    stats = PairStats(
        prompts=n_prompts, pairs=pairs.height, dropped_all_tied=tied.height,
        dropped_min_margin=per_prompt.height - tied.height - kept.height,
        dropped_unscored=n_prompts - per_prompt.height,
        mean_chosen_len=pairs["chosen"].str.len_chars().mean() if pairs.height else None,
        mean_rejected_len=pairs["rejected"].str.len_chars().mean() if pairs.height else None,
    )
    return validate(pairs, PAIRS), stats
