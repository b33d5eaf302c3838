"""Plots of the 3D-properties toy (train.toy): one PNG per starting scenario.

Each figure has one panel per series (p(chosen), p(rejected), p(8)+p(9) unseen, mass outside the
prompt's pair), one line per loss; with several seeds, the line is the mean over seeds (the plotted
numbers are exactly ``scenario_curves``' output, which the tests compare to the figure's lines).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANELS = (("chosen", "p(chosen)"), ("rejected", "p(rejected)"),
          ("unseen", "p(unseen 8, 9)"), ("outside", "mass outside the pair"))


def scenario_curves(histories: dict, scenario: str) -> dict[str, dict[str, np.ndarray]]:
    """loss -> series -> (steps + 1,) mean over seeds, for one scenario."""
    by_loss: dict[str, list[dict]] = {}
    for (_, scen, loss), h in histories.items():
        if scen == scenario:
            by_loss.setdefault(loss, []).append(h)
    return {loss: {name: np.mean([h[name] for h in hs], axis=0) for name, _ in PANELS}
            for loss, hs in by_loss.items()}


def scenario_figure(histories: dict, scenario: str) -> plt.Figure:
    """A 1 x 4 figure for ``scenario``: axes[k] plots PANELS[k] for every loss (label = loss)."""
    curves = scenario_curves(histories, scenario)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 3.6), constrained_layout=True)
    for ax, (name, title) in zip(axes, PANELS):
        for loss, series in curves.items():
            ax.plot(np.arange(len(series[name])), series[name], label=loss)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"toy model, scenario {scenario}")
    return fig


def save_plots(histories: dict, out_dir: Path) -> list[Path]:
    """Write toy_<scenario>.png for every scenario in ``histories``; returns the paths."""
    paths = []
    for scenario in dict.fromkeys(scen for _, scen, _ in histories):
        fig = scenario_figure(histories, scenario)
        path = Path(out_dir) / f"toy_{scenario}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    return paths
