"""The Prefect flow ``refresh_dataset``: new prompts -> the next version of a preference dataset.

    load-prompts (I/O, retried) -> policy -> sample x shards -> judge x shards -> pairs x shards
      -> assemble (parent's pairs + new, or new only) -> chunks -> publish (I/O, retried)

New prompts are those whose ``prompt_id`` no published version holds. Sampling, judging and
pair building fan out over prompt shards on the flow's task runner (threads by default;
``flows.deploy.task_runner`` builds Dask/Ray runners when installed). Every compute task has
a Prefect cache policy over its inputs' content hashes with results persisted in the
workspace (``flows.resume``), so a re-run of a failed run ends finished tasks ``Cached`` and
produces no sample or judgment twice; the stages underneath are ``flows.stages`` functions
behind our ``StageCache``.
"""
from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import polars as pl
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from prefwork.flows import stages
from prefwork.flows.flow_configs import RefreshConfig
from prefwork.flows.resume import bind, content_policy
from prefwork.pipeline.curriculum import ChunkConfig
from prefwork.pipeline.datasets_store import DatasetStore, load_prompt_source
from prefwork.pipeline.engines_factory import EngineSlot
from prefwork.pipeline.pairs import PairConfig
from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.sample import SampleConfig, derive_seed
from prefwork.pipeline.schemas import CHUNKS, PAIRS, PROMPTS
from prefwork.pipeline.store import StageCache, content_key, frame_hash, read_table, write_table

_SLOTS: dict[str, EngineSlot] = {}
_ENGINE_LOCK = threading.Lock()


class _OneAtATime:
    """An engine whose ``generate`` runs one call at a time in this process.

    The transformers engine seeds torch's global RNG per batch, so two threads sampling at
    once would make each other's candidates irreproducible; shards still fan out across
    processes (Dask/Ray) and over an OpenAI-compatible server.
    """

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name

    def generate(self, prompts, cfg, shard_seed):
        with _ENGINE_LOCK:
            return self.engine.generate(prompts, cfg, shard_seed)

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()


def make_engine(name: str, model_dir: Path):
    """The sampling engine for ``model_dir``, shared by this process's shards.

    It stays loaded for a later run of the same policy in this process (a script or notebook
    calling the flow again skips the engine start; a served deployment runs each flow run in its
    own process); sampling another policy, or with another engine, shuts it down first, so a
    long-lived process holds one engine rather than one per policy it ever sampled.
    """
    from prefwork.pipeline.engines_factory import make_engine as build_engine

    with _ENGINE_LOCK:
        for other in [n for n in _SLOTS if n != name]:
            _SLOTS.pop(other).close()
        slot = _SLOTS.setdefault(name, EngineSlot(lambda d: _OneAtATime(build_engine(name, d, threads=2))))
        return slot.get(model_dir)


def _cache(workspace: str) -> StageCache:
    return StageCache(Path(workspace) / ".cache")


