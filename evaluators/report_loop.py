"""What a loop run shows and leaves behind: the results table, report.md, plots, history rows, and
(inside the ``iterative_dpo`` flow run) the results table as Prefect artifacts.

Formatting only: the numbers come from ``evaluators.winrate`` (via the loop's rows, one per round),
the table helpers from ``evaluators.report``, the charts from ``evaluators.report_plots``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
from rich.table import Table

from prefwork.evaluators.report import md_table, pct, points, publish, rich_table, write_report_md
from prefwork.evaluators.report_history import append_history
from prefwork.evaluators.report_plots import plot_training_curves, plot_winrates
from prefwork.pipeline.run import read_metrics
from prefwork.pipeline.schemas import CANDIDATES, SCORES
from prefwork.pipeline.store import read_table

COLUMNS = ("Round", "Stage", "Win rate vs SFT", "Std", "Min", "Max", "Pairs", "Rule pass rate")
#: the last column per judge: what the mean of its held-out scores is
SCORE_COLUMN = {"rules": "Rule pass rate", "ifeval": "Instructions followed"}


def columns(rows: list[dict]) -> tuple[str, ...]:
    """The table's header: the win rate is against round 0 (the SFT policy, or a given start), and the
    last column names what the judge's mean score is."""
    judge = rows[0].get("judge", "rules") if rows else "rules"
    start = rows[0]["stage"] if rows else "SFT"
    return (*COLUMNS[:2], f"Win rate vs {start}", *COLUMNS[3:-1], SCORE_COLUMN.get(judge, f"Mean {judge} score"))


def table_cells(row: dict) -> list[str]:
    return [str(row["round"]), row["stage"], pct(row["win_rate"]), points(row.get("std")), pct(row.get("min")),
            pct(row.get("max")), "—" if row.get("pairs") is None else str(row["pairs"]),
            pct(row.get("rule_pass_rate"))]


def results_table(rows: list[dict], title: str) -> Table:
    """The loop's results as the rich table the CLI prints (one row per round)."""
    return rich_table(columns(rows), [table_cells(r) for r in rows], title=title, left=len(COLUMNS))


def results_markdown(rows: list[dict]) -> str:
    """The same table as markdown (report.md, the README's loop table, the Prefect artifact)."""
    return md_table(columns(rows), [table_cells(r) for r in rows], left=len(COLUMNS)).rstrip("\n")


def publish_results(rows: list[dict], name: str) -> list:
    """The results table as artifacts of the running flow (the Prefect UI's Artifacts tab); nothing outside one."""
    return publish(f"loop-{name}", markdown=f"# prefwork loop: {name}\n\n" + results_markdown(rows) + "\n",
                   head=list(columns(rows)), rows=[table_cells(r) for r in rows],
                   description="Win rate vs round 0 per round (held-out prompts)")


def _samples_md(row: dict, prompts: int = 3) -> str:
    """Best and worst candidate of a few training prompts of one round."""
    arts = row["artifacts"]
    cands = read_table(arts["candidates"], CANDIDATES)
    scores = read_table(arts["scores"], SCORES).select("prompt_id", "candidate_id", "score")
    scored = cands.join(scores, on=["prompt_id", "candidate_id"]).sort(["prompt_id", "score", "candidate_id"])
    out = []
    for pid in scored["prompt_id"].unique(maintain_order=True).head(prompts):
        g = scored.filter(pl.col("prompt_id") == pid)
        best, worst = g.row(-1, named=True), g.row(0, named=True)
        out.append(f"**Prompt:** {best['prompt']}\n\n"
                   f"- best ({best['score']:.2f}): `{best['text']!r}`\n- worst ({worst['score']:.2f}): `{worst['text']!r}`\n")
    return "\n".join(out)


def _rule_rates_md(rows: list[dict]) -> str:
    """Per-rule pass rates of each round's held-out answers (the paper's table, per task); for the
    ifeval judge, IFEval's prompt- and instruction-level strict accuracy and each instruction's."""
    if rows and rows[0].get("judge") == "ifeval":
        return _ifeval_md(rows)
    from prefwork.evaluators.rules import rule_pass_rates

    lines = ["| Round | Task | " + " | ".join(["Rule", "Pass rate", "n"]) + " |", "|---|---|---|---|---|"]
    for row in rows:
        scores = _eval_scores(row)
        for task in sorted(scores["task"].drop_nulls().unique()):
            rates = rule_pass_rates(scores.filter(pl.col("task") == task).drop("task"))
            lines += [f"| {row['round']} | {task} | {r['rule']} | {r['rate']:.0%} | {r['total']} |"
                      for r in rates.iter_rows(named=True)]
    return "\n".join(lines)


