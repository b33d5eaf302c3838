"""Cached stages: each is one call of a plain function behind the workspace content cache.

A stage's key is its name + its inputs' content hashes + its config (DESIGN.md), so a
re-run, or ``prefwork loop --resume``, returns finished outputs without recomputing them.
Each function returns the output path and whether it came from the cache; Prefect tasks
in ``flows.loop`` are thin wrappers around these.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import polars as pl

from prefwork.pipeline.curriculum import ChunkConfig
from prefwork.pipeline.pairs import PairConfig, build_pairs
from prefwork.pipeline.sample import SampleConfig, sample
from prefwork.pipeline.schemas import CANDIDATES, CHUNKS, PAIRS, SCORES
from prefwork.pipeline.store import StageCache, content_key, hash_of, read_table, write_json, write_table
from prefwork.train.configs import DPOConfig, LauncherConfig


def sample_stage(cache: StageCache, prompts_path: Path, prompts: pl.DataFrame, model_dir: Path, cfg: SampleConfig,
                 engine_name: str, make_engine, model_name: str, progress=None) -> tuple[Path, bool]:
    """Candidates of ``model_dir`` for ``prompts`` (cached; unfinished shards resume).

    ``progress`` is an optional factory returning a ``(prompts, tokens)`` callback.
    """
    key = content_key("sample", {"prompts": hash_of(prompts_path), "model": hash_of(model_dir)},
                      {**asdict(cfg), "engine": engine_name, "rows": prompts.height})

    def produce(work: Path) -> None:
        bar = progress() if progress else None  # created only when sampling really runs
        sample(prompts, make_engine(model_dir), work / "candidates.parquet", cfg, model_name, progress=bar,
               source=prompts_path)  # a too-long prompt's error names this file and the row
        shutil.rmtree(work / "candidates.parquet.shards", ignore_errors=True)

    entry, cached = cache.run("sample", key, produce)
    return entry / "candidates.parquet", cached


def judge_stage(cache: StageCache, candidates: Path, judge: str = "rules") -> tuple[Path, bool]:
    """Scores of a candidates file by a local judge of the registry (``rules``, ``ifeval``; cached)."""
    from prefwork.evaluators.judges import make_judge

    key = content_key("judge", {"candidates": hash_of(candidates)}, {"judge": judge})
    entry, cached = cache.run("judge", key, lambda work: write_table(
        make_judge(judge).score(read_table(candidates, CANDIDATES)), work / "scores.parquet", SCORES))
    return entry / "scores.parquet", cached


def pairs_stage(cache: StageCache, candidates: Path, scores: Path, cfg: PairConfig) -> tuple[Path, bool]:
    """Best-vs-worst pairs (cached); ``pair_stats.json`` sits beside them."""
    key = content_key("pairs", {"candidates": hash_of(candidates), "scores": hash_of(scores)}, asdict(cfg))

    def produce(work: Path) -> None:
        pairs, stats = build_pairs(read_table(candidates, CANDIDATES), read_table(scores, SCORES), cfg)
        write_table(pairs, work / "pairs.parquet", PAIRS)
        write_json(work / "pair_stats.json", stats.to_dict())

    entry, cached = cache.run("pairs", key, produce)
    return entry / "pairs.parquet", cached


def chunks_stage(cache: StageCache, pairs_path: Path, model_dir: Path, cfg: ChunkConfig,
                 max_length: int) -> tuple[Path, bool]:
    """Easy-to-hard chunks; the default difficulty needs the starting model's log-probs (cached)."""
    key = content_key("chunks", {"pairs": hash_of(pairs_path), "model": hash_of(model_dir)},
                      {**asdict(cfg), "max_length": max_length})

    def produce(work: Path) -> None:
        from prefwork.train.difficulty import chunk_pairs

        chunks = chunk_pairs(read_table(pairs_path, PAIRS), model_dir, cfg, max_length=max_length)
        write_table(chunks, work / "chunks.parquet", CHUNKS)

    entry, cached = cache.run("chunks", key, produce)
    return entry / "chunks.parquet", cached


def train_stage(cache: StageCache, chunks_path: Path, model_dir: Path, dpo_cfg: DPOConfig, schedule: str,
                launcher: LauncherConfig | None = None) -> tuple[Path, bool]:
    """sDPO (or one-shot DPO) over the chunks through the training launcher (``train.launch``).

    ``dpo_cfg`` travels typed into the ``TrainSpec`` the launcher takes (serialised once, for a
    launched process). ``launcher`` picks where it runs (in-process, ``accelerate launch``, or a
    command template for a GPU host); it is not part of the cache key, since it does not change
    what is computed. Checkpoints in the stable work dir make a killed run resumable.
    """
    from prefwork.train.launch import launch_training
    from prefwork.train.launch_config import TrainSpec

    key = content_key("train", {"chunks": hash_of(chunks_path), "model": hash_of(model_dir)},
                      {**asdict(dpo_cfg), "schedule": schedule})

    def produce(work: Path) -> None:
        spec = TrainSpec(kind="dpo", model=str(model_dir), data=str(chunks_path), schedule=schedule, name="loop-train",
                         dpo=dpo_cfg, launcher=launcher or LauncherConfig())
        result = launch_training(spec, run_dir=work / "run", echo=None)
        shutil.copytree(result.final_model, work / "model", ignore=shutil.ignore_patterns("checkpoint-*"))
        for ckpt in (work / "run").rglob("checkpoint-*"):  # the finished run needs no resume points
            shutil.rmtree(ckpt, ignore_errors=True)

    entry, cached = cache.run("train", key, produce)
    return entry / "model", cached


def judge_pairwise_stage(cache: StageCache, model_cands: Path, baseline_cands: Path, prompts: pl.DataFrame,
                         repeats: int, judge: str = "rules") -> tuple[Path, bool]:
    """Model-vs-baseline judgments by a local judge (higher score wins) for every (prompt, repeat) of ``prompts`` x ``repeats``
    (cached): ``evaluators.evaluate.evaluate_pair``, so a prompt a side did not answer is a counted failure."""
    from prefwork.evaluators.evaluate import evaluate_pair
    from prefwork.evaluators.judges import make_judge
    from prefwork.pipeline.schemas import JUDGMENTS
    from prefwork.pipeline.store import frame_hash

    key = content_key("judgments", {"model": hash_of(model_cands), "baseline": hash_of(baseline_cands),
                                    "prompts": frame_hash(prompts, ["prompt_id"])}, {"judge": judge, "repeats": repeats})

    def produce(work: Path) -> None:
        j = evaluate_pair(read_table(model_cands, CANDIDATES), read_table(baseline_cands, CANDIDATES),
                          make_judge(judge), prompts=prompts, repeats=repeats)
        write_table(j, work / "judgments.parquet", JUDGMENTS)

    entry, cached = cache.run("judgments", key, produce)
    return entry / "judgments.parquet", cached
