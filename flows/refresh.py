"""The Prefect flow ``refresh_dataset``: new prompts -> the next version of a preference dataset.

    load-prompts (I/O, retried) -> policy -> sample x shards -> judge x shards -> pairs x shards
      -> assemble (parent's pairs + new, or new only) -> chunks -> publish (I/O, retried)

New prompts are those whose ``prompt_id`` no published version holds. Sampling, judging and
pair building fan out over prompt shards on the flow's task runner (threads by default;
``flows.deploy.task_runner`` builds Dask/Ray runners when installed). Every compute task is a
``flows.stages`` function behind the workspace's content-keyed ``StageCache`` (``flows.resume``),
so a re-run of a failed run ends finished tasks ``Cached`` and produces no sample or judgment twice.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from prefwork.flows import stages
from prefwork.flows.flow_configs import RefreshConfig
from prefwork.flows.loop_config import MAX_LENGTH
from prefwork.flows.options import option_values
from prefwork.flows.resume import cached, value_of
from prefwork.pipeline import engines_factory as engines
from prefwork.pipeline.curriculum import ChunkConfig
from prefwork.pipeline.datasets_store import DatasetStore, load_prompt_source
from prefwork.pipeline.pairs import PairConfig
from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.sample import SampleConfig, derive_seed
from prefwork.pipeline.schemas import CHUNKS, PAIRS, PROMPTS
from prefwork.pipeline.store import StageCache, content_key, frame_hash, hash_of, read_table, write_table

def _cache(workspace: str) -> StageCache:
    return StageCache(Path(workspace) / ".cache")


@task(name="load-prompts", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_prompts_task(cfg: dict) -> dict:
    """Read the prompt source, keep prompts no version holds, write them as content-addressed shards."""
    c = RefreshConfig.from_dict(cfg)
    prompts = load_prompt_source(c.prompts, split=c.hf_split, prompt_field=c.hf_prompt_field)
    store = DatasetStore(c.workspace, c.dataset)
    held = store.held_prompt_ids()
    new = prompts.filter(~pl.col("prompt_id").is_in(sorted(held)))
    if c.prompts_limit:
        new = new.head(c.prompts_limit)
    shards = []
    for start in range(0, new.height, c.sample.shard_size):
        shard = new.slice(start, c.sample.shard_size)
        path = Path(c.workspace) / ".cache" / "refresh-prompts" / f"{frame_hash(shard)[:24]}.parquet"
        if not path.exists():
            write_table(shard, path, PROMPTS)
        shards.append(str(path.resolve()))
    parent = store.latest()
    return {"source_prompts": prompts.height, "held_prompts": len(held), "new_prompts": new.height,
            "shards": shards, "parent": f"{parent.name}:{parent.manifest['content_hash']}" if parent else None}


@task(name="policy", cache_policy=NO_CACHE)
def policy_task(cfg: dict) -> str:
    """The current policy: the given directory, or the workspace's default tiny SFT policy."""
    c = RefreshConfig.from_dict(cfg)
    if c.policy:
        return str(Path(c.policy).resolve())
    from prefwork.train.sft import init_policy
    return str(init_policy(Path(c.workspace) / ".cache", c.corpus))


@task(name="sample", cache_policy=NO_CACHE)
def sample_task(workspace: str, shard: str, policy: str, sample_cfg: SampleConfig, engine: str) -> str:
    """N candidates per prompt of one shard (the shard's seed derives from its content)."""
    prompts = load_prompts(shard)
    cfg = replace(sample_cfg, seed=derive_seed(sample_cfg.seed, frame_hash(prompts)))
    path, hit = stages.sample_stage(_cache(workspace), Path(shard), prompts, Path(policy), cfg, engine,
                                    lambda model_dir: engines.shared_engine(engine, model_dir),
                                    f"policy-{hash_of(policy)[:12]}")
    return cached(str(path), hit)


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(workspace: str, candidates: str) -> str:
    """Rule-judge scores of one shard's candidates."""
    path, hit = stages.judge_stage(_cache(workspace), Path(candidates))
    return cached(str(path), hit)


