"""The on-policy iterative DPO loop as the Prefect flow ``iterative_dpo``.

Round r: sample N candidates per training prompt from the policy of round r-1, judge them
with the rule judge, pair the best answer with the worst few, sort the pairs easy-to-hard
into chunks, train with sDPO starting from that policy, then evaluate the new policy
against the SFT policy on held-out prompts (k repeats). Each round is a subflow; each stage
a thin task over a cached function of ``flows.stages``, so a re-run or ``--resume`` redoes
no finished stage.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from prefwork.evaluators.winrate import summarize
from prefwork.flows import progress, stages
from prefwork.flows.loop_config import LoopConfig
from prefwork.flows.resume import cached, value_of
from prefwork.pipeline import engines_factory as engines
from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.run import RunDir
from prefwork.pipeline.sample import SampleConfig
from prefwork.pipeline.schemas import SCORES
from prefwork.pipeline.store import StageCache, read_table

EVAL_SEED_MODEL, EVAL_SEED_BASELINE = 1_000, 2_000


@dataclass
class Context:
    """What every task of one loop run shares (plain data, passed by value to tasks)."""

    cfg: LoopConfig
    run_dir: str
    cache_root: str
    engine: str

    @property
    def cache(self) -> StageCache:
        return StageCache(self.cache_root)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


def _prompts(path: str, limit: int) -> tuple[Path, pl.DataFrame]:
    df = load_prompts(path)
    return Path(path), (df.head(limit) if limit else df)


def _logged(ctx: Context, round_: int, stage: str, fn, *args) -> tuple[str, bool]:
    """Run a cached stage function, log its time and whether the cache served it; (output path, cached)."""
    t0 = time.time()
    path, hit = fn(*args)
    ctx.run.log_metric(round=round_, stage=stage, seconds=round(time.time() - t0, 2), cached=hit, output=str(path))
    return str(path), hit


@task(name="init-policy", cache_policy=NO_CACHE)
def init_policy_task(ctx: Context) -> str:
    if ctx.cfg.policy:  # a folder, .gguf, alias or hub id: converted or downloaded once, then a folder
        from prefwork.pipeline.models import resolve_model
        return str(resolve_model(ctx.cfg.policy, ctx.cache_root))
    from prefwork.train.sft import init_policy_cached
    return cached(*_logged(ctx, 0, "init_policy", init_policy_cached, ctx.cache_root, ctx.cfg.corpus))


@task(name="sample", cache_policy=NO_CACHE)
def sample_task(ctx: Context, round_: int, prompts_path: str, limit: int, model_dir: str, cfg: SampleConfig,
                label: str) -> str:
    path, prompts = _prompts(prompts_path, limit)
    bar = lambda: progress.sampling_bar(f"round {round_}: sample {label} ({ctx.engine})", prompts.height)  # noqa: E731
    return cached(*_logged(ctx, round_, f"sample:{label}", stages.sample_stage, ctx.cache, path, prompts,
                           Path(model_dir), cfg, ctx.engine, lambda d: engines.shared_engine(ctx.engine, d), label,
                           bar))


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(ctx: Context, round_: int, candidates: str) -> str:
    return cached(*_logged(ctx, round_, "judge", stages.judge_stage, ctx.cache, Path(candidates), ctx.cfg.judge))


@task(name="pairs", cache_policy=NO_CACHE)
def pairs_task(ctx: Context, round_: int, candidates: str, scores: str) -> str:
    return cached(*_logged(ctx, round_, "pairs", stages.pairs_stage, ctx.cache, Path(candidates), Path(scores),
                           ctx.cfg.pair))


@task(name="chunks", cache_policy=NO_CACHE)
def chunks_task(ctx: Context, round_: int, pairs: str, model_dir: str) -> str:
    return cached(*_logged(ctx, round_, "chunks", stages.chunks_stage, ctx.cache, Path(pairs), Path(model_dir),
                           ctx.cfg.chunk, ctx.cfg.train.max_length))


@task(name="train", cache_policy=NO_CACHE)
def train_task(ctx: Context, round_: int, chunks: str, model_dir: str) -> str:
    engines.release_engine()  # training needs the memory a held sampling engine has
    cfg = ctx.cfg
    with progress.stage(f"round {round_}: {cfg.schedule} training ({cfg.train.loss}, {cfg.chunk.chunks} chunks)"):
        return cached(*_logged(ctx, round_, "train", stages.train_stage, ctx.cache, Path(chunks), Path(model_dir),
                               cfg.dpo_config(round_), cfg.schedule, cfg.launcher_config()))


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(ctx: Context, round_: int, model_cands: str, baseline_cands: str) -> dict:
    _, prompts = _prompts(ctx.cfg.eval_prompts, ctx.cfg.eval_prompts_limit)
    path, hit = _logged(ctx, round_, "judgments", stages.judge_pairwise_stage, ctx.cache, Path(model_cands),
                        Path(baseline_cands), prompts, ctx.cfg.eval_repeats, ctx.cfg.judge)
    summary = summarize(read_table(path)).to_dict()
    summary.pop("per_repeat", None)
    m_scores, scores_cached = stages.judge_stage(ctx.cache, Path(model_cands), ctx.cfg.judge)
    summary["rule_pass_rate"] = float(read_table(m_scores, SCORES)["score"].mean())  # the judge's mean score
    summary["judge"] = ctx.cfg.judge
    summary["eval_scores"] = str(m_scores)
    summary["judgments"] = str(path)
    return cached(summary, hit and scores_cached)


def _pair_stats(pairs_path: str) -> dict:
    return json.loads((Path(pairs_path).parent / "pair_stats.json").read_text())


def _need_pairs(round_: int, stats: dict, cfg: LoopConfig) -> None:
    """Stop a round that has fewer pairs than sDPO steps with what to change (an empty chunk cannot train)."""
    if stats["pairs"] >= cfg.chunk.chunks:
        return
    raise ValueError(f"round {round_}: {stats['pairs']} preference pairs from {stats['prompts']} prompts, fewer than "
                     f"--chunks {cfg.chunk.chunks} (all candidates tied: {stats['dropped_all_tied']} prompts; margin at "
                     f"most --min-margin {cfg.pair.min_margin}: {stats['dropped_min_margin']}; identical texts: "
                     f"{stats.get('dropped_identical', 0)}); sample more with --n or more prompts, or lower --min-margin")


@flow(name="dpo-round", log_prints=False)
def round_flow(ctx: Context, round_: int, policy: str, baseline_eval: str) -> dict:
    """One on-policy round: sample -> judge -> pairs -> chunks -> sDPO -> evaluate vs SFT."""
    cfg = ctx.cfg
    cands = value_of(sample_task(ctx, round_, cfg.train_prompts, cfg.train_prompts_limit, policy,
                                 cfg.train_sampling(round_), f"round{round_}-train"))
    scores = value_of(judge_task(ctx, round_, cands))
    pairs = value_of(pairs_task(ctx, round_, cands, scores))
    _need_pairs(round_, _pair_stats(pairs), cfg)
    chunks = value_of(chunks_task(ctx, round_, pairs, policy))
    new_policy = value_of(train_task(ctx, round_, chunks, policy))
    model_eval = value_of(sample_task(ctx, round_, cfg.eval_prompts, cfg.eval_prompts_limit, new_policy,
                                      cfg.eval_sampling(EVAL_SEED_MODEL), f"round{round_}"))
    summary = value_of(evaluate_task(ctx, round_, model_eval, baseline_eval))
    stats = _pair_stats(pairs)
    train_pass = float(read_table(scores, SCORES)["score"].mean())
    return {"round": round_, "stage": cfg.schedule if cfg.schedule == "dpo" else "sDPO", "policy": new_policy,
            "pairs": stats["pairs"], "pair_stats": stats, "train_candidates_score": train_pass,
            "artifacts": {"candidates": cands, "scores": scores, "pairs": pairs, "chunks": chunks,
                          "eval_candidates": model_eval}, **summary}


@flow(name="iterative_dpo", log_prints=False)
def iterative_dpo(config: dict, run_dir: str) -> list[dict]:
    """R rounds of on-policy DPO; returns one result row per round (round 0 = the SFT policy)."""
    cfg = LoopConfig.from_dict(config)
    workspace = Path(cfg.workspace)
    ctx = Context(cfg=cfg, run_dir=run_dir, cache_root=str(workspace / ".cache"),
                  engine=engines.resolve_engine(cfg.engine))
    ctx.run.log_metric(stage="start", engine=ctx.engine, rounds=cfg.rounds)
    started = engines.engines_started()
    try:
        rows = _rounds(ctx)
    finally:
        engines.release_engine()
        ctx.run.log_metric(stage="engines", started=engines.engines_started() - started)
    from prefwork.evaluators.report_loop import publish_results
    publish_results(rows, Path(run_dir).name)  # the results table in the Prefect UI, beside the flow run
    return rows


def _rounds(ctx: Context) -> list[dict]:
    cfg = ctx.cfg
    policy = value_of(init_policy_task(ctx))
    lim = cfg.eval_prompts_limit
    baseline_eval = value_of(sample_task(ctx, 0, cfg.eval_prompts, lim, policy, cfg.eval_sampling(EVAL_SEED_BASELINE),
                                         "sft-baseline"))
    sft_eval = value_of(sample_task(ctx, 0, cfg.eval_prompts, lim, policy, cfg.eval_sampling(EVAL_SEED_MODEL), "sft"))
    rows = [{"round": 0, "stage": "start" if cfg.policy else "SFT", "policy": policy, "pairs": None,
             "artifacts": {"eval_candidates": sft_eval}, **value_of(evaluate_task(ctx, 0, sft_eval, baseline_eval))}]
    for r in range(1, cfg.rounds + 1):
        rows.append(round_flow(ctx, r, policy, baseline_eval))
        policy = rows[-1]["policy"]
        ctx.run.log_metric(round=r, stage="round_done", win_rate=rows[-1]["win_rate"], std=rows[-1]["std"])
    return rows
