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
stages are cached in runs/.cache, so re-running, or --resume after a crash, redoes no finished work.

--policy takes any model reference (a folder, a .gguf file, the alias smollm2-135m-instruct, a
hub id); then there is no SFT stage and round 0 is that model. --config loads a recipe:

  prefwork loop --config smollm2_rules      # SmolLM2-135M-Instruct on the slogan/poem rules
  prefwork loop --config smollm2_ifeval     # the same on IFEval-style verifiable instructions
  prefwork loop --config smollm2_rules --rounds 2   # an option given here wins over the recipe"""


# settings added after runs were saved: their values in runs that predate them
SAVED_BEFORE = {"pairs_per_prompt": 1, "lr_decay": 1.0}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run in RUN_DIR with its saved config")
    parser.add_argument("--config", metavar="RECIPE", help=f"a recipe: a name in data/configs ({', '.join(recipes())}) "
                        "or a YAML/JSON file of loop options; options given on the command line win")
    add_dataclass(parser, LoopConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prefwork.flows import progress
    from prefwork.flows.loop import iterative_dpo
    from prefwork.evaluators.report_loop import results_table, write_outputs
    from prefwork.pipeline.models import check_model_ref
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
        if args.config:
            cfg = with_recipe(cfg, args.config)
        for path in (cfg.train_prompts, cfg.eval_prompts):  # bad input fails before anything is written
            load_prompts(path)
        if cfg.policy:  # likewise a policy reference that cannot resolve (converting it is a stage)
            check_model_ref(cfg.policy, option="--policy")
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


def recipes() -> list[str]:
    """The loop recipes shipped in data/configs (training configs there have a ``kind``; recipes ``rounds``)."""
    from prefwork.pipeline import DATA_DIR

    return sorted(p.stem for p in (DATA_DIR / "configs").glob("*.yaml") if _loop_recipe(p))


def _loop_recipe(path: Path) -> bool:
    import yaml

    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "kind" not in data and "rounds" in data


def with_recipe(cfg: LoopConfig, recipe: str) -> LoopConfig:
    """``cfg`` with a recipe's options, except those the command line set (they differ from the defaults).

    A relative path in the recipe is looked up beside the recipe file, then in the shipped data/.
    """
    import yaml

    from prefwork.flows.options import option_values
    from prefwork.pipeline import DATA_DIR

    path = Path(recipe)
    if not path.is_file():
        path = DATA_DIR / "configs" / f"{recipe}.yaml"
    if not path.is_file():
        raise ValueError(f"--config: no file {recipe!r} and no recipe of that name (known: {', '.join(recipes())})")
    data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of loop options")
    for key in ("train_prompts", "eval_prompts", "corpus"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            here, shipped = path.parent / data[key], DATA_DIR / data[key]
            data[key] = str(here if here.exists() or not shipped.exists() else shipped)
    given, defaults = option_values(cfg), option_values(LoopConfig())
    known = set(defaults)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--config: {path}: unknown option(s) {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
    changed = {k: v for k, v in given.items() if v != defaults[k]}
    return LoopConfig.from_dict({**defaults, **data, **changed})
