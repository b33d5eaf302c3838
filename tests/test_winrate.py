"""Win-rate statistics on hand-computed tables (evaluators/winrate.py, evaluators/winrate_compare.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from prefwork.evaluators.winrate import length_controlled_rate, summarize
from prefwork.evaluators.winrate_compare import decompose_variance, paired_difference
from prefwork.pipeline.schemas import SchemaError


def table(prefs: dict[int, list], *, model_len=None, baseline_len=None, model="m") -> pl.DataFrame:
    """JUDGMENTS rows from {repeat: [preference per prompt]}; None = a failed judgment."""
    rows = []
    for r, ps in prefs.items():
        for i, p in enumerate(ps):
            rows.append(dict(
                prompt_id=f"p{i}", repeat=r, model=model, baseline="base", judge="j",
                model_text="a", baseline_text="b",
                model_len=model_len[i] if model_len else 10, baseline_len=baseline_len[i] if baseline_len else 10,
                preference=None if p is None else float(p), error="judge timed out" if p is None else None))
    return pl.DataFrame(rows, schema_overrides={"preference": pl.Float64, "error": pl.String})


def test_all_ties_is_exactly_half_with_zero_std():
    s = summarize(table({0: [0.5] * 5, 1: [0.5] * 5, 2: [0.5] * 5}))
    assert s.win_rate == 0.5 and s.std == 0.0 and s.min == s.max == 0.5
    assert s.per_repeat["ties"].to_list() == [5, 5, 5]
    assert s.per_repeat["wins"].sum() == 0 and s.per_repeat["losses"].sum() == 0
    assert s.lc_win_rate == pytest.approx(0.5, abs=1e-12)


def test_single_repeat_has_no_std():
    # One repeat: there is no spread across repeats to measure, so std is None (not 0).
    s = summarize(table({0: [1, 0, 1, 1]}))
    assert s.std is None
    assert s.win_rate == s.min == s.max == 0.75
    assert s.n_repeats == 1


def test_identical_repeats_have_zero_std():
    s = summarize(table({r: [1, 0, 0.5, 1] for r in range(4)}))
    assert s.std == 0.0 and s.win_rate == s.min == s.max == pytest.approx(2.5 / 4)


def test_known_table_by_hand():
    # repeat 0: [1, 1, 0, .5] -> 2.5/4 = 15/24;  repeat 1: [1, 0, 0, .5] -> 1.5/4 = 9/24
    # repeat 2: [1, 1, 1, 0]  -> 3/4 = 18/24.    mean = 42/72 = 14/24 = 0.58333
    # deviations (1/24 units): +1, -5, +4 -> squares 42/576; ddof=1: 21/576 -> std = sqrt(21)/24
    # SE (alpaca_eval, pooled 12 judgments): six 1s, four 0s, two .5s, mean 7/12;
    #   sum of squared deviations = (6*25 + 4*49 + 2*1)/144 = 348/144; var = 348/144/11;
    #   se = sqrt(var / 12) = sqrt(348 / (144*11*12)) = 0.13531
    s = summarize(table({0: [1, 1, 0, 0.5], 1: [1, 0, 0, 0.5], 2: [1, 1, 1, 0]}))
    assert s.win_rate == pytest.approx(14 / 24)
    assert s.std == pytest.approx(math.sqrt(21) / 24)
    assert (s.min, s.max) == (pytest.approx(9 / 24), pytest.approx(18 / 24))
    assert s.se == pytest.approx(math.sqrt(348 / (144 * 11 * 12)))
    pr = s.per_repeat
    assert pr["wins"].to_list() == [2, 1, 3]
    assert pr["losses"].to_list() == [1, 2, 1]
    assert pr["ties"].to_list() == [1, 1, 0]
    assert pr["n"].to_list() == [4, 4, 4] and pr["errors"].to_list() == [0, 0, 0]
    assert (s.n, s.n_errors, s.n_prompts) == (12, 0, 4)


def test_errors_excluded_from_denominator_and_bounded():
    # repeat 0: [1, err, 0, 1] -> 2/3;  repeat 1: [err, err, 1, 0] -> 1/2;  mean 7/12.
    # errors -> baseline: r0 2/4, r1 1/4 -> 3/8.  errors -> model: r0 3/4, r1 3/4 -> 3/4.
    s = summarize(table({0: [1, None, 0, 1], 1: [None, None, 1, 0]}))
    assert s.win_rate == pytest.approx(7 / 12)
    assert s.per_repeat["errors"].to_list() == [1, 2]
    assert s.per_repeat["n"].to_list() == [3, 2]
    assert s.per_repeat["ties"].to_list() == [0, 0]  # a failure is not a tie
    assert (s.n, s.n_errors) == (5, 3)
    assert s.win_rate_if_errors_lose == pytest.approx(3 / 8)
    assert s.win_rate_if_errors_win == pytest.approx(3 / 4)


def test_bootstrap_interval_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    prefs = {r: rng.choice([0.0, 0.5, 1.0], size=60, p=[0.4, 0.1, 0.5]).tolist() for r in range(5)}
    a, b = summarize(table(prefs), seed=3), summarize(table(prefs), seed=3)
    assert a.ci_low < a.win_rate < a.ci_high
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert summarize(table(prefs), n_boot=0).ci_low is None


def test_bootstrap_resamples_prompts_not_rows():
    # Prompts 0, 1 always win, 2, 3 always lose, over 50 repeats. Resampling prompts can
    # only give rates k/4 and P(all four drawn prompts lose) = 1/16 > 2.5%, so the 95%
    # interval is [0, 1]. Resampling the 200 rows would give about 0.5 +- 0.07.
    s = summarize(table({r: [1, 1, 0, 0] for r in range(50)}), n_boot=2000)
    assert s.win_rate == 0.5
    assert s.ci_low == 0.0 and s.ci_high == 1.0


def test_length_controlled_equals_raw_when_lengths_equal():
    rng = np.random.default_rng(1)
    prefs = {r: rng.choice([0.0, 0.5, 1.0], size=40, p=[0.3, 0.2, 0.5]).tolist() for r in range(3)}
    s = summarize(table(prefs))
    assert s.lc_win_rate == pytest.approx(s.win_rate, abs=1e-9)
    assert s.longer_wins_share is None  # no pair has a longer answer


def test_length_controlled_removes_a_pure_length_effect():
    # The longer answer always wins and the model is longer on 3 of 4 prompts: raw 0.75,
    # but at equal length the model is no better than the baseline (LC near 0.5).
    prefs = {r: [1, 1, 1, 0] * 10 for r in range(2)}
    mlen, blen = [20, 20, 20, 10] * 10, [10, 10, 10, 20] * 10
    s = summarize(table(prefs, model_len=mlen, baseline_len=blen))
    assert s.win_rate == 0.75 and s.longer_wins_share == 1.0
    assert abs(s.lc_win_rate - 0.5) < 0.15
    assert (s.mean_model_len, s.mean_baseline_len) == (17.5, 12.5)


def test_length_controlled_fit_stays_finite_on_separable_data():
    rate = length_controlled_rate(np.array([1.0, 1.0, 0.0, 0.0]), np.array([5.0, 3.0, -2.0, -4.0]))
    assert 0.0 < rate < 1.0 and math.isfinite(rate)
    assert length_controlled_rate(np.array([1.0, 1.0]), np.array([3.0, -1.0])) == 1.0


def test_longer_wins_share_counts_only_decided_unequal_pairs():
    # pairs: model longer & wins (longer won), model longer & loses (shorter won),
    # tie (ignored), equal length & win (ignored), model shorter & loses (longer won) -> 2/3
    s = summarize(table({0: [1, 0, 0.5, 1, 0]}, model_len=[9, 9, 9, 5, 1], baseline_len=[5, 5, 5, 5, 5]))
    assert s.longer_wins_share == pytest.approx(2 / 3)


def test_to_dict_is_json_ready():
    d = summarize(table({0: [1, 0], 1: [0.5, 1]})).to_dict()
    assert json.loads(json.dumps(d))["per_repeat"][1]["win_rate"] == 0.75


def test_bad_inputs_are_named():
    with pytest.raises(SchemaError, match="preference"):
        summarize(table({0: [1, 2]}))
    silent = table({0: [1, 0]}).with_columns(preference=pl.lit(None, pl.Float64))
    with pytest.raises(SchemaError, match="error"):
        summarize(silent)
    with pytest.raises(ValueError, match="model"):
        summarize(pl.concat([table({0: [1]}), table({0: [0]}, model="other")]))


def with_judge_repeats(cells: dict[tuple[int, int], int], n: int = 10) -> pl.DataFrame:
    """Cells {(repeat, judge_repeat): wins out of n}, the rest losses."""
    parts = [table({g: [1] * w + [0] * (n - w)}).with_columns(judge_repeat=pl.lit(j, pl.Int64))
             for (g, j), w in cells.items()]
    return pl.concat(parts)


def test_decompose_variance_by_hand():
    # W: g0 -> 0.5, 0.7; g1 -> 0.3, 0.5. Within-g variances (ddof=1): 0.02 and 0.02 -> judge 0.02.
    # g-means 0.6, 0.4 -> variance 0.02; minus judge/J = 0.01 -> generation 0.01; total 0.03.
    d = decompose_variance(with_judge_repeats({(0, 0): 5, (0, 1): 7, (1, 0): 3, (1, 1): 5}))
    assert d["std_judge"] == pytest.approx(math.sqrt(0.02))
    assert d["std_generation"] == pytest.approx(math.sqrt(0.01))
    assert d["std_total"] == pytest.approx(math.sqrt(0.03))
    assert (d["n_generations"], d["n_judge_repeats"]) == (2, 2)


def test_decompose_variance_deterministic_judge():
    d = decompose_variance(with_judge_repeats({(0, 0): 4, (0, 1): 4, (1, 0): 6, (1, 1): 6, (2, 0): 8, (2, 1): 8}))
    assert d["std_judge"] == 0.0
    assert d["std_generation"] == pytest.approx(0.2)  # std of 0.4, 0.6, 0.8
    with pytest.raises(SchemaError, match="judge_repeat"):
        decompose_variance(table({0: [1, 0]}))


def test_paired_difference_with_itself_is_zero():
    t = table({r: [1, 0, 0.5, 1, None] for r in range(3)})
    d = paired_difference(t, t)
    assert d.mean_diff == 0.0 and d.ci_low == 0.0 and d.ci_high == 0.0
    assert d.per_repeat["diff"].to_list() == [0.0, 0.0, 0.0]
    assert (d.n_pairs, d.n_dropped, d.n_unmatched) == (12, 3, 0)


def test_paired_difference_known_gain_and_dropped_pairs():
    # b: [0, 0, 1, 0, err]; a wins prompt 0 too and its own judgment of prompt 3 failed.
    # Common successful pairs: prompts 0, 1, 2 -> a 2/3, b 1/3 -> diff 1/3 in every repeat.
    a = table({r: [1, 0, 1, None, 1] for r in range(2)}, model="new")
    b = table({r: [0, 0, 1, 0, None] for r in range(2)}, model="old")
    d = paired_difference(a, b)
    assert d.mean_diff == pytest.approx(1 / 3)
    assert d.per_repeat["rate_a"].to_list() == pytest.approx([2 / 3, 2 / 3])
    assert d.n_dropped == 4 and d.n_pairs == 6
    assert d.ci_low <= d.mean_diff <= d.ci_high and d.ci_high > 0
    with pytest.raises(ValueError, match="baseline"):
        paired_difference(a, b.with_columns(baseline=pl.lit("other")))
