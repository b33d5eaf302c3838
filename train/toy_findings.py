"""The 3D-properties paper's findings, checked seed by seed on toy runs (train.toy).

What: each finding is a predicate on one seed's histories; ``check_findings`` reports on how many
seeds it holds and which seeds fail, so ``prefwork toy --seeds ...`` shows at once how robust a
setting is (the README's seed counts come from it). A finding is skipped when the run lacks the
scenarios or losses it compares.

Why: a mean over seeds can hide a finding that holds on half of them; these counts do not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from prefwork.train.toy import SCENARIOS
from prefwork.train.toy import degradation as _drop

History = dict[str, np.ndarray]
Runs = dict[tuple[int, str, str], History]
ALL = tuple(SCENARIOS)


def _fast_drop(h: History, steps: int = 20) -> bool:
    """Over the first ``steps`` steps (or all, if fewer) the rejected log-prob falls more than the
    chosen one rises."""
    steps = min(steps, len(h["chosen_logp"]) - 1)
    fall = h["rejected_logp"][0] - h["rejected_logp"][steps]
    rise = h["chosen_logp"][steps] - h["chosen_logp"][0]
    return bool(fall > rise > 0)


def _peaks_then_degrades(h: History) -> bool:
    """p(chosen) peaks at least 50 steps before the end and loses at least 0.1 after."""
    return bool(h["chosen"].argmax() < len(h["chosen"]) - 50 and _drop(h) >= 0.1)


Run = Callable[[str, str], History]  # (scenario, loss) -> one seed's history


def _ends_best(r: Run, present: set[str]) -> bool:
    final = {s: r(s, "dpo")["chosen"][-1] for s in ALL}
    outside = {s: r(s, "dpo")["outside"][-1] for s in ALL}
    return max(final, key=final.get) == "on_policy" and min(outside, key=outside.get) == "on_policy"


def _outside_grows(r: Run, present: set[str]) -> bool:
    outside = r("chosen_likely", "dpo")["outside"]
    return bool(outside[-1] - outside.min() >= 0.1)


def _unseen_rises(r: Run, present: set[str]) -> bool:
    unseen = r("rejected_likely", "dpo")["unseen"]
    return bool(unseen.max() - unseen[0] >= 0.03)


def _sft_keeps_chosen(r: Run, present: set[str]) -> bool:
    return all(r(s, "dpo_sft")["chosen"][-1] > r(s, "dpo")["chosen"][-1] for s in present)


@dataclass(frozen=True)
class Finding:
    """One paper finding: ``holds(run, scenarios present)`` for one seed, given the scenarios and
    losses it needs."""

    name: str
    scenarios: tuple[str, ...]
    losses: tuple[str, ...]
    holds: Callable[[Run, set[str]], bool]


_THREE = ("on_policy", "chosen_likely", "off_policy")
FINDINGS: tuple[Finding, ...] = (
    Finding("drastic drop: rejected log-prob falls faster than chosen rises (on_policy, chosen_likely, off_policy)",
            _THREE, ("dpo",), lambda r, _: all(_fast_drop(r(s, "dpo")) for s in _THREE)),
    Finding("degradation: p(chosen) peaks, then loses >= 0.1 (chosen_likely)", ("chosen_likely",), ("dpo",),
            lambda r, _: _peaks_then_degrades(r("chosen_likely", "dpo"))),
    Finding("dispersion: mass outside the pair grows >= 0.1 from its minimum (chosen_likely)",
            ("chosen_likely",), ("dpo",), _outside_grows),
    Finding("dispersion: p(unseen 8, 9) rises >= 0.03 above its start (rejected_likely)", ("rejected_likely",),
            ("dpo",), _unseen_rises),
    Finding("on-policy loses less of the chosen peak than chosen_likely", ("on_policy", "chosen_likely"),
            ("dpo",), lambda r, _: _drop(r("on_policy", "dpo")) < _drop(r("chosen_likely", "dpo"))),
    Finding("on-policy ends with the most likely chosen, least mass outside (all four)", ALL, ("dpo",), _ends_best),
    Finding("on-policy has the smallest peak-to-final drop (all four; not reproduced)", ALL, ("dpo",),
            lambda r, _: _drop(r("on_policy", "dpo")) == min(_drop(r(s, "dpo")) for s in ALL)),
    Finding("dpo_sft ends with p(chosen) above dpo's (every start run)", (), ("dpo", "dpo_sft"), _sft_keeps_chosen),
)


def check_findings(runs: Runs) -> list[dict]:
    """One row per applicable finding: ``finding``, ``held`` (seeds), ``seeds``, ``failing`` (seed list)."""
    seeds = sorted({k[0] for k in runs})
    scenarios = {k[1] for k in runs}
    losses = {k[2] for k in runs}
    rows = []
    for f in FINDINGS:
        if not (set(f.scenarios) <= scenarios and set(f.losses) <= losses):
            continue
        failing = [seed for seed in seeds
                   if not f.holds(lambda scenario, loss, seed=seed: runs[(seed, scenario, loss)], scenarios)]
        rows.append({"finding": f.name, "held": len(seeds) - len(failing), "seeds": len(seeds), "failing": failing})
    return rows
