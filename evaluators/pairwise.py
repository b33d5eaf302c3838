"""Pairwise judgments: model answers against baseline answers of the same (prompt, repeat).

Two ways to decide a pair, both giving the JUDGMENTS contract (``pipeline.schemas``):

- ``judgments_from_scores``: from per-answer scores (the rule judge, ``ifeval``, a rubric): the
  higher score wins, equal scores tie (0.5), a failed score fails the judgment;
- ``LLMPairwiseJudge``: an LLM asked "A or B?" (``data/judges/pairwise``). ``orders="both"``
  (default) asks twice, model first and baseline first; the verdicts, read from the model's side,
  must agree or the judgment is a tie. ``orders="random"`` asks once in an order drawn from
  ``(seed, prompt_id, repeat)``, halving the cost. Identical answers tie with no call.

Repeat ``r`` of an evaluation is candidate ``r`` of each side. A failed judgment has a null
``preference`` and ``error`` set; the win-rate statistics count it and leave it out of the rate.
Pairs one side lacks are not invented here: ``evaluators.evaluate.evaluate_pair`` adds them as
failures, so they never vanish from the denominator.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from typing import Callable

import polars as pl

from prefwork.evaluators.judge_cache import JudgeCache
from prefwork.evaluators.llm_client import JudgeClient
from prefwork.evaluators.llm_judge import JudgeSpec, Verdict, call_judge, json_schema_format, prompt_text, render
from prefwork.evaluators.parsers import parse_choice
from prefwork.pipeline.schemas import JUDGMENTS, validate

ORDERS = ("both", "random")


def pair_up(model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, carry: tuple[str, ...] = ()) -> pl.DataFrame:
    """One row per (prompt_id, repeat = candidate_id) both sides answered: texts, model names, ``carry`` columns.

    Columns: prompt_id, repeat, [prompt], model, model_text, baseline, baseline_text, and
    ``model_<c>``/``baseline_<c>`` for each carried column; sorted by repeat, prompt_id.
    """
    def side(df: pl.DataFrame, tag: str, name: str) -> pl.DataFrame:
        return df.select("prompt_id", "candidate_id", pl.col("text").alias(f"{tag}_text"), pl.col("model").alias(name),
                         *(pl.col(c).alias(f"{tag}_{c}") for c in carry))
    m = side(model_cands, "model", "model")
    if "prompt" in model_cands.columns:
        m = m.with_columns(model_cands["prompt"])
    both = m.join(side(baseline_cands, "baseline", "baseline"), on=["prompt_id", "candidate_id"], how="inner")
    return both.rename({"candidate_id": "repeat"}).sort(["repeat", "prompt_id"])


def to_judgments(pairs: pl.DataFrame, judge: str, preference, error) -> pl.DataFrame:
    """The JUDGMENTS table of ``pair_up`` rows with their ``preference`` and ``error`` (Series or expressions)."""
    out = pairs.select(
        "prompt_id", "repeat", "model", "baseline", pl.lit(judge).alias("judge"), "model_text", "baseline_text",
        pl.col("model_text").str.len_chars().cast(pl.Int64).alias("model_len"),
        pl.col("baseline_text").str.len_chars().cast(pl.Int64).alias("baseline_len"),
        preference.cast(pl.Float64).alias("preference"), error.cast(pl.String).alias("error"))
    return validate(out, JUDGMENTS)


def judgments_from_scores(model_cands: pl.DataFrame, model_scores: pl.DataFrame,
                          baseline_cands: pl.DataFrame, baseline_scores: pl.DataFrame,
                          judge: str = "rules") -> pl.DataFrame:
    """One judgment per (prompt, repeat) present on both sides: the higher score wins, equal scores tie."""
    def scored(cands: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
        return cands.join(scores.select("prompt_id", "candidate_id", "score", "error"),
                          on=["prompt_id", "candidate_id"], how="left")
    both = pair_up(scored(model_cands, model_scores), scored(baseline_cands, baseline_scores), carry=("score", "error"))
    ms, bs = pl.col("model_score"), pl.col("baseline_score")
    failed = ms.is_null() | bs.is_null() | ms.is_nan() | bs.is_nan()
    preference = pl.when(failed).then(None).when(ms > bs).then(1.0).when(ms < bs).then(0.0).otherwise(0.5)
    error = pl.when(failed).then(pl.coalesce("model_error", "baseline_error", pl.lit("score missing"))).otherwise(None)
    return to_judgments(both, judge, preference, error)


def _order_seed(seed: int, prompt_id: str, repeat: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{prompt_id}|{repeat}".encode()).digest()[:8], "big")


@dataclass
class LLMPairwiseJudge:
    """Compares two answers to one prompt; ``spec.choices`` = (label of A, label of B, label of a tie)."""

    spec: JudgeSpec
    orders: str | None = None

    def __post_init__(self):
        self.name = self.spec.name
        self.orders = self.orders or self.spec.orders
        if self.orders not in ORDERS:
            raise ValueError(f"pairwise orders must be one of {', '.join(ORDERS)}, got {self.orders!r}")
        if len(self.spec.choices) < 2:
            raise ValueError(f"judge {self.name!r}: choices needs labels for A and B (and optionally a tie)")

    def _extra(self) -> dict:
        if self.spec.structured == "vllm":
            return {"extra_body": {"structured_outputs": {"choice": list(self.spec.choices)}}}
        if self.spec.structured == "openai":
            return {"response_format": json_schema_format("verdict", {"winner": {"type": "string",
                                                                                  "enum": list(self.spec.choices)}})}
        return {}

    async def ask(self, client: JudgeClient, cache: JudgeCache, prompt: str, a: str, b: str,
                      repeat: int = 0) -> Verdict:
        """One call with ``a`` shown first: ``Verdict(value=1.0 | 0.0 | 0.5)`` from A's side."""
        user = render(self.spec.template, prompt=prompt_text(prompt), answer_a=a, answer_b=b)
        labels = self.spec.choices
        score = {labels[0]: 1.0, labels[1]: 0.0, **({labels[2]: 0.5} if len(labels) > 2 else {})}

        def parse(text):
            c = parse_choice(text, labels)
            return None if c is None else score[c]
        return await call_judge(self.spec, client, cache, kind="pairwise", user=user,
                                inputs={"prompt": prompt, "a": a, "b": b}, seed=self.spec.seed + repeat,
                                extra=self._extra(), parse=parse)

    async def judge_pair(self, client: JudgeClient, cache: JudgeCache, prompt_id: str, prompt: str,
                         model_text: str, baseline_text: str, repeat: int = 0) -> tuple[float | None, dict, str | None]:
        """(preference from the model's side, detail, error) for one (prompt, repeat)."""
        if (model_text or "").strip() == (baseline_text or "").strip():
            return 0.5, {"identical": True}, None
        if self.orders == "both":
            first, second = await asyncio.gather(
                self.ask(client, cache, prompt, model_text, baseline_text, repeat),
                self.ask(client, cache, prompt, baseline_text, model_text, repeat))
            detail = {"model_first": first.value, "baseline_first": None if second.value is None else 1 - second.value,
                      "raw": [first.raw, second.raw]}
            err = first.error or second.error
            if err:
                return None, detail, err
            v1, v2 = first.value, 1.0 - second.value
            detail["position_consistent"] = v1 == v2
            return (v1 if v1 == v2 else 0.5), detail, None
        model_first = random.Random(_order_seed(self.spec.seed, prompt_id, repeat)).random() < 0.5
        a, b = (model_text, baseline_text) if model_first else (baseline_text, model_text)
        v = await self.ask(client, cache, prompt, a, b, repeat)
        detail = {"model_first": model_first, "raw": [v.raw]}
        if v.error:
            return None, detail, v.error
        return (v.value if model_first else 1.0 - v.value), detail, None

    async def judge_rows(self, client: JudgeClient, cache: JudgeCache, rows: list[dict],
                         progress: Callable[[int], None] | None = None) -> list[tuple]:
        """``judge_pair`` over rows with prompt_id, prompt, model_text, baseline_text, repeat (in order)."""
        async def one(r):
            out = await self.judge_pair(client, cache, r["prompt_id"], r["prompt"], r["model_text"],
                                        r["baseline_text"], r.get("repeat", 0))
            if progress:
                progress(1)
            return out
        return list(await asyncio.gather(*(one(r) for r in rows)))
