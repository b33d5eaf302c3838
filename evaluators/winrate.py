"""Win-rate statistics over pairwise judgments (the JUDGMENTS contract in DESIGN.md).

A judgments table holds one row per (prompt, repeat): ``preference`` is 1 when the model
wins, 0 when the baseline wins, 0.5 for a tie, and null with ``error`` set when the judge
failed. All rates here are fractions in [0, 1]; reports turn them into percentages.

Comparing two models (``paired_difference``) and splitting the spread into judge and generation
noise (``decompose_variance``) live in ``evaluators.winrate_compare``.

Definitions used throughout (so numbers can be checked by hand):

- per-repeat win rate: mean ``preference`` over that repeat's successful judgments (ties
  count 0.5). A failed judgment is left out of the denominator, never scored as a tie or
  a loss; ``errors`` counts them, and ``win_rate_if_errors_lose/win`` bound the damage.
- overall win rate: the mean of the per-repeat win rates; ``std`` is their sample std
  (ddof=1, None for a single repeat, where a spread across repeats does not exist).
- ``se``: alpaca_eval's ``standard_error`` (``predictions.sem()`` in its metrics helpers):
  the standard error of the mean of all per-judgment preferences, pooled over repeats,
  std(ddof=1) / sqrt(n). It treats repeats as independent draws, so it understates the
  uncertainty when one prompt's repeats agree; the prompt bootstrap does not.
- ``ci_low/ci_high``: percentile 95% interval of the overall win rate when PROMPTS are
  resampled with replacement (all repeats of a prompt move together).
- length fields: mean ``model_len``/``baseline_len`` over all rows (failed judgments
  included: the answers exist); ``longer_wins_share`` over decided (non-tie, non-failed)
  pairs of unequal length; ``lc_win_rate`` from ``length_controlled_rate``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from prefwork.pipeline.schemas import JUDGMENTS, SchemaError, validate

P = pl.col("preference")


def check_judgments(judgments: pl.DataFrame, extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """Validate against JUDGMENTS plus win-rate rules: preference in [0, 1], failures explained."""
    df = validate(judgments, JUDGMENTS)
    for col in extra:
        if col not in df.columns:
            raise SchemaError(None, None, col, "missing; this analysis needs it")
    if df.height == 0:
        raise ValueError("judgments table is empty: nothing to summarize")
    bad = (df["preference"].is_nan() | (df["preference"] < 0) | (df["preference"] > 1)).fill_null(False)
    if bad.any():
        raise SchemaError(None, int(bad.arg_true()[0]) + 1, "preference",
                          "must be in [0, 1] (1 = model wins, 0 = baseline wins, 0.5 = tie)")
    silent = df["preference"].is_null() & df["error"].is_null()
    if silent.any():
        raise SchemaError(None, int(silent.arg_true()[0]) + 1, "error",
                          "preference is null but error is not set: a failed judgment must say why")
    return df


def _only(df: pl.DataFrame, col: str) -> str:
    """The single value of ``col``; mixing models or baselines in one summary is a mistake."""
    values = df[col].unique().sort().to_list()
    if len(values) != 1:
        raise ValueError(f"judgments mix several {col} values {values}; filter to one first")
    return values[0]


def sample_std(x: np.ndarray) -> float | None:
    """Sample std (ddof=1); None when fewer than two values (no spread to measure)."""
    return float(np.std(x, ddof=1)) if len(x) >= 2 else None


def per_repeat_table(df: pl.DataFrame) -> pl.DataFrame:
    """One row per repeat: win_rate, wins, losses, ties, errors, n (= successful judgments)."""
    return (df.group_by("repeat").agg(
        win_rate=P.mean(), wins=(P > 0.5).sum(), losses=(P < 0.5).sum(), ties=(P == 0.5).sum(),
        errors=P.is_null().sum(), n=P.count(),
    ).with_columns(pl.col("wins", "losses", "ties", "errors", "n").cast(pl.Int64)).sort("repeat"))


def prompt_cells(df: pl.DataFrame, value: pl.Expr = P) -> tuple[np.ndarray, np.ndarray]:
    """(prompts x repeats) matrices of preference sums and successful-judgment counts."""
    cells = df.group_by("prompt_id", "repeat").agg(s=value.sum(), c=value.count()).with_columns(
        pi=pl.col("prompt_id").rank("dense").cast(pl.Int64) - 1,
        ri=pl.col("repeat").rank("dense").cast(pl.Int64) - 1)
    shape = (int(cells["pi"].max()) + 1, int(cells["ri"].max()) + 1)
    sums, counts = np.zeros(shape), np.zeros(shape)
    idx = (cells["pi"].to_numpy(), cells["ri"].to_numpy())
    np.add.at(sums, idx, cells["s"].to_numpy().astype(float))
    np.add.at(counts, idx, cells["c"].to_numpy().astype(float))
    return sums, counts


def _repeat_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over repeats of per-repeat rates, along the last axis; repeats with no data skipped."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(sums / counts, axis=-1)


def bootstrap_prompts(sums: np.ndarray, counts: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap draws of the mean-over-repeats rate, resampling prompts (rows of the matrices).

    Each draw weights every prompt by how often it was drawn (a multinomial count), so
    all repeats of a prompt move together and per-repeat denominators stay correct.
    """
    n_prompts = sums.shape[0]
    rng = np.random.default_rng(seed)
    probs = np.full(n_prompts, 1.0 / n_prompts)
    block = max(1, min(n_boot, (1 << 23) // max(n_prompts, 1)))  # ~64 MB of weights at a time
    draws = []
    for start in range(0, n_boot, block):  # rows are drawn in sequence: blocks give the same draws
        weights = rng.multinomial(n_prompts, probs, size=min(block, n_boot - start)).astype(float)
        draws.append(_repeat_mean(weights @ sums, weights @ counts))
    return np.concatenate(draws) if draws else np.empty(0)


def percentile_interval(draws: np.ndarray) -> tuple[float | None, float | None]:
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0:
        return None, None
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logistic_loss(beta, X, y, penalty) -> float:
    z = X @ beta
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * beta @ penalty @ beta)


def length_controlled_rate(preference: np.ndarray, len_diff: np.ndarray, *, l2: float = 1e-2) -> float | None:
    """Win probability at zero length difference from a logistic fit (alpaca_eval's LC idea).

    Model: P(model wins) = sigmoid(b + w * z) with z = len_diff / std(len_diff) (scaled, not
    centred, so z = 0 means equal length). Targets are the preferences themselves; a tie's
    0.5 target is the same as a half-weight win plus a half-weight loss. Damped Newton steps;
    an L2 penalty on w only keeps separable data finite while leaving the intercept free, so
    with equal lengths the answer is exactly the raw win rate. If every judgment went one
    way, the intercept's MLE is infinite and its limit (0 or 1) is returned.
    """
    y = np.asarray(preference, dtype=float)
    if len(y) == 0:
        return None
    ybar = float(y.mean())
    if ybar <= 0.0 or ybar >= 1.0:
        return ybar
    scale = float(np.std(len_diff))
    z = np.asarray(len_diff, dtype=float) / scale if scale > 0 else np.zeros_like(y)
    X = np.column_stack([np.ones_like(y), z])
    penalty = np.diag([0.0, l2])
    beta = np.array([math.log(ybar / (1 - ybar)), 0.0])
    for _ in range(100):
        p = _sigmoid(X @ beta)
        grad = X.T @ (p - y) + penalty @ beta
        hess = X.T @ (X * (p * (1 - p))[:, None]) + penalty
        step, t = np.linalg.solve(hess, grad), 1.0
        while t > 1e-6 and _logistic_loss(beta - t * step, X, y, penalty) > _logistic_loss(beta, X, y, penalty):
            t /= 2
        beta = beta - t * step
        if np.max(np.abs(t * step)) < 1e-12:
            break
    return float(_sigmoid(beta[0]))


def _length_stats(df: pl.DataFrame) -> dict:
    """Mean lengths (all rows), share of decided unequal-length pairs the longer answer won, LC rate."""
    ok = df.filter(P.is_not_null())
    diff = pl.col("model_len") - pl.col("baseline_len")
    decided = ok.filter((P != 0.5) & (diff != 0))
    longer_won = decided.select((((diff > 0) & (P > 0.5)) | ((diff < 0) & (P < 0.5))).mean()).item()
    return {
        "mean_model_len": float(df["model_len"].mean()),
        "mean_baseline_len": float(df["baseline_len"].mean()),
        "longer_wins_share": None if decided.height == 0 else float(longer_won),
        "lc_win_rate": length_controlled_rate(ok["preference"].to_numpy(),
                                              ok.select(diff).to_series().to_numpy()),
    }


@dataclass
class WinRateSummary:
    """Win rate of one model against one baseline over k repeats (see the module docstring)."""

    per_repeat: pl.DataFrame
    model: str
    baseline: str
    judge: str
    win_rate: float | None
    std: float | None
    min: float | None
    max: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    n_repeats: int
    n_prompts: int
    n: int
    n_errors: int
    win_rate_if_errors_lose: float
    win_rate_if_errors_win: float
    mean_model_len: float
    mean_baseline_len: float
    longer_wins_share: float | None
    lc_win_rate: float | None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict; ``per_repeat`` becomes a list of row dicts."""
        out = {k: v for k, v in asdict(self).items() if k != "per_repeat"}
        out["per_repeat"] = self.per_repeat.to_dicts()
        return out


def _if_errors_were(df: pl.DataFrame, value: float) -> float:
    """Overall win rate if every failed judgment had gone ``value`` (0: baseline, 1: model)."""
    rates = df.group_by("repeat").agg(P.fill_null(value).mean())["preference"].to_numpy()
    return float(np.mean(rates))


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def summarize(judgments: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> WinRateSummary:
    """Summarize one model's judgments against one baseline; see the module docstring."""
    df = check_judgments(judgments)
    per_repeat = per_repeat_table(df)
    rates = per_repeat["win_rate"].drop_nulls().to_numpy()
    prefs = df["preference"].drop_nulls().to_numpy()
    sums, counts = prompt_cells(df)
    ci = percentile_interval(bootstrap_prompts(sums, counts, n_boot=n_boot, seed=seed)) if n_boot > 0 else (None, None)
    bound = {v: _if_errors_were(df, v) for v in (0.0, 1.0)}
    return WinRateSummary(
        per_repeat=per_repeat, model=_only(df, "model"), baseline=_only(df, "baseline"),
        judge=",".join(df["judge"].unique().sort().to_list()),
        win_rate=_nan_to_none(float(np.mean(rates))) if len(rates) else None, std=sample_std(rates),
        min=float(rates.min()) if len(rates) else None, max=float(rates.max()) if len(rates) else None,
        se=sample_std(prefs) / math.sqrt(len(prefs)) if len(prefs) >= 2 else None,
        ci_low=ci[0], ci_high=ci[1], n_repeats=per_repeat.height, n_prompts=sums.shape[0],
        n=len(prefs), n_errors=df.height - len(prefs),
        win_rate_if_errors_lose=bound[0.0], win_rate_if_errors_win=bound[1.0], **_length_stats(df))
