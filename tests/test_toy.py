"""The 3D-properties toy (train.toy): mechanics, files, and the paper's effects over 5 seeds.

The multi-seed tests run the documented default ToyConfig (beta 0.1, Adam, lr 1e-3, 300 steps,
MLP width 128, SFT targets likely 0.4 / unlikely 0.02) for seeds 0..4; nothing is tuned per seed.
"""
from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from prefwork.train.toy import SCENARIOS, ToyConfig, sft_targets, simulate
from prefwork.train.toy_findings import check_findings
from prefwork.train.toy_plots import PANELS, scenario_curves, scenario_figure
from prefwork.train.toy_run import run_toy

SEEDS = (0, 1, 2, 3, 4)
FAST = ToyConfig(seeds=(0,), losses=("dpo", "dpo_sft"), steps=30, sft_steps=100)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sft_targets_are_distributions_with_the_scenario_masses(scenario):
    t = sft_targets(scenario, likely=0.4, unlikely=0.02)
    chosen_likely, rejected_likely = SCENARIOS[scenario]
    assert t.shape == (4, 10)
    assert np.allclose(t.sum(-1).numpy(), 1.0)
    assert np.allclose(t[range(4), range(4)].numpy(), 0.4 if chosen_likely else 0.02)
    assert np.allclose(t[range(4), range(4, 8)].numpy(), 0.4 if rejected_likely else 0.02)
    assert (t[:, 8:] > 0).all()  # the unseen responses hold mass, so dispersion is measurable


def test_sft_reaches_the_targets_and_the_ensemble_equals_single_runs():
    both = simulate(replace(FAST, seeds=(0, 1)))
    alone = simulate(replace(FAST, seeds=(1,)))
    for key, h in alone.items():
        for name, values in h.items():
            np.testing.assert_allclose(both[key][name], values, rtol=1e-4, atol=1e-6)
    start = both[(0, "chosen_likely", "dpo")]
    assert start["chosen"][0] == pytest.approx(0.4, abs=0.01)
    assert start["rejected"][0] == pytest.approx(0.02, abs=0.005)


def test_unknown_loss_and_scenario_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="valid losses"):
        run_toy(replace(FAST, losses=("dpo", "nope")), tmp_path)
    with pytest.raises(ValueError, match="valid: on_policy"):
        simulate(replace(FAST, scenarios=("sideways",)))


def test_run_toy_writes_summary_tables_and_plots_of_the_same_numbers(tmp_path):
    result = run_toy(FAST, tmp_path)
    assert len(result.summary) == 4 * 2
    for row in result.summary:
        chosen = result.histories[(row["seed"], row["scenario"], row["loss"])]["chosen"]
        assert row["peak_chosen"] == pytest.approx(chosen.max())
        assert row["final_chosen"] == pytest.approx(chosen[-1])
        assert row["degradation"] == pytest.approx(chosen.max() - chosen[-1])
        assert 0 <= row["final_unseen"] <= row["final_outside"] <= 1
    with open(tmp_path / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and float(rows[0]["final_chosen"]) == pytest.approx(result.summary[0]["final_chosen"])
    with open(tmp_path / "history.csv") as fh:
        assert sum(1 for _ in fh) == 1 + 8 * (FAST.steps + 1)
    for scenario in SCENARIOS:
        png = tmp_path / f"toy_{scenario}.png"
        assert png in result.files and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        fig, curves = scenario_figure(result.histories, scenario), scenario_curves(result.histories, scenario)
        for ax, (name, _) in zip(fig.axes, PANELS):
            lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
            assert set(lines) == {"dpo", "dpo_sft"}
            for loss, ydata in lines.items():
                np.testing.assert_allclose(ydata, curves[loss][name])
                np.testing.assert_allclose(ydata, result.histories[(0, scenario, loss)][name])


def _history(chosen: list[float], outside: float) -> dict:
    """A hand-made history: p(chosen) per step, constant other series."""
    c = np.array(chosen)
    flat = np.full_like(c, 0.1)
    return {"chosen": c, "rejected": flat, "unseen": flat, "outside": np.full_like(c, outside),
            "chosen_logp": np.log(c), "rejected_logp": np.log(flat)}


def test_findings_count_seeds_and_skip_what_the_run_cannot_compare():
    """Seed 0: on-policy drops 0.1 against 0.3 (holds); seed 1: 0.4 against 0.1 (fails). Findings
    that need rejected_likely, off_policy or dpo_sft do not apply to these runs."""
    runs = {(0, "on_policy", "dpo"): _history([0.4, 0.9, 0.8], 0.1),
            (0, "chosen_likely", "dpo"): _history([0.4, 0.9, 0.6], 0.3),
            (1, "on_policy", "dpo"): _history([0.4, 0.9, 0.5], 0.4),
            (1, "chosen_likely", "dpo"): _history([0.4, 0.9, 0.8], 0.1)}
    rows = {r["finding"].split(":")[0].split(" (")[0]: r for r in check_findings(runs)}
    assert set(rows) == {"degradation", "dispersion", "on-policy loses less of the chosen peak than chosen_likely"}
    row = rows["on-policy loses less of the chosen peak than chosen_likely"]
    assert (row["held"], row["seeds"], row["failing"]) == (1, 2, [1])
    assert rows["degradation"]["failing"] == [0, 1]  # a peak 1 step before the end is no degradation


@pytest.fixture(scope="module")
def paper_runs():
    """The default (paper) settings, 5 seeds, dpo and dpo_sft: (seed, scenario, loss) -> series."""
    return simulate(ToyConfig(seeds=SEEDS, losses=("dpo", "dpo_sft")))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["on_policy", "chosen_likely", "off_policy"])