def _eval_scores(row: dict) -> pl.DataFrame:
    cands = read_table(row["artifacts"]["eval_candidates"], CANDIDATES)
    return read_table(row["eval_scores"], SCORES).join(cands.select("prompt_id", "candidate_id", "task"),
                                                        on=["prompt_id", "candidate_id"])


def _ifeval_md(rows: list[dict]) -> str:
    from prefwork.evaluators.ifeval import ifeval_accuracy

    accs = [(row["round"], ifeval_accuracy(_eval_scores(row))) for row in rows]
    lines = ["| Round | Prompt-level strict | Instruction-level strict | Responses | Instructions |", "|---|---|---|---|---|"]
    lines += [f"| {r} | {pct(a['prompt_level_strict'])} | {pct(a['instruction_level_strict'])} | {a['responses']} | "
              f"{a['instructions']} |" for r, a in accs]
    ids = sorted({i for _, a in accs for i in a["per_instruction"]})
    lines += ["", "| Instruction | " + " | ".join(f"round {r}" for r, _ in accs) + " |", "|---|" + "---|" * len(accs)]
    lines += [f"| {i} | " + " | ".join(pct(a["per_instruction"].get(i, {}).get("accuracy")) for _, a in accs) + " |"
              for i in ids]
    return "\n".join(lines)


def _training_curves(rows: list[dict]) -> dict[str, pl.DataFrame]:
    curves = {}
    for row in rows:
        if row["round"] == 0:
            continue
        for metrics in sorted((Path(row["policy"]).parent / "run").rglob("metrics.jsonl")):
            recs = [r for r in read_metrics(metrics.parent) if "rewards/margins" in r and "step" in r]
            if recs:
                curves[f"round {row['round']} {metrics.parent.name}"] = pl.DataFrame(
                    {"step": [r["step"] for r in recs], "rewards/margins": [r["rewards/margins"] for r in recs]})
    return curves


def write_outputs(run_dir: Path, rows: list[dict], config: dict, workspace: Path, elapsed: float) -> Path:
    """Copy stage outputs into the run dir, write plots, report.md and the results history."""
    for row in rows:
        dest = run_dir / f"round_{row['round']}"
        dest.mkdir(exist_ok=True)
        for name, src in row.get("artifacts", {}).items():
            shutil.copyfile(src, dest / f"{name}.parquet")
        shutil.copyfile(row["judgments"], dest / "judgments.parquet")
        (dest / "policy").unlink(missing_ok=True)
        (dest / "policy").symlink_to(Path(row["policy"]).resolve(), target_is_directory=True)
        append_history(workspace / "history.parquet", model=config["name"], stage=f"round {row['round']} {row['stage']}",
                       judge=config.get("judge", "rules"), prompts_hash=row.get("prompts_hash", ""), k=config["eval_repeats"],
                       n=row.get("n_prompts", 0), summary=row, run_dir=str(run_dir))
    plot_winrates([{**r, "model": f"round {r['round']}"} for r in rows], run_dir / "winrate.png",
                  title=f"Win rate vs round 0 ({rows[0]['stage']}; held-out prompts, {config.get('judge', 'rules')} judge)")
    sections = [("Results", results_markdown(rows) + f"\n\nWall time: {elapsed:.0f} s. Win rates: mean over "
                 f"{config['eval_repeats']} repeats; Std in points (ddof=1).\n\n![win rates](winrate.png)")]
    curves = _training_curves(rows)
    if curves:
        plot_training_curves(curves, run_dir / "reward_margins.png")
        sections.append(("Training", "Reward margin (chosen - rejected) per sDPO step.\n\n"
                         "![reward margins](reward_margins.png)"))
    title = "IFEval accuracy" if config.get("judge") == "ifeval" else "Rule pass rates"
    sections.append((f"{title} on held-out prompts", "Share of held-out answers passing each check "
                     f"(round 0 = {rows[0]['stage']}).\n\n" + _rule_rates_md(rows)))
    for row in rows[1:]:
        sections.append((f"Round {row['round']}: sample answers (best and worst of a few prompts)", _samples_md(row)))
    sections.append(("Config", "```json\n" + json.dumps(config, indent=2) + "\n```"))
    return write_report_md(run_dir / "report.md", sections, title=f"prefwork loop: {run_dir.name}")
