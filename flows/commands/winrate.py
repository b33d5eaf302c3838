"""``prefwork winrate``: win rate of one or more models against a baseline over k repeats.

Thin wiring: load prompts, build engines (``pipeline.engines_factory``), run ``evaluators.evaluate.evaluate``,
write the run directory and the history rows with ``evaluators.report_winrate.write_run`` (as the
``winrate_report`` flow does) and print the tables. The command calls the same two functions as the
flow rather than starting the flow: a flow run needs a Prefect server, 15-20 s to start for one command.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from prefwork.evaluators.evaluate import REFERENCE, EvalConfig
from prefwork.flows.options import add_dataclass, from_args
from prefwork.flows.outcome import Outcome, add_outcome_options

from prefwork.pipeline.engines_factory import ENGINE_HELP, ENGINES, EngineOptions, make_engine, resolve_engine

NAME = "winrate"
HELP = "win rate of a model vs a baseline over k repeats: std, min, max, SE, bootstrap CI, LC win rate"
DESCRIPTION = """Evaluate --model against --baseline on the same n prompts, k times with fresh seeds.

The baseline is a model directory (sampled afresh every repeat with its own seeds) or the
word 'reference' (each prompt's reference answer, held fixed). Each answer pair is judged
by --judge (ties count 0.5). Prints per-repeat and overall win rate, wins/losses/ties,
STD over repeats (ddof=1), min, max, the alpaca_eval standard error, a 95% interval that
resamples prompts, failed judgments with the range they could move the rate, mean
lengths, the share of decided pairs the longer answer won, and the length-controlled
win rate. --compare (or a second --model) adds a paired comparison on the same prompts
and repeats; --rejudge J re-judges fixed generations J times to split judge noise from
generation noise (LLM judges; the rule judge is deterministic).

Writes runs/<timestamp>-<name>/ (judgments.parquet, summary.json, per_repeat.parquet,
winrate.png, winrate_repeats.png, report.md) and appends to runs/history.parquet, which
`prefwork report` prints.

example:
  prefwork winrate --model runs/.cache/.../model --baseline reference --prompts data/prompts/heldout.jsonl \\
      --repeats 8 --prompts-per-repeat 100 --stage DPO"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="MODEL",
                        help="model directory (or served name for --engine openai); give twice to compare")
    parser.add_argument("--compare", action="append", default=[], metavar="OTHER_MODEL",
                        help="another model judged on the same prompts and repeats; prints the paired difference")
    parser.add_argument("--model-name", action="append", default=[], metavar="LABEL",
                        help="labels for --model/--compare, in order (unlabelled ones: the directory name)")
    parser.add_argument("--baseline", required=True, help=f"baseline model directory, or '{REFERENCE}'")
    parser.add_argument("--baseline-name", default=None,
                        help="label of the baseline (unset: its directory name, or reference)")
    parser.add_argument("--prompts", required=True, help="prompts file (.jsonl or .parquet)")
    parser.add_argument("--stage", default="eval", help="stage label in the history (e.g. SFT, DPO, sDPO round 2)")
    parser.add_argument("--workspace", default="runs", help="workspace: run directories and history.parquet")
    parser.add_argument("--name", default="winrate", help="run directory name suffix")
    parser.add_argument("--judge-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="option passed to the judge (LLM judges: e.g. base_url=..., model=...)")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)
    add_dataclass(parser, EvalConfig)
    add_dataclass(parser, EngineOptions)
    add_outcome_options(parser, allow_empty=False)  # --strict; a run writes a new directory, never over a file
    parser.set_defaults(func=run)


def _judge_opts(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--judge-opt wants KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def _labels(models: list[str], names: list[str]) -> dict[str, str]:
    from prefwork.evaluators.evaluate import model_label

    if len(names) > len(models):
        raise ValueError(f"{len(names)} --model-name labels for {len(models)} models")
    labels = names + [model_label(m) for m in models[len(names):]]
    seen: dict[str, int] = {}
    out = {}
    for label, model in zip(labels, models):
        seen[label] = seen.get(label, 0) + 1
        out[label if seen[label] == 1 else f"{label}#{seen[label]}"] = model
    return out


def _engines(args: argparse.Namespace):
    """``engine_for(model_dir)``: one engine per model, built on first use and reused."""
    name = resolve_engine(args.engine)
    built: dict[str, object] = {}

    def engine_for(model_dir: Path):
        key = str(model_dir)
        if key not in built:
            built[key] = make_engine(name, model_dir, **vars(from_args(EngineOptions, args)))
        return built[key]
    return name, engine_for


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console

    from prefwork.evaluators.evaluate import evaluate, model_label
    from prefwork.evaluators.report_winrate import tables, write_run
    from prefwork.flows.progress import table_console
    from prefwork.pipeline.prompts import load_prompts
    from prefwork.pipeline.run import RunDir
    from prefwork.pipeline.store import file_hash

    console = table_console()
    cfg = from_args(EvalConfig, args)
    judge_opts = _judge_opts(args.judge_opt)
    if cfg.judge != "rules":  # LLM judges: answers cached in the workspace, so a re-run sends no requests
        judge_opts.setdefault("cache", str(Path(args.workspace) / ".cache" / "judges.sqlite"))
    models = _labels(args.model + args.compare, args.model_name)
    prompts = load_prompts(args.prompts)  # bad input fails before anything is written
    engine_name, engine_for = _engines(args)
    baseline_name = args.baseline_name or (REFERENCE if args.baseline == REFERENCE else model_label(args.baseline))
    config = {**asdict(cfg), "models": models, "baseline": args.baseline, "baseline_name": baseline_name,
              "prompts": args.prompts, "stage": args.stage, "engine": engine_name, "judge_opts": judge_opts}
    run_dir = RunDir.create(args.workspace, args.name)
    run_dir.write_metadata(config, {"prompts": file_hash(args.prompts)})
    Console(stderr=True).print(f"[bold]prefwork winrate[/] -> {run_dir.path}", highlight=False)
    result = evaluate(prompts, models, args.baseline, cfg=cfg, out_dir=run_dir.path, engine_for=engine_for,
                      baseline_name=baseline_name, judge_opts=judge_opts, prompts_source=args.prompts)
    out = write_run(run_dir.path, result, stage=args.stage, config=config, workspace=args.workspace)
    for label, summary in result.summaries.items():
        run_dir.log_metric(stage="winrate", model=label, win_rate=summary.win_rate, std=summary.std,
                           n_errors=summary.n_errors)
    for table in tables(result):
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"report: {out['paths']['report']}\nhistory: {out['paths']['history']}", highlight=False)
    errors = result.judgments.filter(result.judgments["error"].is_not_null())["error"]
    return Outcome("judgments", result.judgments.height, errors.len(), first_error=errors[0] if errors.len() else None,
                   where=str(run_dir.path / "judgments.parquet")).finish(Console(stderr=True), args.strict)
