"""Sampler unit tests with the transformers engine: contract, seeds, stop strings, resume, bad input."""
from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from _sample_helpers import Counting, ROOT, check_contract, prompts_frame, write_prompts
from prefwork.pipeline.engines_factory import EngineSlot, make_engine, resolve_engine
from prefwork.pipeline.sample import SampleConfig, sample
from prefwork.pipeline.schemas import SchemaError


@pytest.fixture(scope="module")
def policy(tiny_random_policy):
    return tiny_random_policy  # tests/conftest.py: built once per session


@pytest.fixture(scope="module")
def engine(policy):
    return make_engine("transformers", policy, threads=1)


CFG = SampleConfig(n=3, max_tokens=12, shard_size=2, seed=7)


def test_contract_and_distinct(engine, tmp_path):
    prompts = prompts_frame(5)
    df = pl.read_parquet(sample(prompts, engine, tmp_path / "c.parquet", CFG, "tiny"))
    check_contract(df, prompts, CFG.n, CFG.max_tokens)
    for _, g in df.group_by("prompt_id"):
        assert g["text"].n_unique() == CFG.n and g["seed"].n_unique() == CFG.n
    assert (df["model"] == "tiny").all() and (df["task"] == "slogan").all()


def test_seeds_reproduce(engine, tmp_path):
    prompts = prompts_frame(4)
    a = pl.read_parquet(sample(prompts, engine, tmp_path / "a.parquet", CFG, "tiny"))
    b = pl.read_parquet(sample(prompts, engine, tmp_path / "b.parquet", CFG, "tiny"))
    c = pl.read_parquet(sample(prompts, engine, tmp_path / "c.parquet", SampleConfig(**{**CFG.__dict__, "seed": 8}), "tiny"))
    assert a.equals(b)
    assert not a["text"].equals(c["text"])


def test_stop_strings_end_text(engine, tmp_path):
    prompts = prompts_frame(4)
    free = pl.read_parquet(sample(prompts, engine, tmp_path / "free.parquet", CFG, "tiny"))
    stop = " "  # a random policy emits spaces in nearly every candidate
    assert free["text"].str.contains(stop, literal=True).sum() > 0
    cfg = SampleConfig(**{**CFG.__dict__, "stop": [stop]})
    df = pl.read_parquet(sample(prompts, engine, tmp_path / "stop.parquet", cfg, "tiny"))
    check_contract(df, prompts, cfg.n, cfg.max_tokens)
    assert not df["text"].str.contains(stop, literal=True).any()
    assert (df["finish_reason"] == "stop").sum() > 0


def test_resume_skips_finished_shards(engine, tmp_path):
    prompts, out = prompts_frame(7), tmp_path / "r.parquet"
    dying = Counting(engine, die_after=2)
    with pytest.raises(KeyboardInterrupt):
        sample(prompts, dying, out, CFG, "tiny")
    shard_files = sorted(tmp_path.glob("r.parquet.shards/*/shard-*.parquet"))
    assert len(shard_files) == 2 and not out.exists()
    stamps = {p: p.stat().st_mtime_ns for p in shard_files}
    seen = []

    class Bar:
        def __call__(self, n, t): seen.append(("new", n))
        def resumed(self, n, t): seen.append(("resumed", n))

    again = Counting(engine)
    sample(prompts, again, out, CFG, "tiny", progress=Bar())
    assert len(again.calls) == 2 and not set(again.calls) & set(dying.calls)  # 4 shards in all, none twice
    assert {p: p.stat().st_mtime_ns for p in shard_files} == stamps
    assert seen == [("resumed", 2), ("resumed", 2), ("new", 2), ("new", 1)]
    clean = pl.read_parquet(sample(prompts, engine, tmp_path / "clean.parquet", CFG, "tiny"))
    assert pl.read_parquet(out).equals(clean)