@task(name="load-prompts", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_prompts_task(cfg: dict) -> dict:
    """Read the prompt source, keep prompts no version holds, write them as content-addressed shards."""
    c = RefreshConfig(**cfg)
    prompts = load_prompt_source(c.prompts, split=c.hf_split, prompt_field=c.hf_prompt_field)
    store = DatasetStore(c.workspace, c.dataset)
    held = store.held_prompt_ids()
    new = prompts.filter(~pl.col("prompt_id").is_in(sorted(held)))
    if c.prompts_limit:
        new = new.head(c.prompts_limit)
    shards = []
    for start in range(0, new.height, max(c.shard_size, 1)):
        shard = new.slice(start, c.shard_size)
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
    c = RefreshConfig(**cfg)
    if c.policy:
        return str(Path(c.policy).resolve())
    from prefwork.train.sft import init_policy
    return str(init_policy(Path(c.workspace) / ".cache", c.corpus))


@task(name="sample", cache_policy=content_policy("refresh-sample", paths=("shard", "policy"),
                                                 config=("sample_cfg", "engine")))
def sample_task(workspace: str, shard: str, policy: str, sample_cfg: dict, engine: str) -> str:
    """N candidates per prompt of one shard (the shard's seed derives from its content)."""
    prompts = load_prompts(shard)
    cfg = SampleConfig(**{**sample_cfg, "seed": derive_seed(sample_cfg["seed"], frame_hash(prompts))})
    path, _ = stages.sample_stage(_cache(workspace), Path(shard), prompts, Path(policy), cfg, engine,
                                  lambda model_dir: make_engine(engine, model_dir),
                                  f"policy-{stages.hash_of(policy)[:12]}")
    return str(path)


@task(name="judge", cache_policy=content_policy("refresh-judge", paths=("candidates",)))
def judge_task(workspace: str, candidates: str) -> str:
    """Rule-judge scores of one shard's candidates."""
    return str(stages.judge_stage(_cache(workspace), Path(candidates))[0])


@task(name="pairs", cache_policy=content_policy("refresh-pairs", paths=("candidates", "scores"),
                                                config=("min_margin", "pairs_per_prompt")))
def pairs_task(workspace: str, candidates: str, scores: str, min_margin: float, pairs_per_prompt: int = 1) -> str:
    """Best-vs-worst pairs of one shard (best vs the K worst with ``pairs_per_prompt`` K)."""
    return str(stages.pairs_stage(_cache(workspace), Path(candidates), Path(scores),
                                  PairConfig(min_margin=min_margin, pairs_per_prompt=pairs_per_prompt))[0])


def _assemble(workspace: str, dataset: str, pairs: list[str], mode: str) -> pl.DataFrame:
    new = pl.concat([read_table(p, PAIRS) for p in pairs], how="diagonal_relaxed")
    return DatasetStore(workspace, dataset).compose(new, mode)


@task(name="assemble", cache_policy=content_policy("refresh-assemble", paths=("pairs",),
                                                   config=("dataset", "mode", "parent")))
def assemble_task(workspace: str, dataset: str, pairs: list[str], mode: str, parent: str | None) -> str:
    """The next version's pairs: the parent's + this run's (append) or this run's only (replace)."""
    key = content_key("refresh-assemble", {"pairs": [stages.hash_of(p) for p in pairs]},
                      {"dataset": dataset, "mode": mode, "parent": parent})
    entry, _ = _cache(workspace).run("refresh-assemble", key, lambda work: write_table(
        _assemble(workspace, dataset, pairs, mode), work / "pairs.parquet", PAIRS))
    return str(entry / "pairs.parquet")


@task(name="chunks", cache_policy=content_policy("refresh-chunks", paths=("pairs", "policy"), config=("chunk_cfg",)))
def chunks_task(workspace: str, pairs: str, policy: str, chunk_cfg: dict) -> str:
    """Easy-to-hard chunks over the version's pairs, by the current policy."""
    if read_table(pairs).height == 0:
        return pairs
    return str(stages.chunks_stage(_cache(workspace), Path(pairs), Path(policy), ChunkConfig(**chunk_cfg), 192)[0])


@task(name="publish", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_task(cfg: dict, chunks: str, shards: list[str], policy: str, parent: str | None) -> dict:
    """Publish the version (idempotent: the same content on the same parent is not published twice)."""
    c = RefreshConfig(**cfg)
    table = read_table(chunks)
    if "chunk" in table.columns:
        table = read_table(chunks, CHUNKS)
    ids = pl.concat([pl.read_parquet(s, columns=["prompt_id"]) for s in shards])["prompt_id"].to_list()
    version = DatasetStore(c.workspace, c.dataset).publish(
        table, ids, mode=c.mode, config=cfg, judge="rules", source=c.prompts,
        policy={"path": policy, "sha256": stages.hash_of(policy)}, parent=parent.split(":")[0] if parent else None)
    return {"version": version.name, "path": str(version.path), **version.manifest["rows"]}


@flow(name="refresh_dataset", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def refresh_dataset(config: dict | None = None) -> dict:
    """New prompts -> sample -> judge -> pairs -> chunks -> a new dataset version (see the module doc)."""
    cfg = RefreshConfig(**(config or {}))
    ws = str(Path(cfg.workspace).resolve())
    cfg.workspace = ws
    plain = asdict(cfg)
    sample_t, judge_t, pairs_t, assemble_t, chunks_t = bind(ws, sample_task, judge_task, pairs_task,
                                                             assemble_task, chunks_task)
    info = load_prompts_task(plain)
    if not info["shards"]:
        return {"published": None, **info, "reason": "no new prompts"}
    from prefwork.flows.loop import resolve_engine
    engine = resolve_engine(cfg.engine)
    policy = policy_task(plain)
    sample_cfg = asdict(SampleConfig(n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                     seed=cfg.seed, shard_size=max(cfg.shard_size, 1)))
    cands = sample_t.map(unmapped(ws), info["shards"], unmapped(policy), unmapped(sample_cfg), unmapped(engine))
    scores = judge_t.map(unmapped(ws), cands)
    pairs = pairs_t.map(unmapped(ws), cands, scores, unmapped(cfg.min_margin), unmapped(cfg.pairs_per_prompt))
    version_pairs = assemble_t(ws, cfg.dataset, pairs, cfg.mode, info["parent"])
    chunk_cfg = asdict(ChunkConfig(chunks=cfg.chunks, method=cfg.curriculum, seed=cfg.seed))
    chunks = chunks_t(ws, version_pairs, policy, chunk_cfg)
    published = publish_task(plain, chunks, info["shards"], policy, info["parent"])
    return {"published": published["version"], **info, **published}
