"""The evaluation path: ``evaluate_pair`` (judgments of two sides' answers, nothing dropped) and
``evaluate`` (k-repeat win rate of one or more models against a baseline).

Every win rate goes through ``evaluate_pair``: ``prefwork winrate`` and the ``winrate_report`` flow
(both via ``evaluate``, then ``evaluators.report_winrate.write_run``), the loop's evaluation stage
(``flows.stages.judge_pairwise_stage``) and ``prefwork judge --baseline``. The CLI does not start the
flow: a flow run needs a Prefect server (15-20 s to start a temporary one), which a one-off command
should not pay; both call the same two functions, so they cannot drift apart.

Why: a single win rate hides how much it moves when the same comparison is sampled again.
``evaluate`` samples every model ``k`` times with fresh seeds on the same ``n`` prompts,
judges each answer against the baseline's answer for that prompt and repeat, and hands
the judgments to ``evaluators.winrate`` (per-repeat table, std, min, max, SE, bootstrap
interval, failure bounds, length control).

- Seeds: repeat ``r`` is candidate ``r`` of an ``n=k`` sampling call, and every candidate
  draws its own seed (``pipeline.sample.derive_seed``). The models share one seed base
  (common random numbers, which tightens a paired comparison); a baseline model gets a
  different base, so a model against itself compares two independent samples.
- Baseline: a model directory is sampled afresh each repeat with its own seeds; the word
  ``reference`` uses the prompts' ``reference`` answers, held fixed over repeats.
- Judges come from the one registry (``evaluators.judges.make_judge``): the rule judge, ``ifeval``,
  LLM rubric, pairwise and combined judges alike (a scoring judge compares by its scores).
- Nothing is dropped silently: a (prompt, repeat) with no judgment (a skipped prompt, a
  judge that returned nothing) becomes a failed judgment with ``error`` set, which the
  statistics count and bound instead of shrinking the denominator unnoticed.
- ``rejudge=J`` re-judges the fixed generations J times to split the spread into judge
  and generation noise (``decompose_variance``); a deterministic judge skips it, saying so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from prefwork.evaluators.judges import Judge, make_judge
from prefwork.evaluators.winrate import WinRateSummary, summarize
from prefwork.evaluators.winrate_compare import PairedDifference, decompose_variance, paired_difference
from prefwork.pipeline.checks import check_fields
from prefwork.pipeline.sample import LONG_PROMPT_CHOICES, SampleConfig, derive_seed, sample
from prefwork.pipeline.schemas import CANDIDATES, JUDGMENTS, PROMPTS, SchemaError, validate
from prefwork.pipeline.store import read_table

REFERENCE = "reference"


@dataclass
class EvalConfig:
    """How a win-rate evaluation samples and judges (k repeats of n prompts)."""

    repeats: int = field(default=3, metadata={"help": "k: repeats, each with fresh sampling seeds", "min": 1})
    prompts_per_repeat: int = field(default=0, metadata={
        "help": "n: prompts per repeat (0 = all); the same n prompts in every repeat, drawn with --seed", "min": 0})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the models", "min": 0.0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass", "above": 0.0, "max": 1.0})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per answer", "min": 1})
    seed: int = field(default=0, metadata={"help": "base seed: prompt choice, model and baseline seeds"})
    judge: str = field(default="rules", metadata={"help": "judge (rules, ifeval, or an LLM judge of data/judges)"})
    rejudge: int = field(default=0, metadata={
        "help": "re-judge the fixed generations J times to split judge from generation noise (LLM judges)",
        "min": 0})
    on_long_prompt: str = field(default="error", metadata={
        "help": "a prompt longer than a model's context window: 'error' stops with its file and row, 'skip' "
                "leaves it unanswered (a failed judgment, counted)", "choices": LONG_PROMPT_CHOICES})

    def __post_init__(self):
        check_fields(self)

    def sample_config(self, seed: int) -> SampleConfig:
        return SampleConfig(n=self.repeats, temperature=self.temperature, top_p=self.top_p,
                            max_tokens=self.max_tokens, seed=seed, on_long_prompt=self.on_long_prompt)


# --- prompts and the two sides ------------------------------------------------------------

def select_prompts(prompts: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """The ``n`` prompts every repeat uses: a seeded draw kept in file order (all when n is 0 or >= rows)."""
    prompts = validate(prompts, PROMPTS)
    if n < 0:
        raise ValueError(f"prompts_per_repeat must be >= 0, got {n}")
    if n == 0 or n >= prompts.height:
        return prompts
    rows = prompts.with_row_index("_i").sample(n, seed=seed).sort("_i")
    return rows.drop("_i")


def reference_candidates(prompts: pl.DataFrame, k: int, name: str = REFERENCE) -> pl.DataFrame:
    """The prompts' reference answers as a candidates table, the same text for every repeat."""
    if "reference" not in prompts.columns:
        raise SchemaError(None, None, "reference", "the baseline 'reference' needs a reference answer per prompt")
    missing = prompts["reference"].is_null() | (prompts["reference"].str.strip_chars() == "")
    if missing.any():
        i = int(missing.arg_true()[0])
        raise SchemaError(None, i + 1, "reference", f"prompt {prompts['prompt_id'][i]!r} has no reference answer")
    base = prompts.select("prompt_id", "prompt", pl.col("reference").alias("text"), "task", "meta")
    reps = pl.DataFrame({"candidate_id": list(range(k))}, schema={"candidate_id": pl.Int64})
    out = base.join(reps, how="cross").with_columns(
        model=pl.lit(name), seed=pl.lit(-1, pl.Int64), finish_reason=pl.lit("reference"),
        num_tokens=pl.lit(0, pl.Int64))
    return validate(out.select(CANDIDATES.columns), CANDIDATES).sort("candidate_id", "prompt_id")


