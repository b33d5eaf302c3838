"""``prefwork train sft|dpo``: train from a config file and/or flags, here or via ``accelerate launch``.

Thin wiring over ``train.launch.launch_training``: the config file (YAML/JSON) is read, the
flags given on the command line override its fields, and the run lands in a run directory
with the resolved config, provenance, ``train.log`` and ``result.json`` (the final checkpoint).
``--dry-run`` prints the resolved config and command after validating them, and trains nothing.
"""
from __future__ import annotations

import argparse
import json

from prefwork.flows.options import add_dataclass

NAME = "train"
HELP = "train a policy: `train dpo` (DPO family, sDPO over chunks) or `train sft`, in-process or launched"
DESCRIPTION = HELP + """.

examples:
  prefwork train dpo --model runs/.cache/policy/<key>/model --data pairs.parquet --max-steps 20
  prefwork train dpo --config data/configs/tiny_cpu.yaml --chunks 2            # sDPO over 2 chunks
  prefwork train dpo --config data/configs/tiny_cpu.yaml --schedule dpo        # all pairs at once
  prefwork train dpo --config data/configs/gpu_recipe.yaml --data pairs.parquet --dry-run
  prefwork train sft --model DIR --data corpus.jsonl --out runs
"""

RUN_FLAGS = {  # flag -> (type, help)
    "model": (str, "policy model directory or hub id"),
    "data": (str, "dpo: pairs or chunks Parquet; sft: JSONL of {prompt, response}"),
    "out": (str, "run root; the run directory is OUT/<timestamp>-<name>"),
    "name": (str, "run name (suffix of the run directory)"),
    "run_dir": (str, "exact run directory (instead of OUT/<timestamp>-<name>)"),
}
DPO_FLAGS = {
    "reference": (str, "reference model dir of a single DPO run (default: --model)"),
    "schedule": (str, "sdpo (chunk by chunk; reference = previous step) or dpo (all pairs at once)"),
    "chunks": (int, "sDPO steps T: split the pairs into T chunks, easy to hard (0: the file's chunks, if any)"),
    "curriculum": (str, "difficulty measure when splitting into chunks: logp_margin, judge_margin, random"),
}
LAUNCH_FLAGS = {
    "launcher": ("mode", str, "local (in-process), accelerate, or command (the config's template)"),
    "num_processes": ("num_processes", int, "processes for accelerate launch"),
    "accelerate_config": ("accelerate_config", str, "accelerate config file (e.g. data/configs/accelerate_fsdp.yaml)"),
    "launch_command": ("command", str, "shell template, e.g. 'sbatch --wait --wrap \"{accelerate}\"'"),
}


def _suppress_defaults(parser: argparse.ArgumentParser, start: int) -> None:
    """Flags added after action ``start`` override the config only when given on the command line."""
    for action in parser._actions[start:]:
        if action.dest != "help":
            action.help = f"{action.help} [config default: {action.default}]" if action.default is not None \
                else action.help
            action.default = argparse.SUPPRESS


def _add_common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--config", help="YAML or JSON training config; flags override its fields")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved config and command")
    parser.add_argument("--quiet", action="store_true", help="do not echo training logs (train.log keeps them)")
    start = len(parser._actions)
    for name, (kind_, help_) in {**RUN_FLAGS, **(DPO_FLAGS if kind == "dpo" else {})}.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind_, help=help_)
    for name, (_, kind_, help_) in LAUNCH_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest="launch__" + name, type=kind_, help=help_)
    parser.add_argument("--cpu", dest="launch__cpu", action="store_true", default=None,
                        help="launched processes train on CPU (gloo)")
    if kind == "dpo":
        from prefwork.train.configs import DPOConfig
        add_dataclass(parser, DPOConfig)
    else:
        from prefwork.train.configs import SFTConfig
        add_dataclass(parser, SFTConfig)
    _suppress_defaults(parser, start)
    parser.set_defaults(func=run, kind=kind)


def register(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    for kind, help_ in (("dpo", "preference training: DPO-family losses, sDPO over chunks"),
                        ("sft", "supervised fine-tuning on {prompt, response} records")):
        sub = subs.add_parser(kind, help=help_, description=DESCRIPTION, formatter_class=parser.formatter_class)
        _add_common(sub, kind)


def overrides_from(args: argparse.Namespace) -> dict:
    """The fields the command line sets (config keys; ``launcher.x`` for the launcher)."""
    skip = {"config", "dry_run", "quiet", "func", "kind", "command", "train_kind", "debug"}
    found = {}
    for key, value in vars(args).items():
        if key in skip:
            continue
        if key.startswith("launch__"):
            field = LAUNCH_FLAGS.get(key[8:], (key[8:],))[0]
            found[f"launcher.{field}"] = value
        else:
            found[key] = value
    return found


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from prefwork.train.launch import launch_training

    console = Console(stderr=True)
    echo = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        result = launch_training(args.config, overrides=overrides_from(args), kind=args.kind,
                                 dry_run=args.dry_run, echo=echo)
    except RuntimeError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    if args.dry_run:
        print(json.dumps({"run_dir": str(result.run_dir), "command": result.command, "config": result.config,
                          "checks": result.notes}, indent=2))
        console.print("[bold green]dry run ok:[/] config, files and command are valid; nothing was trained",
                      highlight=False)
        return 0
    for note in result.notes:  # e.g. pairs dropped because chosen == rejected
        if note.startswith("warning:"):
            console.print(f"[bold yellow]warning:[/]{note[8:]}", highlight=False, soft_wrap=True)
    console.print(f"[bold green]trained:[/] {result.final_model}\nrun directory: {result.run_dir}", highlight=False)
    return 0
