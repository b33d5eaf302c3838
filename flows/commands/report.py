"""``prefwork report``: the results history as ``Model | Stage | Date | Win Rate | STD | Min | Max``.

Reads ``<workspace>/history.parquet`` (every ``prefwork winrate`` and loop evaluation),
filters it with polars, prints it with rich and optionally writes it as markdown and a
win-rate plot with STD error bars (``evaluators.report_history``, ``evaluators.report_plots``).
"""
from __future__ import annotations

import argparse

NAME = "report"
HELP = "print the win-rate history: Model | Stage | Date | Win Rate | STD | Min | Max"
DESCRIPTION = HELP + """.

Rates are percentages, STD in percentage points (ddof=1 over repeats), as in
`53.0% ± 2.9 (49–57)`. --extra adds columns after the fixed ones (lc, se, ci, n, k, judge).

example:
  prefwork report --workspace runs --stage DPO --markdown results.md --plot results.png"""


def register(parser: argparse.ArgumentParser) -> None:
    from prefwork.evaluators.report_history import EXTRA_COLUMNS

    parser.add_argument("--workspace", default="runs", help="workspace holding history.parquet")
    parser.add_argument("--model", action="append", default=[], help="only these models (repeatable)")
    parser.add_argument("--stage", action="append", default=[], help="only these stages (repeatable)")
    parser.add_argument("--extra", action="append", default=[], choices=sorted(EXTRA_COLUMNS),
                        help="extra column after the fixed ones (repeatable)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown to FILE")
    parser.add_argument("--plot", metavar="FILE", help="also write a win-rate bar chart (PNG) to FILE")
    parser.set_defaults(func=run)


def select(history, models: list[str], stages: list[str]):
    """History rows of the given models and stages (all when a list is empty), oldest first."""
    import polars as pl

    if models:
        history = history.filter(pl.col("model").is_in(models))
    if stages:
        history = history.filter(pl.col("stage").is_in(stages))
    return history.sort("recorded_at", "model", nulls_last=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prefwork.evaluators.report_history import history_markdown, history_table, load_history
    from prefwork.evaluators.report_plots import plot_winrates
    from prefwork.flows.progress import table_console
    from prefwork.pipeline.store import atomic_write_bytes

    console = table_console()
    path = Path(args.workspace) / "history.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results history yet (run `prefwork winrate` or `prefwork loop` first)")
    rows = select(load_history(path), args.model, args.stage)
    if rows.height == 0:
        console.print(f"no evaluations in {path} match the filters", highlight=False)
        return 1
    extras = tuple(args.extra)
    console.print(history_table(rows, extras=extras, title=f"Win rates ({path})"))
    if args.markdown:
        atomic_write_bytes(args.markdown, history_markdown(rows, extras=extras).encode())
        console.print(f"markdown: {args.markdown}", highlight=False)
    if args.plot:
        plot_winrates(rows.drop_nulls("win_rate"), args.plot, title="Win rate per model/stage (error bar: STD)")
        console.print(f"plot: {args.plot}", highlight=False)
    return 0