def sample_side(prompts: pl.DataFrame, engine, cfg: EvalConfig, seed: int, name: str, out: Path,
                source: str | Path | None = None) -> pl.DataFrame:
    """k answers per prompt from one model (candidate r = repeat r), written to ``out``; ``source``:
    the prompts file a too-long prompt's error names."""
    sample(prompts, engine, out, cfg.sample_config(seed), name, source=source)
    return read_table(out, CANDIDATES)


def complete_judgments(judged: pl.DataFrame, model: pl.DataFrame, baseline: pl.DataFrame,
                       prompts: pl.DataFrame, k: int, model_name: str, baseline_name: str,
                       judge: str) -> pl.DataFrame:
    """Every (prompt, repeat) of the design gets a row: missing ones become failed judgments.

    A prompt the engine skipped, or a pair the judge did not return, would otherwise
    vanish from the denominator; here it is a null preference with the reason in ``error``.
    """
    judged = validate(judged, JUDGMENTS).select(JUDGMENTS.columns)
    grid = prompts.select("prompt_id").join(
        pl.DataFrame({"repeat": list(range(k))}, schema={"repeat": pl.Int64}), how="cross")
    missing = grid.join(judged.select("prompt_id", "repeat"), on=["prompt_id", "repeat"], how="anti")
    if missing.height == 0:
        return judged
    have = lambda c: c.select("prompt_id", pl.col("candidate_id").alias("repeat"), "text")  # noqa: E731
    filled = (missing.join(have(model).rename({"text": "model_text"}), on=["prompt_id", "repeat"], how="left")
              .join(have(baseline).rename({"text": "baseline_text"}), on=["prompt_id", "repeat"], how="left"))
    reason = (pl.when(pl.col("model_text").is_null()).then(pl.lit("model produced no answer"))
              .when(pl.col("baseline_text").is_null()).then(pl.lit("baseline produced no answer"))
              .otherwise(pl.lit("judge returned no judgment")))
    filled = filled.with_columns(error=reason).with_columns(
        pl.col("model_text", "baseline_text").fill_null(""), model=pl.lit(model_name),
        baseline=pl.lit(baseline_name), judge=pl.lit(judge), preference=pl.lit(None, pl.Float64)
    ).with_columns(model_len=pl.col("model_text").str.len_chars().cast(pl.Int64),
                   baseline_len=pl.col("baseline_text").str.len_chars().cast(pl.Int64))
    out = pl.concat([judged, filled.select(JUDGMENTS.columns)], how="vertical_relaxed")
    return validate(out, JUDGMENTS).sort("repeat", "prompt_id")


def _name(cands: pl.DataFrame, given: str | None, default: str) -> str:
    if given:
        return given
    return str(cands["model"][0]) if "model" in cands.columns and cands.height else default


def evaluate_pair(model_cands: pl.DataFrame, baseline_cands: pl.DataFrame, judge: Judge, *,
                  prompts: pl.DataFrame | None = None, repeats: int | None = None, judge_repeat: int = 0,
                  model_name: str | None = None, baseline_name: str | None = None) -> pl.DataFrame:
    """JUDGMENTS of model vs baseline answers for every (prompt, repeat) of the design, none dropped.

    The design is ``prompts`` (their prompt_id; default: every prompt either side answered) x
    ``repeats`` (default: the highest candidate_id + 1 on either side); repeat r is candidate r of
    each side. ``judge.compare`` decides the pairs both sides answered; every other (prompt, repeat)
    becomes a failed judgment (null preference, ``error`` saying which side had no answer), which the
    win-rate statistics count in ``n_errors`` and bound, instead of shrinking the denominator unseen.
    """
    judged = judge.compare(model_cands, baseline_cands, judge_repeat=judge_repeat)
    ids = (prompts.select("prompt_id") if prompts is not None else
           pl.concat([model_cands.select("prompt_id"), baseline_cands.select("prompt_id")]).unique(maintain_order=True))
    if repeats is None:
        top = [c["candidate_id"].max() for c in (model_cands, baseline_cands) if c.height]
        repeats = 1 + int(max(top)) if top else 1
    return complete_judgments(judged, model_cands, baseline_cands, ids, repeats,
                              _name(model_cands, model_name, "model"), _name(baseline_cands, baseline_name, "baseline"),
                              judge.name)


