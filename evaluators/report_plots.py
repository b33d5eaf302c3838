"""Charts of the report family: win rates with error bars, training curves, chosen/rejected log-probs.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, so no
global figure registry, no display, nothing to close) and saved as PNG. Each function
returns the Figure so callers and tests can read the plotted numbers back from its axes
(bar heights, error-bar segments, line data).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: str | os.PathLike) -> Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return fig


def _rows(history_or_rows: pl.DataFrame | Iterable[dict]) -> list[dict]:
    rows = history_or_rows.to_dicts() if isinstance(history_or_rows, pl.DataFrame) else list(history_or_rows)
    if not rows:
        raise ValueError("nothing to plot: no win-rate rows")
    for i, r in enumerate(rows):
        if r.get("win_rate") is None:
            raise ValueError(f"row {i + 1} has no win_rate (keys: {sorted(r)})")
    return rows


def plot_winrates(history_or_rows: pl.DataFrame | Iterable[dict], path: str | os.PathLike,
                  *, title: str = "Win rate vs baseline") -> Figure:
    """One bar per evaluation (label ``model/stage``), height = win rate in %, error bar = std
    in percentage points (none when std is missing), and a dashed line at 50%.

    Accepts a history DataFrame (``evaluators.report_history.load_history``) or dicts with
    ``win_rate`` and optional ``std``, ``model``, ``stage`` (rates as fractions).
    """
    rows = _rows(history_or_rows)
    labels = [f"{r.get('model', '?')}/{r.get('stage', '?')}" for r in rows]
    heights = np.array([100 * r["win_rate"] for r in rows])
    errs = np.array([0.0 if r.get("std") is None or np.isnan(r["std"]) else 100 * r["std"] for r in rows])
    fig, ax = new_figure(max(5.0, 1.2 * len(rows) + 2))
    ax.bar(np.arange(len(rows)), heights, yerr=errs, capsize=4, color="tab:blue", alpha=0.8)
    ax.axhline(50.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(np.arange(len(rows)), labels, rotation=20, ha="right")
    ax.set_ylabel("win rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    return save_figure(fig, path)


def _require(df: pl.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing} (has: {df.columns})")


def plot_training_curves(curves: dict[str, pl.DataFrame], path: str | os.PathLike,
                         y: str = "rewards/margins") -> Figure:
    """One line per run (e.g. ``{"dpo": df, "sdpo": df}``) of metric ``y`` over ``step``."""
    if not curves:
        raise ValueError("nothing to plot: no training curves")
    fig, ax = new_figure()
    for name, df in curves.items():
        _require(df, ["step", y], f"curve '{name}'")
        df = df.sort("step")
        ax.plot(df["step"].to_numpy(), df[y].to_numpy(), label=name, marker="." if df.height < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(y)
    ax.legend()
    ax.set_title(f"{y} over training")
    return save_figure(fig, path)


def plot_logps(curve: pl.DataFrame, path: str | os.PathLike, *, title: str = "log-likelihood") -> Figure:
    """Chosen and rejected log-likelihood over ``step`` (columns logps/chosen, logps/rejected):
    shows the 3D-properties paper's drastic drop of the rejected answer and any degradation."""
    _require(curve, ["step", "logps/chosen", "logps/rejected"], "curve")
    curve = curve.sort("step")
    fig, ax = new_figure()
    for col, color in (("logps/chosen", "tab:green"), ("logps/rejected", "tab:red")):
        ax.plot(curve["step"].to_numpy(), curve[col].to_numpy(), label=col.split("/")[1], color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("log-prob")
    ax.legend()
    ax.set_title(title)
    return save_figure(fig, path)
