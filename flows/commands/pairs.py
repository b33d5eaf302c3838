"""``prefwork pairs``: preference pairs, whole-answer (best vs worst) or step-level (Step-DPO).

Thin wiring over ``pipeline.pairs.build_pairs`` and ``pipeline.step_pairs.assemble_step_pairs``;
writes the PAIRS Parquet atomically and its stats beside it (``<out>.stats.json``), and prints
what was kept and dropped.
"""
from __future__ import annotations

import argparse

from prefwork.flows.options import add_dataclass, from_args
from prefwork.flows.outcome import add_outcome_options
from prefwork.pipeline.pairs import PairConfig
from prefwork.pipeline.step_pairs import StepPairConfig

NAME = "pairs"
HELP = "build (prompt, chosen, rejected) pairs: best vs worst candidate, or step-level (--step-level)"
DESCRIPTION = HELP + """.

whole answers:  prefwork pairs --candidates C.parquet --scores S.parquet --out pairs.parquet
step level:     prefwork pairs --step-level --problems data/math/problems.jsonl \\
                    --solutions data/math/solutions.jsonl --policy MODEL_DIR --judge check --out step_pairs.parquet

Step level: each solution is split into steps, a step judge finds its first wrong step
(--judge check: the deterministic arithmetic checker; --judge llm: an LLM judge behind --base-url),
continuations are sampled from --policy on the prompt + the steps before the error and checked, and
a pair is (prompt + steps before the error, a correct step, the wrong step) with its step_index.
When no continuation is correct the reference solution's step is chosen, else the prompt is dropped."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="pairs Parquet file to write")
    parser.add_argument("--candidates", help="candidates Parquet (whole-answer pairs)")
    parser.add_argument("--scores", help="scores Parquet (whole-answer pairs)")
    add_dataclass(parser, PairConfig)
    step = parser.add_argument_group("step level")
    step.add_argument("--step-level", action="store_true", help="build step-level (Step-DPO) pairs")
    step.add_argument("--problems", help="problems file (prompts contract: prompt, reference, meta.answer)")
    step.add_argument("--solutions", help="solutions file (.jsonl/.parquet: prompt_id, text, solution_id)")
    step.add_argument("--policy", help="policy model directory the continuations are sampled from")
    step.add_argument("--judge", choices=("check", "llm"), default="check",
                      help="step judge: deterministic arithmetic checker, or an LLM judge (--base-url)")
    step.add_argument("--threads", type=int, default=None, help="torch threads of the sampling engine")
    add_dataclass(parser, StepPairConfig, prefix="step_")
    from prefwork.evaluators.step_judge import StepJudgeConfig

    add_dataclass(parser, StepJudgeConfig, prefix="judge_")
    parser.add_argument("--base-url", dest="base_url", default=None, help="judge server (same as --judge-base-url)")
    add_outcome_options(parser, strict=False)
    parser.set_defaults(func=run)


def _need(args, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise ValueError(f"prefwork pairs{' --step-level' if args.step_level else ''} needs {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from prefwork.pipeline.schemas import PAIRS
    from prefwork.pipeline.store import write_json, write_output

    console = Console(stderr=True)
    # a judge server that cannot be reached (RuntimeError) is one error line from the CLI (flows.cli)
    pairs, info = step_level(args, console) if args.step_level else whole_answers(args)
    out = write_output(pairs, args.out, PAIRS, allow_empty=args.allow_empty)
    stats_path = write_json(f"{args.out}.stats.json", info)
    table = Table(title=f"pairs → {out}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key, value in info.items():
        if not isinstance(value, list):
            table.add_row(key, f"{value:.3g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"wrote {out} ({pairs.height} pairs); stats in {stats_path}", highlight=False, soft_wrap=True)
    return 0


def whole_answers(args):
    from prefwork.pipeline.pairs import build_pairs
    from prefwork.pipeline.schemas import CANDIDATES, SCORES
    from prefwork.pipeline.store import read_table

    _need(args, "candidates", "scores")
    cfg = from_args(PairConfig, args)
    # read with their contracts: an error names the file, the row and the field (not "input")
    pairs, stats = build_pairs(read_table(args.candidates, CANDIDATES), read_table(args.scores, SCORES), cfg)
    return pairs, stats.to_dict()


def step_level(args, console):
    from prefwork.evaluators.step_check import CheckStepJudge
    from prefwork.pipeline.engines import TransformersEngine
    from prefwork.pipeline.prompts import load_prompts
    from prefwork.pipeline.step_pairs import assemble_step_pairs, load_solutions

    _need(args, "problems", "solutions", "policy")
    problems, solutions = load_prompts(args.problems), load_solutions(args.solutions)  # fail fast on bad input
    if args.judge == "llm":
        from prefwork.evaluators.step_judge import LLMStepJudge, StepJudgeConfig

        jcfg = from_args(StepJudgeConfig, args, prefix="judge_")
        jcfg.base_url = args.base_url or jcfg.base_url
        if not jcfg.base_url:
            raise ValueError("--judge llm needs --base-url (an OpenAI-compatible server, e.g. vLLM)")
        judge = LLMStepJudge(jcfg)
    else:
        judge = CheckStepJudge()
    engine = TransformersEngine(args.policy, threads=args.threads)
    cfg = from_args(StepPairConfig, args, prefix="step_")
    console.print(f"step-level pairs: {solutions.height} solutions of {problems.height} problems, judge "
                  f"[bold]{judge.name}[/], {cfg.n} continuations per prefix from {args.policy}", highlight=False)
    pairs, stats = assemble_step_pairs(problems, solutions, judge, engine, cfg)
    return pairs, stats.to_dict()
