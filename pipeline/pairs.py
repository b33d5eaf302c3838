"""Best-vs-worst preference pairs from scored candidates.

Per prompt, chosen = the highest-scoring candidate, rejected = the lowest; ties are broken
by the lowest candidate id, never by length, so the result is deterministic and carries
no length bias of its own. Prompts whose candidates all tie, or whose margin is below
``min_margin``, are dropped and counted. Failed judgments (null score or error) take no part.
With ``pairs_per_prompt`` K > 1 the best candidate is paired with each of the K lowest-scored
distinct answers that still clear the margin (worst first), the "best vs rest" pairing of
iterative DPO recipes: more pairs from the same samples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from prefwork.pipeline.schemas import CANDIDATES, PAIRS, SCORES, validate


@dataclass
class PairConfig:
    min_margin: float = field(default=0.0, metadata={"help": "drop pairs whose score margin is at most this "
                                                              "(0 keeps every untied prompt)"})
    pairs_per_prompt: int = field(default=1, metadata={
        "help": "pairs per prompt: the best answer against up to this many of the worst distinct answers "
                "that clear the margin (1 = best vs worst)"})


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
    if cfg.pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be at least 1, got {cfg.pairs_per_prompt}")
    candidates = validate(candidates, CANDIDATES)
    scores = validate(scores, SCORES)
    n_prompts = candidates["prompt_id"].n_unique()
    ok = scores.filter(pl.col("error").is_null() & pl.col("score").is_not_null() & pl.col("score").is_not_nan())
    scored = candidates.select("prompt_id", "prompt", "candidate_id", "text").join(
        ok.select("prompt_id", "candidate_id", "score"), on=["prompt_id", "candidate_id"], how="inner")
    best = pl.col("score").max()
    per_prompt = scored.group_by("prompt_id").agg(
        pl.col("prompt").first(),
        chosen_id=pl.col("candidate_id").filter(pl.col("score") == best).min(),
        chosen_score=best, worst_score=pl.col("score").min(),
    )
    tied = per_prompt.filter(pl.col("chosen_score") == pl.col("worst_score"))
    below = (
        scored.join(per_prompt.select("prompt_id", "chosen_score"), on="prompt_id")
        .with_columns(margin=pl.col("chosen_score") - pl.col("score"))
        .filter(pl.col("margin") > max(cfg.min_margin, 0.0))
        .sort(["prompt_id", "score", "candidate_id"])
    )
    if cfg.pairs_per_prompt > 1:  # a repeated rejected text would repeat a pair (one worst is always unique)
        below = below.unique(subset=["prompt_id", "text"], keep="first", maintain_order=True)
    rejected = below.group_by("prompt_id", maintain_order=True).head(cfg.pairs_per_prompt).select(
        "prompt_id", "margin", rejected_id="candidate_id", rejected="text", rejected_score="score")
    texts = scored.select("prompt_id", "candidate_id", "text")
    pairs = (
        per_prompt.join(rejected, on="prompt_id")
        .join(texts.rename({"candidate_id": "chosen_id", "text": "chosen"}), on=["prompt_id", "chosen_id"])
        .select(list(PAIRS.required))
        .sort(["prompt_id", "rejected_score", "rejected_id"])
    )
    kept = pairs["prompt_id"].n_unique()
    stats = PairStats(
        prompts=n_prompts, pairs=pairs.height, dropped_all_tied=tied.height,
        dropped_min_margin=per_prompt.height - tied.height - kept,
        dropped_unscored=n_prompts - per_prompt.height,
        mean_chosen_len=pairs["chosen"].str.len_chars().mean() if pairs.height else None,
        mean_rejected_len=pairs["rejected"].str.len_chars().mean() if pairs.height else None,
    )
    return validate(pairs, PAIRS), stats
