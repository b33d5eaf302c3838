"""Best-vs-worst preference pairs from scored candidates.

Per prompt, chosen = the highest-scoring candidate, rejected = the lowest; ties are broken
by the lowest candidate id, never by length, so the result is deterministic and carries
no length bias of its own. Prompts whose candidates all tie, or whose margin is below
``min_margin``, are dropped and counted; so are prompts whose only lower-scored answers repeat the
chosen answer's text (``drop_identical``: a pair never has equal chosen and rejected text).
Failed judgments (null score or error) take no part.
With ``pairs_per_prompt`` K > 1 the best candidate is paired with each of the K lowest-scored
distinct answers that still clear the margin (worst first), the "best vs rest" pairing of
iterative DPO recipes: more pairs from the same samples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from prefwork.pipeline.checks import check_fields
from prefwork.pipeline.schemas import CANDIDATES, PAIRS, SCORES, validate


@dataclass
class PairConfig:
    min_margin: float = field(default=0.0, metadata={"help": "drop pairs whose score margin is at most this "
                                                              "(0 keeps every untied prompt)", "min": 0.0})
    pairs_per_prompt: int = field(default=1, metadata={
        "help": "pairs per prompt: the best answer against up to this many of the worst distinct answers "
                "that clear the margin (1 = best vs worst)", "min": 1})

    def __post_init__(self):
        check_fields(self)


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
    #: prompts whose every lower-scored answer has the chosen answer's very text (scored apart by a judge
    #: that is not a pure function of the text: an LLM judge, repeats): no pair, counted like ties
    dropped_identical: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def drop_identical(pairs: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``pairs`` without rows whose chosen text equals the rejected text, and how many there were.

    The one home of rule (c): such a pair teaches nothing (its preference term is exactly zero and
    its gradient vanishes) yet counts in the loss mean and the reward accuracy. ``build_pairs`` never
    makes one; the trainer drops those in a file made elsewhere (``train.dpo``, ``train.launch``).
    """
    same = pairs["chosen"] == pairs["rejected"]
    n = int(same.sum() or 0)
    return (pairs.filter(~same) if n else pairs), n


def build_pairs(candidates: pl.DataFrame, scores: pl.DataFrame, cfg: PairConfig | None = None
                ) -> tuple[pl.DataFrame, PairStats]:
    """Pairs (pairs contract) and stats from a candidates and a scores table.

    A rejected answer never has the chosen answer's text: the best is paired with the lowest-scored
    answers whose text differs; a prompt with none is dropped and counted (``dropped_identical``).
    """
    cfg = cfg or PairConfig()
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
    texts = scored.select("prompt_id", "candidate_id", "text")
    chosen_text = per_prompt.select("prompt_id", "chosen_id").join(
        texts.rename({"candidate_id": "chosen_id", "text": "chosen_text"}), on=["prompt_id", "chosen_id"])
    clearing = (
        scored.join(per_prompt.select("prompt_id", "chosen_score"), on="prompt_id")
        .with_columns(margin=pl.col("chosen_score") - pl.col("score"))
        .filter(pl.col("margin") > max(cfg.min_margin, 0.0))
        .join(chosen_text.select("prompt_id", "chosen_text"), on="prompt_id")
    )
    below = clearing.filter(pl.col("text") != pl.col("chosen_text")).drop("chosen_text").sort(
        ["prompt_id", "score", "candidate_id"])
    if cfg.pairs_per_prompt > 1:  # a repeated rejected text would repeat a pair (one worst is always unique)
        below = below.unique(subset=["prompt_id", "text"], keep="first", maintain_order=True)
    rejected = below.group_by("prompt_id", maintain_order=True).head(cfg.pairs_per_prompt).select(
        "prompt_id", "margin", rejected_id="candidate_id", rejected="text", rejected_score="score")
    pairs = (
        per_prompt.join(rejected, on="prompt_id")
        .join(texts.rename({"candidate_id": "chosen_id", "text": "chosen"}), on=["prompt_id", "chosen_id"])
        .select(list(PAIRS.required))
        .sort(["prompt_id", "rejected_score", "rejected_id"])
    )
    kept = pairs["prompt_id"].n_unique()
    identical = clearing["prompt_id"].n_unique() - below["prompt_id"].n_unique()
    stats = PairStats(
        prompts=n_prompts, pairs=pairs.height, dropped_all_tied=tied.height,
        dropped_min_margin=per_prompt.height - tied.height - kept - identical,
        dropped_unscored=n_prompts - per_prompt.height,
        mean_chosen_len=pairs["chosen"].str.len_chars().mean() if pairs.height else None,
        mean_rejected_len=pairs["rejected"].str.len_chars().mean() if pairs.height else None,
        dropped_identical=identical,
    )
    return validate(pairs, PAIRS), stats
