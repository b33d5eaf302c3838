"""Combined judges: a weighted mean of other judges' scores (``"math_1to5:0.7,rules:0.3"`` or a
``kind: combined`` judge directory with ``judges: [{name, weight}]``).

Each component's score is normalised to 0..1 by its range (rubric: (s - lo) / (hi - lo); rule-style
judges already are), the weighted mean is taken over the components that apply to the row (the rule
judge does not apply to a task it has no rules for), and with ``rule_cap`` set the result is capped at
that value when any rule failed. Each component's own score stays in ``detail``; a failed component
fails the row (null score, error set). The components are scored by ``evaluators.judges.JudgeSession``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import polars as pl

from prefwork.pipeline.schemas import SCORES, validate


@dataclass
class Component:
    """One component judge's scores of the candidates, with its weight, range and applicability."""

    name: str
    weight: float
    score_range: tuple[float, float]
    scores: pl.DataFrame
    applies: Callable[[Any, Any], bool] | None = None  # (task, meta) -> bool; None: every row
    caps: bool = False  # a failed check caps the combined score at rule_cap


def scores_frame(candidates: pl.DataFrame, judge: str, results: list[tuple]) -> pl.DataFrame:
    """A SCORES table from (score, detail dict, error) per candidates row, in order."""
    out = pl.DataFrame({
        "prompt_id": candidates["prompt_id"].cast(pl.String), "candidate_id": candidates["candidate_id"].cast(pl.Int64),
        "judge": [judge] * candidates.height,
        "score": pl.Series([r[0] for r in results], dtype=pl.Float64),
        "detail": pl.Series([json.dumps(r[1], ensure_ascii=False) for r in results], dtype=pl.String),
        "error": pl.Series([r[2] for r in results], dtype=pl.String),
    })
    return validate(out, SCORES)


def _row(parts: list[Component], i: int, task, meta, rule_cap: float | None) -> tuple:
    detail: dict[str, Any] = {"judges": {}}
    total = wsum = 0.0
    errors, capped = [], False
    for c in parts:
        s, err = c.scores["score"][i], c.scores["error"][i]
        if c.applies is not None and not c.applies(task, meta):
            detail["judges"][c.name] = {"applies": False}
            continue
        lo, hi = c.score_range
        norm = None if s is None else (s - lo) / (hi - lo)
        detail["judges"][c.name] = {"score": s, "normalised": norm, "weight": c.weight, "error": err}
        if err or norm is None:
            errors.append(f"{c.name}: {err or 'no score'}")
            continue
        total += c.weight * norm
        wsum += c.weight
        capped |= c.caps and rule_cap is not None and s < 1.0
    if errors or wsum == 0:
        return None, detail, "; ".join(errors) or "no component judge applies"
    score = total / wsum
    if capped and score > rule_cap:
        score, detail["rule_capped"] = float(rule_cap), True
    return score, detail, None


def combine(name: str, candidates: pl.DataFrame, parts: list[Component], rule_cap: float | None = None) -> pl.DataFrame:
    """The combined judge's SCORES table over ``candidates`` from its components' scores."""
    col = lambda c: candidates[c].to_list() if c in candidates.columns else [None] * candidates.height  # noqa: E731
    tasks, metas = col("task"), col("meta")
    return scores_frame(candidates, name, [_row(parts, i, tasks[i], metas[i], rule_cap)
                                           for i in range(candidates.height)])
