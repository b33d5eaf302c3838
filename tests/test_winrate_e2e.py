"""End to end: ``prefwork winrate`` of the real tiny policy against itself, then ``prefwork report``.

k=3 repeats of 40 held-out prompts, transformers engine, 48 new tokens. The two sides use
distinct seeds, so this is two independent samples of one policy: the true win rate is
50%, and the evaluation must land within its own interval of it, with real disagreement
(the tie share below 1). The plots' bars must carry the numbers in summary.json.
"""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from matplotlib.container import BarContainer

from conftest import DATA


@pytest.mark.slow
def test_tiny_policy_vs_itself_lands_near_half(sft_policy, tmp_path, monkeypatch, capsys):
    import prefwork.evaluators.report_winrate as er
    from prefwork.flows.cli import main

    figures = {}
    real_write = er.write_outputs

    def keep_figures(*args, **kwargs):  # the CLI's own figures, to read the plotted numbers back
        out = real_write(*args, **kwargs)
        figures.update(out["figures"])
        return out

    monkeypatch.setattr(er, "write_outputs", keep_figures)
    ws = tmp_path / "ws"
    rc = main(["winrate", "--model", str(sft_policy), "--baseline", str(sft_policy),
               "--model-name", "tiny-sft", "--baseline-name", "tiny-sft (other seeds)",
               "--prompts", str(DATA / "prompts" / "heldout.jsonl"), "--repeats", "3", "--prompts-per-repeat", "40",
               "--engine", "transformers", "--threads", "2", "--max-tokens", "48", "--stage", "SFT",
               "--workspace", str(ws)])
    assert rc == 0
    printed = capsys.readouterr().out
    (run_dir,) = [d for d in ws.iterdir() if d.is_dir() and not d.name.startswith(".")]

    # Judgments in the contract: 40 prompts x 3 repeats, no failures, the two sides never share a seed.
    j = pl.read_parquet(run_dir / "judgments.parquet")
    assert j.height == 120 and j["repeat"].n_unique() == 3 and j["prompt_id"].n_unique() == 40
    m = pl.read_parquet(run_dir / "candidates" / "tiny-sft.parquet")
    b = pl.read_parquet(run_dir / "candidates" / "baseline.parquet")
    assert set(m["seed"]).isdisjoint(set(b["seed"])) and m["seed"].n_unique() == 3

    s = json.loads((run_dir / "summary.json").read_text())["models"]["tiny-sft"]
    ties = sum(r["ties"] for r in s["per_repeat"])
    assert s["n_errors"] == 0 and s["n"] == 120
    assert ties / s["n"] < 1, "every pair tied: the judge never separated the two samples"
    assert s["ci_low"] <= 0.5 <= s["ci_high"], (s["ci_low"], s["win_rate"], s["ci_high"])
    assert s["std"] is not None and s["min"] <= s["win_rate"] <= s["max"]
    assert f"{100 * s['win_rate']:.1f}%" in printed and "Per repeat" in printed

    # The plots carry the computed numbers: bar height = win rate, error bar = STD (points).
    ax = figures["winrate"].axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert bars.patches[0].get_height() == pytest.approx(100 * s["win_rate"])
    seg = bars.errorbar.lines[2][0].get_segments()[0]
    assert seg[1][1] - seg[0][1] == pytest.approx(2 * 100 * s["std"])
    ax = figures["repeats"].axes[0]
    heights = [p.get_height() for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]
    assert np.allclose(heights, [100 * r["win_rate"] for r in s["per_repeat"]])
    assert ax.collections[0].get_segments()[0][0][1] == pytest.approx(100 * s["win_rate"])  # the mean line
    for png in ("winrate.png", "winrate_repeats.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run_dir / "report.md").read_text()
    assert "](winrate.png)" in report and "](winrate_repeats.png)" in report and "Per repeat" in report

    # The history row, and `prefwork report` printing it as the replication's table.
    md = tmp_path / "history.md"
    assert main(["report", "--workspace", str(ws), "--markdown", str(md), "--plot", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "tiny-sft" in out and "SFT" in out
    lines = md.read_text().splitlines()
    assert lines[0] == "| Model | Stage | Date | Win Rate | STD | Min | Max |"
    assert lines[2].startswith("| tiny-sft | SFT |") and f"{100 * s['win_rate']:.1f}%" in lines[2]
    assert (tmp_path / "h.png").exists()