def test_dpo_rejected_falls_faster_than_chosen_rises(paper_runs, scenario):
    """Drastic drop: over the first 20 steps the rejected log-prob falls more than the chosen
    log-prob rises. (Not asserted for rejected_likely: there the chosen starts at 0.02 and its
    log-prob rises faster; the toy does not reproduce the drop in that scenario.)"""
    for seed in SEEDS:
        h = paper_runs[(seed, scenario, "dpo")]
        fall = h["rejected_logp"][0] - h["rejected_logp"][20]
        rise = h["chosen_logp"][20] - h["chosen_logp"][0]
        assert fall > rise > 0, (seed, fall, rise)


@pytest.mark.slow
def test_dpo_chosen_peaks_then_degrades_and_mass_disperses(paper_runs):
    """Degradation: with the chosen answer likely and the rejected one unlikely at the start
    (the scenario where it is clearest), p(chosen) peaks before the end and then loses at least
    0.1; dispersion: the mass leaving the chosen answer goes to responses outside the prompt's
    pair (the other prompts' answers), which grows by at least 0.1 from its minimum."""
    for seed in SEEDS:
        h = paper_runs[(seed, "chosen_likely", "dpo")]
        assert h["chosen"].argmax() < len(h["chosen"]) - 50, seed
        assert h["chosen"].max() - h["chosen"][-1] >= 0.1, seed
        assert h["outside"][-1] - h["outside"].min() >= 0.1, seed


@pytest.mark.slow
def test_dpo_disperses_mass_onto_the_never_seen_responses(paper_runs):
    """Dispersion onto responses 8, 9 (never in any pair): when the rejected answer starts likely,
    the mass it loses spreads to them, p(8) + p(9) rising by at least 0.03 above its start."""
    for seed in SEEDS:
        unseen = paper_runs[(seed, "rejected_likely", "dpo")]["unseen"]
        assert unseen.max() - unseen[0] >= 0.03, seed


@pytest.mark.slow
def test_dpo_sft_keeps_the_chosen_answer_more_likely_than_dpo(paper_runs):
    for seed in SEEDS:
        for scenario in SCENARIOS:
            dpo = paper_runs[(seed, scenario, "dpo")]["chosen"][-1]
            dpo_sft = paper_runs[(seed, scenario, "dpo_sft")]["chosen"][-1]
            assert dpo_sft > dpo, (seed, scenario, dpo, dpo_sft)


def _drop(h: dict) -> float:
    """Degradation: peak minus final p(chosen)."""
    return float(h["chosen"].max() - h["chosen"][-1])


@pytest.mark.slow
def test_dpo_on_policy_rejected_softens_degradation_and_dispersion(paper_runs):
    """The paper's on-policy effect as a matched comparison, seed by seed: the same likely chosen
    start (0.4), with the rejected answer likely too (on_policy, as when both are sampled from the
    model) vs unlikely (chosen_likely, an off-policy rejected). On-policy data loses less of the
    chosen peak, ends with the chosen answer more likely, and leaves less mass outside the pair."""
    for seed in SEEDS:
        on, off = paper_runs[(seed, "on_policy", "dpo")], paper_runs[(seed, "chosen_likely", "dpo")]
        assert _drop(on) < _drop(off), (seed, _drop(on), _drop(off))
        assert on["chosen"][-1] > off["chosen"][-1], seed
        assert on["outside"][-1] < off["outside"][-1], seed


@pytest.mark.slow
def test_dpo_on_policy_ends_best_of_the_four_starts(paper_runs):
    """Seed by seed, after DPO the on-policy start has the most likely chosen answer and the least
    mass outside the pair of all four starts."""
    for seed in SEEDS:
        final = {s: paper_runs[(seed, s, "dpo")]["chosen"][-1] for s in SCENARIOS}
        outside = {s: paper_runs[(seed, s, "dpo")]["outside"][-1] for s in SCENARIOS}
        assert max(final, key=final.get) == "on_policy", (seed, final)
        assert min(outside, key=outside.get) == "on_policy", (seed, outside)


@pytest.mark.slow
def test_dpo_on_policy_degrades_less_on_held_out_seeds():
    """The matched comparison on seeds 10..39, which played no part in choosing the settings (the
    MLP width was chosen on seeds 0..9): it holds on at least 27 of the 30 (measured: 29, all but
    seed 38; at the old width 64 it held on 21)."""
    seeds = tuple(range(10, 40))
    runs = simulate(ToyConfig(seeds=seeds, losses=("dpo",), scenarios=("on_policy", "chosen_likely")))
    held = [s for s in seeds if _drop(runs[(s, "on_policy", "dpo")]) < _drop(runs[(s, "chosen_likely", "dpo")])]
    assert len(held) >= 27, sorted(set(seeds) - set(held))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="Not reproduced: the smallest peak-to-final drop of p(chosen) among "
                   "all four starts. The on-policy start beats the same chosen start with an unlikely "
                   "rejected answer seed by seed (tests above), but the rejected_likely start (chosen 0.02, "
                   "rejected 0.4) drops less still on most seeds (measured on seeds 0..9: on-policy least on "
                   "2; on 4 with a relative, log or share-of-gain drop; on 2-3 with 600 or 1000 steps): its "
                   "chosen answer rises late, to about 0.35, on the mass the rejected answer gives up, and "
                   "barely falls. The paper's accessible text defines neither degradation nor a ranking of "
                   "the four starts. Kept as a record of the gap.")
def test_dpo_on_policy_has_the_smallest_drop_of_all_four_starts(paper_runs):
    """Degradation = peak p(chosen) - final p(chosen); on_policy should have the smallest."""
    for seed in SEEDS:
        drop = {s: _drop(paper_runs[(seed, s, "dpo")]) for s in SCENARIOS}
        assert drop["on_policy"] == min(drop.values()), (seed, drop)
