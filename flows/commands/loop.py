"""``prefwork loop``: the on-policy iterative DPO loop (the Prefect flow ``iterative_dpo``)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prefwork.flows.loop_config import LoopConfig
from prefwork.flows.options import add_dataclass, from_args

NAME = "loop"
HELP = "run R rounds of sample -> judge -> pairs -> chunks -> sDPO -> win rate vs SFT"
DESCRIPTION = """Run the on-policy iterative DPO loop as the Prefect flow `iterative_dpo`.

Each round samples N candidates per training prompt from the current policy, judges them
with the rule judge, pairs the best answer with the worst few, sorts the pairs
easy-to-hard into chunks, trains with sDPO (chunk t starts from and is referenced by the
model after chunk t-1), and measures the new policy against the SFT policy on held-out
prompts, k times with fresh seeds. Everything lands in runs/<timestamp>-<name>/; finished
stages are cached in runs/.cache, so re-running, or --resume after a crash, redoes no finished work."""


# settings added after runs were saved: their values in runs that predate them
SAVED_BEFORE = {"pairs_per_prompt": 1, "lr_decay": 1.0}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run in RUN_DIR with its saved config")
    add_dataclass(parser, LoopConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prefwork.flows import progress
    from prefwork.flows.loop import iterative_dpo
    from prefwork.evaluators.report_loop import results_table, write_outputs
    from prefwork.pipeline.prompts import load_prompts
    from prefwork.pipeline.run import RunDir

    if args.resume:
        run_dir = RunDir(args.resume)
        cfg_file = run_dir.path / "config.json"
        if not cfg_file.exists():
            raise FileNotFoundError(f"{cfg_file}: not a loop run directory (no config.json)")
        # a run saved before a setting existed resumes with the value that reproduces it
        cfg = LoopConfig.from_dict({**SAVED_BEFORE, **json.loads(cfg_file.read_text())})
    else:
        cfg = from_args(LoopConfig, args)
        for path in (cfg.train_prompts, cfg.eval_prompts):  # bad input fails before anything is written
            load_prompts(path)
        run_dir = RunDir.create(cfg.workspace, cfg.name)
        run_dir.write_metadata(cfg, {})
    progress.console.print(f"[bold]prefwork loop[/] -> {run_dir.path}")
    t0 = time.time()
    with progress.bars():
        rows = iterative_dpo(config=cfg.to_dict(), run_dir=str(run_dir.path))
    elapsed = time.time() - t0
    report = write_outputs(run_dir.path, rows, cfg.to_dict(), Path(cfg.workspace), elapsed)
    progress.console.print(results_table(rows, f"prefwork loop ({elapsed:.0f} s{_reused(run_dir.path, t0)})"))
    progress.console.print(f"report: {report}")
    return 0


def _reused(run_dir: Path, since: float) -> str:
    """``"; 12 of 15 stages from the cache"`` for the stages this invocation ran, or ``""`` if none was."""
    from prefwork.pipeline.run import read_metrics

    flags = [m["cached"] for m in read_metrics(run_dir) if "cached" in m and m["time"] >= since]
    return f"; {sum(flags)} of {len(flags)} stages from the cache" if any(flags) else ""
