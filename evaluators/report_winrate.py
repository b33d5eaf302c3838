"""What a win-rate evaluation shows and leaves behind: rich tables, report.md, PNG plots, history rows,
and (inside a Prefect run) the same tables as artifacts.

The numbers all come from ``evaluators.winrate`` summaries (via ``evaluators.evaluate``);
this module only formats them, so the terminal, the markdown, the plots and the Prefect UI agree.
``write_run`` is what ``prefwork winrate`` and the ``winrate_report`` flow both call. Rates print as
percentages, spreads (STD, SE) in percentage points, as everywhere in the report family (``evaluators.report``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from rich.table import Table

from prefwork.evaluators.evaluate import EvalResult
from prefwork.evaluators.report import md_table, pct, points, publish, rich_table, write_report_md
from prefwork.evaluators.report_history import append_history
from prefwork.evaluators.report_plots import new_figure, plot_winrates, save_figure
from prefwork.evaluators.winrate import WinRateSummary
from prefwork.pipeline.schemas import JUDGMENTS
from prefwork.pipeline.store import frame_hash, write_json, write_table

OVERALL = ("Model", "Win Rate", "LC Win Rate", "W / L / T", "STD", "Min", "Max", "SE", "95% CI",
           "Failures (range)", "Mean len (model / base)", "Longer wins")
PER_REPEAT = ("Model", "Repeat", "Win Rate", "Wins", "Losses", "Ties", "Failures", "Judged")


def _failures(s: WinRateSummary) -> str:
    if not s.n_errors:
        return "0"
    return f"{s.n_errors} ({pct(s.win_rate_if_errors_lose)}–{pct(s.win_rate_if_errors_win)})"


def overall_cells(label: str, s: WinRateSummary) -> list[str]:
    pr = s.per_repeat
    wlt = f"{int(pr['wins'].sum())} / {int(pr['losses'].sum())} / {int(pr['ties'].sum())}"
    return [label, pct(s.win_rate), pct(s.lc_win_rate), wlt, points(s.std), pct(s.min), pct(s.max), points(s.se),
            f"{pct(s.ci_low)}–{pct(s.ci_high)}", _failures(s),
            f"{s.mean_model_len:.1f} / {s.mean_baseline_len:.1f}", pct(s.longer_wins_share)]


def per_repeat_cells(label: str, s: WinRateSummary) -> list[list[str]]:
    return [[label, str(r["repeat"]), pct(r["win_rate"]), str(r["wins"]), str(r["losses"]), str(r["ties"]),
             str(r["errors"]), str(r["n"])] for r in s.per_repeat.to_dicts()]


def paired_cells(result: EvalResult) -> tuple[list[str], list[list[str]]] | None:
    """Headers and rows of the paired comparison (first model minus second), or None."""
    p = result.paired
    if p is None:
        return None
    a, b = list(result.summaries)[:2]
    head = ["Comparison", "Repeat", f"{a}", f"{b}", "Difference (points)", "Pairs"]
    rows = [[f"{a} − {b}", str(r["repeat"]), pct(r["rate_a"]), pct(r["rate_b"]), points(r["diff"]), str(r["n"])]
            for r in p.per_repeat.to_dicts()]
    share = "—" if p.share_boot_le_zero is None else f"{p.share_boot_le_zero:.3f}"
    rows.append([f"{a} − {b}", "all", "", "", f"{points(p.mean_diff)} (95% CI {points(p.ci_low)} to "
                 f"{points(p.ci_high)}; P(boot ≤ 0) = {share})", f"{p.n_pairs} (+{p.n_dropped} dropped)"])
    return head, rows


def variance_cells(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """Headers and rows splitting each model's spread into judge and generation noise."""
    head = ["Model", "STD (k repeats)", "Total (gen + judge)", "Generation", "Judge", "Judge repeats"]
    rows = []
    for label, s in result.summaries.items():
        v = result.variance.get(label)
        if v is None:
            why = "deterministic judge: 0" if result.deterministic_judge else "not re-judged"
            rows.append([label, points(s.std), points(s.std), points(s.std), why, "—"])
        else:
            rows.append([label, points(s.std), points(v["std_total"]), points(v["std_generation"]),
                         points(v["std_judge"]), str(v["n_judge_repeats"])])
    return head, rows