def test_long_prompt_skip_or_error(engine, tmp_path):
    prompts = prompts_frame(3, chat_every=0)
    prompts = prompts.with_columns(pl.when(pl.col("prompt_id") == "p0001").then(pl.lit("word " * 400))
                                   .otherwise(pl.col("prompt")).alias("prompt"))
    with pytest.raises(SchemaError, match="on_long_prompt|on-long-prompt"):
        sample(prompts, engine, tmp_path / "e.parquet", CFG, "tiny")
    cfg = SampleConfig(**{**CFG.__dict__, "on_long_prompt": "skip"})
    out = sample(prompts, engine, tmp_path / "s.parquet", cfg, "tiny")
    df = pl.read_parquet(out)
    assert set(df["prompt_id"]) == {"p0000", "p0002"}
    skipped = __import__("json").loads(out.with_suffix(".skipped.json").read_text())
    assert [s["prompt_id"] for s in skipped] == ["p0001"] and skipped[0]["reason"]


def test_engine_slot_reuses_the_engine_of_the_same_model_and_closes_on_change(policy, tmp_path):
    """Consecutive stages on one policy share an engine; another model replaces (closes) it."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(policy, other)
    slot = EngineSlot(lambda d: make_engine("transformers", d, threads=1))
    first = slot.get(policy)
    assert slot.get(str(policy)) is first and slot.built == 1
    second = slot.get(other)
    assert second is not first and slot.built == 2 and slot.key == str(other.resolve())
    slot.close()
    assert slot.engine is None and slot.get(other) is not second and slot.built == 3


def test_bad_engine_and_model_dir(tmp_path):
    with pytest.raises(ValueError, match="valid: auto, vllm, transformers, openai"):
        make_engine("tgi", tmp_path)
    with pytest.raises(SchemaError, match="does not exist"):
        make_engine("transformers", tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown engine option"):
        make_engine("transformers", tmp_path, temprature=1)
    assert resolve_engine("auto") in ("vllm", "transformers")


def test_auto_means_vllm_only_on_a_gpu_with_vllm_installed(monkeypatch):
    """One meaning of ``auto`` (AUTO_HELP): on CPU each vLLM start costs 40-60 s, so vLLM is opt-in there."""
    import importlib.util

    import torch

    from prefwork.pipeline.engines_factory import AUTO_HELP, ENGINE_HELP

    real_find = importlib.util.find_spec
    for gpu, vllm, expected in ((True, True, "vllm"), (False, True, "transformers"), (True, False, "transformers")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, vllm=vllm: (real_find(name, *a) if vllm else None) if name == "vllm"
                            else real_find(name, *a))
        assert resolve_engine("auto") == expected, (gpu, vllm)
    assert resolve_engine("vllm") == "vllm" and AUTO_HELP in ENGINE_HELP


def test_shared_engine_one_per_process(policy, tmp_path, monkeypatch):
    """Every flow's shards and stages on one policy share one engine, kept for a later run of that
    policy; another policy or engine shuts it down first, so a long-lived process does not pile up engines."""
    import shutil
    from pathlib import Path

    from prefwork.pipeline import engines_factory as engines

    monkeypatch.setattr(engines, "_SLOTS", {})
    closed = []
    monkeypatch.setattr(engines._OneAtATime, "close", lambda self: closed.append(self))
    other = tmp_path / "other"
    shutil.copytree(policy, other)
    first = engines.shared_engine("transformers", policy)
    assert engines.shared_engine("auto", Path(str(policy))) is first and closed == []
    second = engines.shared_engine("transformers", other)
    assert second is not first and closed == [first] and engines.engines_started() == 2
    engines.release_engine()
    assert closed == [first, second] and engines.shared_engine("transformers", other) is not second
    engines.release_engine()


@pytest.mark.slow
def test_cli_transformers_and_missing_model(policy, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", prompts_frame(4))
    base = [sys.executable, "-m", "prefwork.flows.cli", "sample", "--prompts", str(prompts), "--n", "2", "--max-tokens", "8"]
    bad = subprocess.run(base + ["--engine", "transformers", "--model", str(tmp_path / "nope"),
                                 "--out", str(tmp_path / "x.parquet")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run(base + ["--engine", "transformers", "--model", str(policy), "--out", str(tmp_path / "c.parquet")],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    check_contract(pl.read_parquet(tmp_path / "c.parquet"), prompts_frame(4), 2, 8)