@task(name="pairs", cache_policy=NO_CACHE)
def pairs_task(workspace: str, candidates: str, scores: str, pair_cfg: PairConfig) -> str:
    """Best-vs-worst pairs of one shard (best vs the K worst with ``pairs_per_prompt`` K)."""
    path, hit = stages.pairs_stage(_cache(workspace), Path(candidates), Path(scores), pair_cfg)
    return cached(str(path), hit)


def _assemble(workspace: str, dataset: str, pairs: list[str], mode: str) -> pl.DataFrame:
    new = pl.concat([read_table(p, PAIRS) for p in pairs], how="diagonal_relaxed")
    return DatasetStore(workspace, dataset).compose(new, mode)


@task(name="assemble", cache_policy=NO_CACHE)
def assemble_task(workspace: str, dataset: str, pairs: list[str], mode: str, parent: str | None) -> str:
    """The next version's pairs: the parent's + this run's (append) or this run's only (replace)."""
    key = content_key("refresh-assemble", {"pairs": [hash_of(p) for p in pairs]},
                      {"dataset": dataset, "mode": mode, "parent": parent})
    entry, hit = _cache(workspace).run("refresh-assemble", key, lambda work: write_table(
        _assemble(workspace, dataset, pairs, mode), work / "pairs.parquet", PAIRS))
    return cached(str(entry / "pairs.parquet"), hit)


@task(name="chunks", cache_policy=NO_CACHE)
def chunks_task(workspace: str, pairs: str, policy: str, chunk_cfg: ChunkConfig) -> str:
    """Easy-to-hard chunks over the version's pairs, by the current policy."""
    if read_table(pairs).height == 0:
        return pairs
    path, hit = stages.chunks_stage(_cache(workspace), Path(pairs), Path(policy), chunk_cfg, MAX_LENGTH)
    return cached(str(path), hit)


@task(name="publish", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_task(cfg: dict, chunks: str, shards: list[str], policy: str, parent: str | None) -> dict:
    """Publish the version (idempotent: the same content on the same parent is not published twice)."""
    c = RefreshConfig.from_dict(cfg)
    table = read_table(chunks)
    if "chunk" in table.columns:
        table = read_table(chunks, CHUNKS)
    ids = pl.concat([pl.read_parquet(s, columns=["prompt_id"]) for s in shards])["prompt_id"].to_list()
    version = DatasetStore(c.workspace, c.dataset).publish(
        table, ids, mode=c.mode, config=option_values(c), judge="rules", source=c.prompts,
        policy={"path": policy, "sha256": hash_of(policy)}, parent=parent.split(":")[0] if parent else None)
    return {"version": version.name, "path": str(version.path), **version.manifest["rows"]}


@flow(name="refresh_dataset", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def refresh_dataset(config: dict | None = None) -> dict:
    """New prompts -> sample -> judge -> pairs -> chunks -> a new dataset version (see the module doc)."""
    cfg = RefreshConfig.from_dict(config or {})
    ws = str(Path(cfg.workspace).resolve())
    cfg.workspace = ws
    plain = cfg.to_dict()
    info = load_prompts_task(plain)
    if not info["shards"]:
        return {"published": None, **info, "reason": "no new prompts"}
    engine = engines.resolve_engine(cfg.engine)
    policy = policy_task(plain)
    cands = sample_task.map(unmapped(ws), info["shards"], unmapped(policy), unmapped(cfg.sample), unmapped(engine))
    scores = judge_task.map(unmapped(ws), cands)
    pairs = pairs_task.map(unmapped(ws), cands, scores, unmapped(cfg.pair))
    version_pairs = value_of(assemble_task(ws, cfg.dataset, pairs, cfg.mode, info["parent"]))
    chunks = value_of(chunks_task(ws, version_pairs, policy, cfg.chunk))
    published = publish_task(plain, chunks, info["shards"], policy, info["parent"])
    return {"published": published["version"], **info, **published}
