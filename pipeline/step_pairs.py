"""Step-level preference pairs (Step-DPO): prompt + correct steps so far, a correct and a wrong next step.

What ``assemble_step_pairs`` does, per solution:

1. split it into steps (``pipeline.steps``) and ask a *step judge* for its first wrong step;
2. for a solution whose first wrong step is ``k``: the pair's prompt is ``step_prompt(problem,
   steps[:k])`` and its rejected answer is ``steps[k]``;
3. sample ``n`` continuations from the policy on exactly that prompt (on-policy), keep each one's
   first step, and ask the judge whether it is a correct next step; the first accepted one is chosen;
4. when none is accepted, the reference solution's step ``k`` is chosen if the problem has a
   reference with that many steps; otherwise the prompt is dropped and counted.

Pairs follow the PAIRS contract with ``step_index = k`` (0-based: the number of correct steps in the
prompt), ``chosen_score`` 1, ``rejected_score`` 0, ``margin`` 1, ``rejected_id`` = the solution's id,
``chosen_id`` = the accepted continuation's index, or -1 for a reference step.

Why here, and judges as objects: ``pipeline`` imports nothing of ours, so the judge (the
deterministic ``evaluators.step_check.CheckStepJudge`` or the LLM ``evaluators.step_judge.LLMStepJudge``)
and the sampling engine (``pipeline.sample.Engine``) are passed in; both satisfy small protocols below.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from prefwork.pipeline.sample import Engine, SampleConfig, derive_seed
from prefwork.pipeline.schemas import PAIRS, PROMPTS, SchemaError, validate
from prefwork.pipeline.store import read_jsonl
from prefwork.pipeline.steps import StepConfig, detect_mode, first_step_of, next_label, separator, split_steps, step_body
from prefwork.pipeline.steps import step_prompt as make_step_prompt


@dataclass
class StepItem:
    """A problem and a list of steps for a step judge (``answer``/``reference_steps`` when known)."""

    problem: str
    steps: list[str]
    answer: float | None = None
    reference_steps: list[str] = field(default_factory=list)


@dataclass
class StepVerdict:
    """A judge's finding. status: correct | error | unlocated | failed; ``first_error`` is 0-based."""

    status: str
    first_error: int | None = None
    reason: str = ""


class StepJudge(Protocol):
    """What assembly needs from a step judge."""

    name: str

    def locate(self, items: list[StepItem]) -> list[StepVerdict]:
        """The first wrong step of each item's steps."""

    def accept(self, items: list[StepItem]) -> list[bool]:
        """Is each item's *last* step a correct next step after the ones before it?"""


@dataclass
class StepPairConfig:
    """How step-level pairs are assembled."""

    n: int = field(default=4, metadata={"help": "continuations sampled from the policy per wrong-step prefix"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the continuations"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass of the continuations"})
    max_tokens: int = field(default=40, metadata={"help": "new tokens per continuation (one step)"})
    seed: int = field(default=0, metadata={"help": "base seed of the continuations"})
    mode: str = field(default="auto", metadata={"help": "step layout: auto, numbered ('Step k:' lines) or paragraphs"})
    use_reference: bool = field(default=True, metadata={
        "help": "when no continuation is correct, choose the reference solution's step (if the problem has one)"})


@dataclass
class StepPairStats:
    """What assembly kept and dropped, for the run's metrics and the CLI summary."""

    solutions: int = 0
    unsplittable: int = 0
    judged_correct: int = 0
    unlocated: int = 0
    judge_failed: int = 0
    with_error: int = 0
    duplicate_prefixes: int = 0
    continuations: int = 0
    chosen_from_policy: int = 0
    chosen_from_reference: int = 0
    dropped_no_correct_step: int = 0
    pairs: int = 0
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def load_solutions(path: str | Path) -> pl.DataFrame:
    """Solutions (``prompt_id``, ``text``, ``solution_id``) from JSONL or Parquet (a candidates file works).

    ``solution_id`` may be given as ``candidate_id``; without either it is the row's place among
    its prompt's solutions. Other fields (e.g. a hand label ``first_error``) are kept.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(str(path), None, None, "file does not exist")
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
    else:
        df = pl.DataFrame(read_jsonl(path), infer_schema_length=None)  # a BOM is fine; errors name the line
    for col in ("prompt_id", "text"):
        if col not in df.columns:
            raise SchemaError(str(path), None, col, "missing required column of a solutions file")
    if "solution_id" not in df.columns:
        df = df.with_columns(solution_id=pl.col("candidate_id") if "candidate_id" in df.columns
                             else pl.int_range(pl.len()).over("prompt_id"))
    df = df.with_columns(pl.col("prompt_id").cast(pl.String), pl.col("solution_id").cast(pl.Int64))
    nulls = df["text"].is_null()
    if nulls.any():
        raise SchemaError(str(path), int(nulls.arg_true()[0]) + 1, "text", "is null")
    return df


def _answer(meta: str | None) -> float | None:
    try:
        value = json.loads(meta).get("answer") if meta else None
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def _reference_step(reference_steps: list[str], k: int, mode: str) -> str | None:
    """The reference's step ``k``, labelled in the layout of the solution it replaces a step of."""
    if k >= len(reference_steps):
        return None
    return next_label(k, mode) + step_body(reference_steps[k])


