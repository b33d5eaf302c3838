"""``prefwork toy``: the 3D-properties toy model (train.toy), with a rich summary table and its PNGs.

Thin wiring: options come from ``train.toy.ToyConfig`` (its tuple fields, seeds, losses and
scenarios, take space-separated lists), ``run_toy`` writes config.json, summary.csv, history.csv
findings.json and toy_<scenario>.png into ``--out`` (default ``runs/<timestamp>-toy``); the tables
show the per-(scenario, loss) means over the seeds and, seed by seed, which of the paper's findings
hold.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from prefwork.flows.options import add_dataclass, from_args
from prefwork.train.toy import ToyConfig

NAME = "toy"
HELP = "the 3D-properties toy: 4 prompts, 10 responses, every loss x on/off-policy start; table + PNGs"
DESCRIPTION = HELP + """.

Under vanilla DPO the rejected probability falls faster than the chosen one rises, the chosen
probability peaks then degrades, and mass disperses outside the pair; an on-policy start (the
rejected answer likely too) softens both, and dpo_sft keeps the chosen higher. Runs in seconds on
one CPU thread; the tables show means over --seeds and on how many seeds each of the
paper's findings holds (findings.json), summary.csv one row per seed.

examples:
  prefwork toy                                   # every loss and scenario, seed 0
  prefwork toy --losses dpo dpo_sft --seeds 0 1 2 --out runs/toy-3seeds
  prefwork toy --scenarios on_policy off_policy --steps 600"""

#: ToyConfig fields that hold tuples: given on the command line as space-separated lists.
TUPLE_FIELDS = {"seeds": int, "losses": str, "scenarios": str}


def register(parser: argparse.ArgumentParser) -> None:
    add_dataclass(parser, ToyConfig, skip=tuple(TUPLE_FIELDS))
    group = parser.add_argument_group("what to compare")
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(ToyConfig)}
    defaults = ToyConfig()
    for name, kind in TUPLE_FIELDS.items():
        group.add_argument(f"--{name}", nargs="+", type=kind, default=list(getattr(defaults, name)),
                           help=helps[name])
    parser.add_argument("--out", default=None, help="output directory (default: runs/<timestamp>-toy)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ToyConfig:
    """The ToyConfig of the parsed options (lists become the dataclass's tuples)."""
    return from_args(ToyConfig, args, **{name: tuple(getattr(args, name)) for name in TUPLE_FIELDS})


def summary_table(rows: list[dict]):
    """A rich Table of per-(scenario, loss) means over seeds."""
    from collections import defaultdict

    from rich.table import Table

    cols = ("start_chosen", "peak_chosen", "final_chosen", "degradation", "final_rejected", "final_unseen",
            "final_outside")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["scenario"], r["loss"])].append(r)
    seeds = len({r["seed"] for r in rows})
    table = Table(title=f"toy summary (probabilities, mean over {seeds} seed{'s' if seeds != 1 else ''})")
    table.add_column("scenario", no_wrap=True)
    table.add_column("loss", no_wrap=True)
    for c in cols:  # short headers: the table fits an 80-column terminal
        table.add_column(c.replace("final_", "end ").replace("_chosen", "").replace("degradation", "degr"),
                         justify="right")
    for (scenario, loss), rs in groups.items():
        table.add_row(scenario, loss, *(f"{sum(r[c] for r in rs) / len(rs):.3f}" for c in cols))
    return table


def findings_table(findings: list[dict]):
    """A rich Table: each paper finding the run could check, and on how many seeds it held."""
    from rich.table import Table

    table = Table(title="the paper's findings, seed by seed (dpo unless named)")
    table.add_column("finding")
    table.add_column("held", justify="right", no_wrap=True)
    table.add_column("failing seeds")
    for f in findings:
        style = "green" if not f["failing"] else ("red" if f["held"] * 2 < f["seeds"] else "yellow")
        more = len(f["failing"]) - 10
        shown = " ".join(map(str, f["failing"][:10])) + (f" (+{more})" if more > 0 else "")
        table.add_row(f["finding"], f"[{style}]{f['held']}/{f['seeds']}[/]", shown or "-")
    return table


def run(args: argparse.Namespace) -> int:
    from prefwork.flows.progress import table_console
    from prefwork.train.toy_run import run_toy

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-toy"
    console = table_console()  # piped output keeps every digit
    start = time.perf_counter()
    result = run_toy(cfg, out)
    console.print(summary_table(result.summary))
    if result.findings:
        console.print(findings_table(result.findings))
    console.print(f"{len(result.summary)} runs in {time.perf_counter() - start:.1f} s; tables in {out}", highlight=False, soft_wrap=True)
    for path in result.files:
        if path.suffix == ".png":
            console.print(f"plot: {path}", highlight=False, soft_wrap=True)
    return 0
