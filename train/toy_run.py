"""A toy run end to end: simulate (``train.toy``), check the paper's findings (``train.toy_findings``),
write the tables and plots (``train.toy_plots``).

Why its own module: the findings build on the simulation's definitions (``SCENARIOS``,
``degradation``), and running the toy uses both; here the three meet without an import
circle between them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from prefwork.pipeline.store import atomic_write_bytes
from prefwork.train.losses import get_loss
from prefwork.train.toy import ToyConfig, simulate, summarize
from prefwork.train.toy_findings import check_findings


@dataclass
class ToyResult:
    """What a toy run produced.

    histories: (seed, scenario, loss) -> {series: (steps + 1,) array}, series in SERIES.
    summary: one dict per (seed, scenario, loss) with peak/final chosen, final rejected, final unseen.
    findings: the paper's findings the run can check, each with the seeds it holds on
    (train.toy_findings.check_findings).
    """

    config: ToyConfig
    histories: dict[tuple[int, str, str], dict[str, np.ndarray]]
    summary: list[dict]
    files: list[Path]
    findings: list[dict] = field(default_factory=list)


def _write_text(path: Path, text: str) -> None:
    """Written atomically (temp file, rename), so a reader never sees half a file."""
    atomic_write_bytes(path, text.encode())


def _write_tables(result_rows: list[dict], histories: dict, config: ToyConfig, out_dir: Path) -> list[Path]:
    """config.json, summary.csv and history.csv (long: seed, scenario, loss, step, series...)."""
    import polars as pl

    cfg_path, sum_path, hist_path = out_dir / "config.json", out_dir / "summary.csv", out_dir / "history.csv"
    _write_text(cfg_path, json.dumps(asdict(config), indent=2))
    _write_text(sum_path, pl.DataFrame(result_rows).write_csv())
    frames = [pl.DataFrame({"seed": seed, "scenario": scen, "loss": loss,
                            "step": np.arange(len(h["chosen"])), **h})
              for (seed, scen, loss), h in histories.items()]
    _write_text(hist_path, pl.concat(frames).write_csv())
    return [cfg_path, sum_path, hist_path]


def run_toy(config: ToyConfig, out_dir: Path) -> ToyResult:
    """Run the toy (all seeds x scenarios x losses), write tables and plots into ``out_dir``.

    Writes config.json, summary.csv, history.csv, findings.json (the paper's findings, seed by
    seed) and, if ``config.plots``, toy_<scenario>.png (one per scenario, from train.toy_plots).
    Runs in seconds on one CPU thread.
    """
    for name in config.losses:
        get_loss(name)  # an unknown loss fails here, listing the valid names
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histories = simulate(config)
    rows = summarize(histories)
    files = _write_tables(rows, histories, config, out_dir)
    findings = check_findings(histories)
    _write_text(out_dir / "findings.json", json.dumps(findings, indent=2))
    files.append(out_dir / "findings.json")
    if config.plots:
        from prefwork.train.toy_plots import save_plots

        files += save_plots(histories, out_dir)
    return ToyResult(config=config, histories=histories, summary=rows, files=files, findings=findings)