@dataclass
class _Target:
    pid: str
    solution_id: int
    k: int
    mode: str
    prompt: str
    rejected: str
    item: StepItem


def _targets(problems: pl.DataFrame, solutions: pl.DataFrame, judge: StepJudge, cfg: StepPairConfig,
             stats: StepPairStats) -> list[_Target]:
    """Split and judge every solution; one target per (prompt, wrong step) found."""
    by_id = {r["prompt_id"]: r for r in problems.iter_rows(named=True)}
    items, meta = [], []
    for row, sol in enumerate(solutions.iter_rows(named=True), start=1):
        prob = by_id.get(sol["prompt_id"])
        if prob is None:
            raise SchemaError("solutions", row, "prompt_id", f"{sol['prompt_id']!r} is not a problem's prompt_id")
        stats.solutions += 1
        mode = cfg.mode if cfg.mode != "auto" else detect_mode(sol["text"])
        steps = split_steps(sol["text"], StepConfig(mode))
        if not steps:
            stats.unsplittable += 1
            continue
        ref = split_steps(prob["reference"]) if prob.get("reference") else []
        items.append(StepItem(prob["prompt"], steps, _answer(prob.get("meta")), ref))
        meta.append((sol["prompt_id"], int(sol["solution_id"]), mode))
    targets, seen = [], set()
    for item, (pid, sid, mode), v in zip(items, meta, judge.locate(items)):
        if v.status == "failed":
            stats.judge_failed += 1
        elif v.status == "unlocated" or (v.status == "error" and v.first_error is None):
            stats.unlocated += 1
        elif v.status != "error":
            stats.judged_correct += 1
        else:
            k = v.first_error
            stats.with_error += 1
            prompt = make_step_prompt(item.problem, item.steps[:k], mode)
            if (prompt, item.steps[k]) in seen:
                stats.duplicate_prefixes += 1
                continue
            seen.add((prompt, item.steps[k]))
            targets.append(_Target(pid, sid, k, mode, prompt, item.steps[k], item))
    return targets


def assemble_step_pairs(problems: pl.DataFrame, solutions: pl.DataFrame, judge: StepJudge, engine: Engine,
                        cfg: StepPairConfig | None = None) -> tuple[pl.DataFrame, StepPairStats]:
    """Step-level pairs (PAIRS contract with ``step_index``) and stats; see the module docstring."""
    cfg = cfg or StepPairConfig()
    StepConfig(cfg.mode)  # an unknown mode fails before any work
    problems = validate(problems, PROMPTS, "problems")
    stats = StepPairStats()
    targets = _targets(problems, solutions, judge, cfg, stats)
    chosen: dict[int, tuple[str, int]] = {}
    if targets and cfg.n > 0:
        sample_cfg = SampleConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                  seed=cfg.seed, stop=sorted({separator(t.mode) for t in targets}, key=len),
                                  on_long_prompt="skip")
        outs = engine.generate([t.prompt for t in targets], sample_cfg, derive_seed(cfg.seed, "step_pairs"))
        asks, owners = [], []
        for i, (t, comps) in enumerate(zip(targets, outs)):
            tried = set()
            for cid, comp in enumerate(comps):
                step = first_step_of(comp.text, t.mode, t.k)
                stats.continuations += 1
                if not step_body(step) or step in tried or step == t.rejected:
                    continue
                tried.add(step)
                asks.append(StepItem(t.item.problem, t.item.steps[:t.k] + [step], t.item.answer,
                                     t.item.reference_steps))
                owners.append((i, step, cid))
        for ok, (i, step, cid) in zip(judge.accept(asks) if asks else [], owners):
            if ok and i not in chosen:
                chosen[i] = (step, cid)
    rows = []
    for i, t in enumerate(targets):
        if i in chosen:
            stats.chosen_from_policy += 1
            text, cid = chosen[i]
        else:
            ref = _reference_step(t.item.reference_steps, t.k, t.mode) if cfg.use_reference else None
            if ref is None or ref == t.rejected:
                stats.dropped_no_correct_step += 1
                stats.dropped.append(f"{t.pid}:{t.k}")
                continue
            stats.chosen_from_reference += 1
            text, cid = ref, -1
        rows.append({"prompt_id": f"{t.pid}:{t.k}", "prompt": t.prompt, "chosen": text, "rejected": t.rejected,
                     "chosen_id": cid, "rejected_id": t.solution_id, "chosen_score": 1.0, "rejected_score": 0.0,
                     "margin": 1.0, "step_index": t.k})
    stats.pairs = len(rows)
    pairs = pl.DataFrame(rows, schema={**PAIRS.required, **PAIRS.optional})
    return validate(pairs, PAIRS, "step pairs"), stats
