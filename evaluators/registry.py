"""The judge registry: name -> implementation, and the one place where a new judge kind registers.

Names: the judges registered below (``rules``, ``ifeval``: functions of each answer), every
``data/judges/<name>/config.yaml`` (LLM rubric, pairwise and combined judges are data and need no
line here), a judge directory by path, and weighted lists ``"math_1to5:0.7,rules:0.3"``
(``evaluators.combined``). ``get_spec`` resolves a name; an unknown one is an error listing the
valid names. Build a judge with ``evaluators.judges.make_judge``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from prefwork.evaluators.llm_judge import JUDGES_DIR, JudgeSpec, load_spec
from prefwork.evaluators.pairwise import judgments_from_scores


@dataclass
class FunctionJudge:
    """A judge that is a function of each answer, ``score_fn(candidates) -> SCORES`` on 0..1.

    ``applies(task, meta)`` says which rows it has checks for (a combined judge leaves the others
    out of its mean); ``caps``: a failed check caps a combined judge's score at its ``rule_cap``.
    """

    name: str
    score_fn: Callable[[pl.DataFrame], pl.DataFrame]
    applies: Callable[[Any, Any], bool] | None = None
    caps: bool = False
    deterministic = True
    score_range = (0.0, 1.0)

    def score(self, candidates: pl.DataFrame) -> pl.DataFrame:
        return self.score_fn(candidates)

    def compare(self, model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, *,
                judge_repeat: int = 0) -> pl.DataFrame:
        return judgments_from_scores(model_cands, self.score(model_cands), baseline_cands,
                                     self.score(baseline_cands), self.name)

    def close(self) -> None:
        """Nothing to release (the protocol's judges that hold a session release it here)."""


JudgeFactory = Callable[..., Any]  # (**options) -> an evaluators.judges.Judge
#: name -> factory(**options) -> Judge; fill it with ``register_judge``.
JUDGES: dict[str, JudgeFactory] = {}


def register_judge(name: str, factory: JudgeFactory) -> None:
    """Make ``--judge name`` available everywhere (score, win rate, combined lists)."""
    JUDGES[name] = factory


def function_judge(make: Callable[[], FunctionJudge]) -> JudgeFactory:
    """A factory for a ``FunctionJudge`` built by ``make`` (imported on first use); it takes no options."""
    def factory(**opts: Any) -> FunctionJudge:
        judge = make()
        if opts:
            raise ValueError(f"the {judge.name} judge takes no options (got {', '.join(sorted(opts))})")
        return judge
    return factory


def _rules() -> FunctionJudge:
    from prefwork.evaluators.rules import JUDGE_NAME, KNOWN_RULE_TASKS, score_candidates
    return FunctionJudge(JUDGE_NAME, score_candidates, applies=lambda task, meta: task in KNOWN_RULE_TASKS and bool(meta),
                         caps=True)


def _ifeval() -> FunctionJudge:
    from prefwork.evaluators.ifeval import JUDGE_NAME, score_candidates

    def has_instructions(task: Any, meta: Any) -> bool:
        try:
            return bool(meta) and bool(json.loads(meta).get("instructions"))
        except (TypeError, ValueError, AttributeError):
            return False
    return FunctionJudge(JUDGE_NAME, score_candidates, applies=has_instructions)


# =====================================================================================================
# REGISTERED JUDGES: a new judge kind registers here, one line each (its name and its factory).
# Judges written as data (data/judges/<name>/config.yaml, kind rubric | pairwise | combined) need no line.
# =====================================================================================================
register_judge("rules", function_judge(_rules))
register_judge("ifeval", function_judge(_ifeval))


# --- names and specs ----------------------------------------------------------------------------

def judge_names(judges_dir: Path = JUDGES_DIR) -> list[str]:
    """Every judge name: the registered ones (in registration order), then each judge directory."""
    found = sorted(p.parent.name for p in Path(judges_dir).glob("*/config.yaml"))
    return list(JUDGES) + [n for n in found if n not in JUDGES]


def parse_combo(name: str) -> list[tuple[str, float]] | None:
    """``"a:0.7,b:0.3"`` -> [("a", 0.7), ("b", 0.3)]; None for a plain name."""
    if "," not in name and ":" not in name:
        return None
    parts = []
    for item in name.split(","):
        judge, _, weight = item.strip().partition(":")
        try:
            parts.append((judge.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"bad weight in judge list {name!r} (expected name:weight,name:weight)") from None
    return parts


def get_spec(name: str, judges_dir: Path = JUDGES_DIR, rule_cap: float | None = None) -> JudgeSpec:
    """The spec of a judge name: a registered judge (kind ``registered``), a judge directory, or a list."""
    combo = parse_combo(name)
    if combo is not None:
        for part, _ in combo:
            get_spec(part, judges_dir)  # each component must exist
        return JudgeSpec(name=name, kind="combined", components=tuple(combo), rule_cap=rule_cap)
    if name in JUDGES:
        return JudgeSpec(name=name, kind="registered", score_range=(0, 1))
    if ("/" in name or "\\" in name) and (Path(name) / "config.yaml").is_file():  # a judge directory by path
        spec = load_spec(Path(name))
    elif (Path(judges_dir) / name / "config.yaml").is_file():
        spec = load_spec(name, judges_dir)
    else:
        raise ValueError(f"unknown judge {name!r} (known: {', '.join(judge_names(judges_dir))}; "
                         "or a weighted list like 'math_1to5:0.7,rules:0.3')")
    return spec if rule_cap is None else spec.with_overrides(rule_cap=rule_cap)