# --- the evaluation -----------------------------------------------------------------------

@dataclass
class EvalResult:
    """What one evaluation produced; ``judgments`` holds every model (column ``model``)."""

    prompts: pl.DataFrame
    judgments: pl.DataFrame
    summaries: dict[str, WinRateSummary]
    baseline: str
    judge: str
    deterministic_judge: bool
    paired: PairedDifference | None = None  # first model minus second
    rejudgments: pl.DataFrame | None = None  # with judge_repeat, when re-judged
    variance: dict[str, dict] = field(default_factory=dict)  # model -> decompose_variance
    candidates: dict[str, Path] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    judge_usage: dict | None = None  # requests, tokens, cost of an LLM judge


def evaluate(prompts: pl.DataFrame, models: dict[str, str | Path], baseline: str | Path, *, cfg: EvalConfig,
             out_dir: str | Path, engine_for: Callable[[Path], Any], baseline_name: str | None = None,
             judge_opts: dict | None = None, prompts_source: str | Path | None = None) -> EvalResult:
    """Run a k-repeat evaluation of ``models`` (label -> model dir) against ``baseline``.

    ``baseline`` is a model directory or ``"reference"``. ``engine_for(model_dir)`` returns
    a sampling engine. Candidates land in ``out_dir/candidates/<label>.parquet``.
    ``prompts_source``: the prompts file, named with the row by a too-long prompt's error.
    """
    if cfg.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {cfg.repeats}")
    if not models:
        raise ValueError("no model to evaluate")
    judge = make_judge(cfg.judge, **(judge_opts or {}))
    chosen = select_prompts(prompts, cfg.prompts_per_repeat, cfg.seed)
    cand_dir = Path(out_dir) / "candidates"
    cand_dir.mkdir(parents=True, exist_ok=True)
    k = cfg.repeats
    seeds = {"model": derive_seed(cfg.seed, "model"), "baseline": derive_seed(cfg.seed, "baseline")}
    result = EvalResult(prompts=chosen, judgments=pl.DataFrame(), summaries={}, baseline="", judge=judge.name,
                        deterministic_judge=bool(judge.deterministic), seeds=seeds)
    frames, rejudged = [], []
    try:
        if str(baseline) == REFERENCE:
            result.baseline = baseline_name or REFERENCE
            base = reference_candidates(chosen, k, result.baseline)
        else:
            result.baseline = baseline_name or str(baseline)
            path = cand_dir / "baseline.parquet"
            base = sample_side(chosen, engine_for(Path(baseline)), cfg, seeds["baseline"], result.baseline, path,
                               prompts_source)
            result.candidates["baseline"] = path
        for label, model_dir in models.items():
            path = cand_dir / f"{_safe(label)}.parquet"
            cands = sample_side(chosen, engine_for(Path(model_dir)), cfg, seeds["model"], label, path, prompts_source)
            result.candidates[label] = path
            j = evaluate_pair(cands, base, judge, prompts=chosen, repeats=k, model_name=label,
                              baseline_name=result.baseline)
            frames.append(j)
            result.summaries[label] = summarize(j, seed=cfg.seed)
            if cfg.rejudge > 1 and not judge.deterministic:
                reps = [j.with_columns(judge_repeat=pl.lit(0, pl.Int64))]
                for jr in range(1, cfg.rejudge):
                    again = evaluate_pair(cands, base, judge, prompts=chosen, repeats=k, judge_repeat=jr,
                                          model_name=label, baseline_name=result.baseline)
                    reps.append(again.with_columns(judge_repeat=pl.lit(jr, pl.Int64)))
                both = pl.concat(reps)
                rejudged.append(both)
                result.variance[label] = decompose_variance(both)
    finally:
        result.judge_usage = judge.usage() if hasattr(judge, "usage") else None
        if hasattr(judge, "close"):  # an LLM judge's own session
            judge.close()
    if cfg.rejudge > 1 and judge.deterministic:
        result.notes.append(f"judge '{judge.name}' is deterministic: re-judging gives the same verdicts, so all "
                            "of the spread is generation noise; --rejudge skipped")
    result.judgments = pl.concat(frames)
    result.rejudgments = pl.concat(rejudged) if rejudged else None
    labels = list(models)
    if len(labels) >= 2:
        a, b = labels[0], labels[1]
        result.paired = paired_difference(result.judgments.filter(pl.col("model") == a),
                                          result.judgments.filter(pl.col("model") == b), seed=cfg.seed)
    return result


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80] or "model"


def model_label(model_dir: str | Path) -> str:
    """A short name for a model directory: its name, or parent/name when the name is generic."""
    p = Path(str(model_dir).rstrip("/"))
    if p.name in ("model", "policy", "final", "checkpoint", "") and p.parent.name:
        return f"{p.parent.name}/{p.name}"
    return p.name or str(model_dir)