def sections(result: EvalResult) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(heading, title, headers, rows) of every table: overall, per repeat, paired, noise split.

    The terminal (``tables``), report.md (``heading``) and the Prefect artifacts show these same cells.
    """
    out = [("Win rate", f"Win rate vs {result.baseline} (judge: {result.judge}, ties = 0.5)", list(OVERALL),
            [overall_cells(m, s) for m, s in result.summaries.items()]),
           ("Per repeat", "Per repeat", list(PER_REPEAT),
            [r for m, s in result.summaries.items() for r in per_repeat_cells(m, s)])]
    if (p := paired_cells(result)) is not None:
        out.append(("Paired comparison", "Paired comparison (same prompts and repeats)", *p))
    if result.variance or result.notes:
        out.append(("Where the spread comes from", "Where the spread comes from (STD in points)",
                    *variance_cells(result)))
    return out


def tables(result: EvalResult) -> list[Table]:
    """The rich tables the CLI prints: overall, per repeat, paired comparison, noise split."""
    return [rich_table(head, rows, title=title) for _, title, head, rows in sections(result)]


def plot_repeats(result: EvalResult, path: str | Path) -> Figure:
    """Per-repeat win rates (one bar per model and repeat), each model's mean as a line and
    its prompt-bootstrap 95% interval as a band, 50% dashed."""
    fig, ax = new_figure(max(6.0, 0.6 * sum(s.n_repeats for s in result.summaries.values()) + 3))
    x0, ticks, labels = 0, [], []
    for i, (label, s) in enumerate(result.summaries.items()):
        rates = s.per_repeat["win_rate"].to_numpy().astype(float)
        xs = x0 + np.arange(len(rates))
        color = f"C{i}"
        ax.bar(xs, 100 * rates, color=color, alpha=0.75, label=label)
        if s.win_rate is not None:
            ax.hlines(100 * s.win_rate, xs[0] - 0.4, xs[-1] + 0.4, color=color, linewidth=2)
        if s.ci_low is not None:
            ax.fill_between([xs[0] - 0.4, xs[-1] + 0.4], 100 * s.ci_low, 100 * s.ci_high, color=color, alpha=0.15)
        ticks += list(xs)
        labels += [f"r{r}" for r in s.per_repeat["repeat"].to_list()]
        x0 += len(rates) + 1
    ax.axhline(50.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(ticks, labels)
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate (%)")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"Win rate per repeat vs {result.baseline}\n(line: mean of repeats; band: prompt-bootstrap 95% CI)")
    return save_figure(fig, path)


NOTES = {"Win rate": "Judge: {judge}; ties count 0.5; STD and SE in percentage points (STD over repeats, ddof=1; "
         "SE as alpaca_eval computes it); 95% CI resamples prompts. Failed judgments are left out of the rate and "
         "shown with the range the rate takes if all of them went either way."}


def _summary(result: EvalResult, stage: str, config: dict[str, Any]) -> dict:
    return json.loads(json.dumps({
        "baseline": result.baseline, "judge": result.judge, "stage": stage, "config": config, "seeds": result.seeds,
        "models": {m: s.to_dict() for m, s in result.summaries.items()},
        "paired": None if result.paired is None else result.paired.to_dict(),
        "variance": {m: {k: v for k, v in d.items() if k != "cells"} for m, d in result.variance.items()},
        "notes": result.notes, "judge_usage": result.judge_usage}, default=str))


def _plots(run_dir: Path, result: EvalResult, stage: str, paths: dict) -> dict[str, Figure]:
    rows = [{"model": m, "stage": stage, "win_rate": s.win_rate, "std": s.std}
            for m, s in result.summaries.items() if s.win_rate is not None]
    if not rows:
        return {}
    k = max(s.n_repeats for s in result.summaries.values())
    paths["winrate_png"], paths["repeats_png"] = run_dir / "winrate.png", run_dir / "winrate_repeats.png"
    return {"winrate": plot_winrates(rows, paths["winrate_png"], title=(
                f"Win rate vs {result.baseline}\n(mean of {k} repeats; error bar: STD over repeats)")),
            "repeats": plot_repeats(result, paths["repeats_png"])}


def markdown_sections(result: EvalResult) -> list[tuple[str, str]]:
    """The tables as report.md sections, each with its note."""
    out = []
    for heading, _, head, rows in sections(result):
        note = NOTES.get(heading, "").format(judge=result.judge)
        if heading == "Where the spread comes from":
            note = "".join(f"{n}\n\n" for n in result.notes)
        out.append((heading, md_table(head, rows) + (f"\n{note.rstrip()}\n" if note else "")))
    return out


def write_outputs(run_dir: str | Path, result: EvalResult, *, stage: str, config: dict[str, Any],
                  extra_sections: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """Write per_repeat.parquet, summary.json, winrate.png, winrate_repeats.png and report.md.

    Returns {"paths": {...}, "figures": {"winrate": Figure, "repeats": Figure}} so callers
    and tests can read the plotted numbers back.
    """
    run_dir = Path(run_dir)
    per_repeat = pl.concat([s.per_repeat.with_columns(model=pl.lit(m)) for m, s in result.summaries.items()])
    paths = {"per_repeat": write_table(per_repeat, run_dir / "per_repeat.parquet"),
             "summary": write_json(run_dir / "summary.json", _summary(result, stage, config))}
    figures = _plots(run_dir, result, stage, paths)
    md = markdown_sections(result)
    if figures:
        md.append(("Plots", "![win rate with STD error bars](winrate.png)\n\n![win rate per repeat](winrate_repeats.png)"))
    md += list(extra_sections)
    md.append(("Config", "```json\n" + json.dumps(config, indent=2, default=str) + "\n```"))
    paths["report"] = write_report_md(run_dir / "report.md", md,
                                      title=f"Win rate vs {result.baseline}: {', '.join(result.summaries)}")
    return {"paths": paths, "figures": figures}


def write_run(run_dir: str | Path, result: EvalResult, *, stage: str, config: dict[str, Any],
              workspace: str | Path) -> dict[str, Any]:
    """Everything an evaluation leaves behind, for ``prefwork winrate`` and the ``winrate_report`` flow alike.

    judgments.parquet (and rejudgments.parquet, usage.json when there are any), the outputs of
    ``write_outputs``, one row per model in ``<workspace>/history.parquet`` and, inside a Prefect run,
    report.md and the overall table as artifacts of that run. ``config["repeats"]`` is k.
    """
    run_dir = Path(run_dir)
    write_table(result.judgments, run_dir / "judgments.parquet", JUDGMENTS)
    if result.rejudgments is not None:
        write_table(result.rejudgments, run_dir / "rejudgments.parquet", JUDGMENTS)
    if result.judge_usage is not None:
        write_json(run_dir / "usage.json", result.judge_usage)
    out = write_outputs(run_dir, result, stage=stage, config=config)
    out["paths"]["history"] = history = Path(workspace) / "history.parquet"
    for label, summary in result.summaries.items():
        append_history(history, model=label, stage=stage, judge=result.judge, prompts_hash=frame_hash(result.prompts),
                       k=config["repeats"], n=result.prompts.height, summary=summary, run_dir=str(run_dir))
    _, title, head, rows = sections(result)[0]
    out["artifacts"] = publish(f"winrate-{stage}", markdown=out["paths"]["report"].read_text(), head=head, rows=rows,
                               description=title)
    return out
