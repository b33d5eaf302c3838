"""History, tables, markdown and plots (evaluators/report.py, report_history.py, report_plots.py)."""
from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from matplotlib.container import BarContainer
from rich.console import Console

from prefwork.evaluators.report import summary_table, write_report_md
from prefwork.evaluators.report_history import (
    HISTORY_HEADERS, append_history, history_markdown, history_table, load_history,
)
from prefwork.evaluators.report_plots import plot_logps, plot_training_curves, plot_winrates
from prefwork.evaluators.winrate import summarize

REPLICATION = {"win_rate": 0.53, "std": 0.029, "min": 0.49, "max": 0.57, "lc_win_rate": 0.512, "n_errors": 0}


def judgments(prefs_by_repeat: dict[int, list[float]]) -> pl.DataFrame:
    return pl.DataFrame([
        dict(prompt_id=f"p{i}", repeat=r, model="m", baseline="b", judge="j", model_text="x",
             baseline_text="y", model_len=5, baseline_len=5, preference=float(p), error=None)
        for r, ps in prefs_by_repeat.items() for i, p in enumerate(ps)
    ], schema_overrides={"error": pl.String})


def render(table) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_history_append_and_load_round_trip(tmp_path):
    path = tmp_path / "ws" / "history.parquet"
    assert load_history(path).height == 0
    s = summarize(judgments({0: [1, 0, 1, 1], 1: [1, 0, 0, 1]}))
    append_history(path, model="gpt2-med", stage="SFT", judge="j", prompts_hash="abc", k=2, n=4,
                   summary=s, date="2024-06-01", run_dir=tmp_path / "run1")
    append_history(path, model="gpt2-med", stage="DPO", judge="j", prompts_hash="abc", k=8, n=100,
                   summary=REPLICATION)
    h = load_history(path)
    assert h.height == 2
    first, second = h.row(0, named=True), h.row(1, named=True)
    assert first["win_rate"] == pytest.approx(0.625) and first["std"] == pytest.approx(s.std)
    assert (first["date"], first["k"], first["n"], first["run_dir"]) == ("2024-06-01", 2, 4, str(tmp_path / "run1"))
    assert second["stage"] == "DPO" and second["win_rate"] == 0.53 and second["run_dir"] is None
    assert len(second["date"]) == 10  # today's ISO date by default
    assert h.filter(pl.col("stage") == "DPO")["std"].item() == 0.029  # queryable with polars
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def history_rows() -> pl.DataFrame:
    return pl.DataFrame([
        {"model": "gpt2-med", "stage": "DPO", "date": "2024-06-01", "n": 100, **REPLICATION},
        {"model": "gpt2-lg", "stage": "SFT", "date": "2024-06-02", "n": 100, "win_rate": 0.36,
         "std": None, "min": 0.36, "max": 0.36, "lc_win_rate": None},
    ], schema_overrides={"std": pl.Float64, "lc_win_rate": pl.Float64})


def test_markdown_has_the_exact_header_and_formats():
    md = history_markdown(history_rows()).splitlines()
    assert md[0] == "| Model | Stage | Date | Win Rate | STD | Min | Max |"
    assert md[2] == "| gpt2-med | DPO | 2024-06-01 | 53.0% | 2.9 | 49.0% | 57.0% |"
    assert md[3] == "| gpt2-lg | SFT | 2024-06-02 | 36.0% | — | 36.0% | 36.0% |"


def test_markdown_extras_come_after_the_fixed_columns():
    md = history_markdown(history_rows(), extras=("lc", "n")).splitlines()
    assert md[0] == "| Model | Stage | Date | Win Rate | STD | Min | Max | LC Win Rate | n |"
    assert md[2].endswith("| 57.0% | 51.2% | 100 |")
    with pytest.raises(ValueError, match="valid"):
        history_markdown(history_rows(), extras=("bogus",))


def test_rich_history_table():
    t = history_table(history_rows(), extras=("lc",))
    assert [c.header for c in t.columns] == list(HISTORY_HEADERS) + ["LC Win Rate"]
    text = render(t)
    assert "53.0%" in text and "2.9" in text and "51.2%" in text


def test_summary_table_and_report_md(tmp_path):
    t = summary_table([{"model": "a", "win_rate": 0.123456}, {"model": "b", "n": 3}], "runs")
    assert [c.header for c in t.columns] == ["model", "win_rate", "n"]
    assert "0.1235" in render(t)
    out = write_report_md(tmp_path / "r" / "report.md", [("Win rates", history_markdown(history_rows())),
                                                         ("Notes", "all good\n\n")], title="Round 2")
    text = out.read_text()
    assert text.startswith("# Round 2\n") and "## Win rates\n\n| Model | Stage |" in text
    assert text.endswith("## Notes\n\nall good\n")


def test_plot_winrates_bars_carry_the_numbers(tmp_path):
    fig = plot_winrates(history_rows(), tmp_path / "wr.png")
    assert (tmp_path / "wr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    assert [b.get_height() for b in bars] == pytest.approx([53.0, 36.0])
    segments = bars.errorbar.lines[2][0].get_segments()
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([2 * 2.9, 0.0])
    assert any(np.allclose(line.get_ydata(), 50.0) for line in ax.get_lines())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gpt2-med/DPO", "gpt2-lg/SFT"]


def test_plot_training_curves_and_logps(tmp_path):
    dpo = pl.DataFrame({"step": [0, 10, 20], "rewards/margins": [0.0, 0.5, 0.7]})
    sdpo = pl.DataFrame({"step": [20, 0, 10], "rewards/margins": [1.2, 0.0, 0.6]})
    fig = plot_training_curves({"dpo": dpo, "sdpo": sdpo}, tmp_path / "m.png")
    lines = {l.get_label(): l for l in fig.axes[0].get_lines()}
    assert list(lines["dpo"].get_ydata()) == [0.0, 0.5, 0.7]
    assert list(lines["sdpo"].get_xdata()) == [0, 10, 20] and list(lines["sdpo"].get_ydata()) == [0.0, 0.6, 1.2]
    with pytest.raises(ValueError, match="rewards/margins"):
        plot_training_curves({"x": pl.DataFrame({"step": [0]})}, tmp_path / "bad.png")
    curve = pl.DataFrame({"step": [0, 1], "logps/chosen": [-50.0, -48.0], "logps/rejected": [-52.0, -70.0]})
    fig = plot_logps(curve, tmp_path / "l.png")
    lines = {l.get_label(): list(l.get_ydata()) for l in fig.axes[0].get_lines()}
    assert lines == {"chosen": [-50.0, -48.0], "rejected": [-52.0, -70.0]}
    assert (tmp_path / "l.png").stat().st_size > 0
