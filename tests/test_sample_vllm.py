"""Integration tests with a REAL vLLM offline engine (CPU build, a tiny random policy).

One engine per test session (loading takes 30-100 s here); the worker processes vLLM
spawns work under pytest, whose ``__main__`` is guarded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from _sample_helpers import Counting, check_contract, prompts_frame
from prefwork.pipeline.sample import SampleConfig, sample

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

CFG = SampleConfig(n=4, max_tokens=16, shard_size=3, seed=11)


@pytest.fixture(scope="session")
def vllm_engine(tiny_random_policy):
    from prefwork.pipeline.engines_factory import make_engine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = make_engine("vllm", tiny_random_policy, dtype="float32", max_model_len=256)
    yield engine
    engine.close()  # stop the worker processes now, not at exit


def test_n_distinct_candidates_and_contract(vllm_engine, tmp_path):
    prompts = prompts_frame(7)  # plain and chat prompts
    df = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "c.parquet", CFG, "tiny"))
    check_contract(df, prompts, CFG.n, CFG.max_tokens)
    for _, g in df.group_by("prompt_id"):
        assert g["text"].n_unique() == CFG.n, g["text"].to_list()
    assert df["seed"].n_unique() == df.height


def test_seeds_reproduce(vllm_engine, tmp_path):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from prefwork.pipeline.chat import render_prompt

    prompts = prompts_frame(5)
    a = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "a.parquet", CFG, "tiny"))
    b = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "b.parquet", CFG, "tiny"))
    assert a.equals(b)
    other = SampleConfig(**{**CFG.__dict__, "seed": 12})
    c = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "c.parquet", other, "tiny"))
    assert not a["text"].equals(c["text"])
    row = a.filter(pl.col("prompt_id") == "p0002", pl.col("candidate_id") == 3).row(0, named=True)  # a chat prompt
    tok = vllm_engine.tokenizer
    ids = tok(render_prompt(tok, row["prompt"]), add_special_tokens=False)["input_ids"]
    one = vllm_engine.llm.generate([TokensPrompt(prompt_token_ids=ids)],
                                   SamplingParams(n=1, seed=row["seed"], max_tokens=CFG.max_tokens), use_tqdm=False)
    assert one[0].outputs[0].text.strip() == row["text"]  # the recorded seed alone reproduces the row


def test_stop_sequences_end_text(vllm_engine, tmp_path):
    prompts = prompts_frame(6)
    free = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "free.parquet", CFG, "tiny"))
    words = [w for t in free["text"] for w in t.split() if len(w) >= 2]
    stop = max(set(words), key=words.count)[:2]  # a substring seen in the sampled output
    cfg = SampleConfig(**{**CFG.__dict__, "stop": [stop]})
    df = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "stop.parquet", cfg, "tiny"))
    check_contract(df, prompts, cfg.n, cfg.max_tokens)
    assert not df["text"].str.contains(stop, literal=True).any()
    stopped = df.filter(pl.col("finish_reason") == "stop")
    assert stopped.height > 0 and (stopped["num_tokens"] < cfg.max_tokens).any()
    # candidates the stop string cut are a prefix of the free-running candidate with the same seed
    joined = stopped.join(free, on=["prompt_id", "candidate_id"], suffix="_free")
    assert all(f.startswith(t) for t, f in zip(joined["text"], joined["text_free"]))


def test_resume_after_kill_no_shard_twice(vllm_engine, tmp_path):
    prompts, out = prompts_frame(10), tmp_path / "r.parquet"
    dying = Counting(vllm_engine, die_after=2)
    with pytest.raises(KeyboardInterrupt):
        sample(prompts, dying, out, CFG, "tiny")
    shards = sorted(tmp_path.glob("r.parquet.shards/*/shard-*.parquet"))
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards}
    assert len(shards) == 2
    again = Counting(vllm_engine)
    sample(prompts, again, out, CFG, "tiny")
    assert len(again.calls) == 2 and not set(again.calls) & set(dying.calls)  # 4 shards, each sampled once
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards} == stamps
    clean = pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "clean.parquet", CFG, "tiny"))
    assert pl.read_parquet(out).equals(clean)


def test_streamed_shards_match_per_shard_calls_and_a_kill_aborts_the_queue(vllm_engine, tmp_path):
    """The sampler streams shards through one engine (the next shard queued while one finishes):
    the rows equal shard-by-shard ``generate`` calls, a kill leaves no request queued in vLLM,
    and the resumed run samples only the shards not yet written."""
    prompts, out = prompts_frame(10), tmp_path / "s.parquet"
    seen = []

    def die_after_two(n_prompts, n_tokens):
        seen.append(n_prompts)
        if len(seen) == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        sample(prompts, vllm_engine, out, CFG, "tiny", progress=die_after_two)
    assert not vllm_engine.llm.llm_engine.has_unfinished_requests()  # shard 3's queued requests were aborted
    assert len(list(tmp_path.glob("s.parquet.shards/*/shard-*.parquet"))) == 2
    calls = []
    resumed = sample(prompts, vllm_engine, out, CFG, "tiny", progress=lambda n, t: calls.append(n))
    assert calls == [3, 3, 3, 1]
    per_shard = sample(prompts, Counting(vllm_engine), tmp_path / "one-by-one.parquet", CFG, "tiny")
    assert pl.read_parquet(resumed).equals(pl.read_parquet(per_shard))


def test_long_prompt_skipped_with_reason(vllm_engine, tmp_path):
    from prefwork.pipeline.schemas import SchemaError

    prompts = prompts_frame(3, chat_every=0).with_columns(
        pl.when(pl.col("prompt_id") == "p0000").then(pl.lit("word " * 300)).otherwise(pl.col("prompt")).alias("prompt"))
    with pytest.raises(SchemaError, match="context window"):
        sample(prompts, vllm_engine, tmp_path / "e.parquet", CFG, "tiny")
    out = sample(prompts, vllm_engine, tmp_path / "s.parquet", SampleConfig(**{**CFG.__dict__, "on_long_prompt": "skip"}), "tiny")
    assert set(pl.read_parquet(out)["prompt_id"]) == {"p0001", "p0002"}
    skipped = json.loads(out.with_suffix(".skipped.json").read_text())
    assert skipped[0]["prompt_id"] == "p0000" and "context window" in skipped[0]["reason"]


def test_large_seeded_shard(vllm_engine, tmp_path):
    """Many seeded requests in one call: on CPU, vLLM 0.32 crashed when chunked prefill split a
    seeded prompt ("CPU Generator does not use offset"); VLLMEngine turns chunked prefill off."""
    prompts = prompts_frame(160)
    cfg = SampleConfig(n=4, max_tokens=4, shard_size=160, seed=3)
    check_contract(pl.read_parquet(sample(prompts, vllm_engine, tmp_path / "big.parquet", cfg, "tiny")),
                   prompts, cfg.n, cfg.max_tokens)


def test_engine_slot_closes_a_real_engine_and_its_processes(tiny_random_policy, tmp_path):
    """The loop's slot: the same model reuses the engine; close() stops vLLM's engine-core
    process (which holds the KV cache) before the loop trains, instead of at garbage collection."""
    import psutil

    from prefwork.pipeline.engines_factory import EngineSlot, make_engine

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    slot = EngineSlot(lambda d: make_engine("vllm", d, dtype="float32", max_model_len=256))
    engine = slot.get(tiny_random_policy)
    assert slot.get(tiny_random_policy) is engine and slot.built == 1
    out = sample(prompts_frame(2), engine, tmp_path / "c.parquet", SampleConfig(n=2, max_tokens=8, seed=3), "tiny")
    assert pl.read_parquet(out).height == 4
    started = [p for p in me.children(recursive=True) if p.pid not in before]
    assert started, "vLLM started no process of its own"
    slot.close()
    gone, alive = psutil.wait_procs(started, timeout=60)
    assert not alive, [p.pid for p in alive]
    assert engine.llm is None and slot.engine is None


def test_throughput_bench_smoke(tmp_path):
    """bench/sample_throughput.py --smoke: its own engine on the tiny policy, every variant measured, the
    stage projection printed (speed is the bench's figure, not a test's: this box is shared)."""
    out = tmp_path / "bench.json"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "bench" / "sample_throughput.py"), "--smoke", "--json", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "b/a =" in proc.stdout and "new tokens/s" in proc.stdout and "faster: steady state" in proc.stdout
    result = json.loads(out.read_text())
    assert all(result["results"][k]["tokens_per_s"] > 0 for k in "abc") and result["startup_s"]["vllm"] > 0
