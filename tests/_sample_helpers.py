"""Shared helpers of the sampler tests: prompt tables, a free port, the contract check.

The tiny policy and the real vLLM server are ``tests/conftest.py``'s session fixtures."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def prompts_frame(k: int, chat_every: int = 3) -> pl.DataFrame:
    """``k`` short prompts (every ``chat_every``-th one a JSON chat) in the prompts contract."""
    rows = []
    for i in range(k):
        text = f"Write a slogan for shop number {i}."
        if chat_every and i % chat_every == 2:
            text = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}])
        rows.append({"prompt_id": f"p{i:04d}", "prompt": text, "task": "slogan", "meta": None,
                     "reference": None, "split": None})
    return pl.DataFrame(rows, schema={c: pl.String for c in rows[0]})


def write_prompts(path: Path, frame: pl.DataFrame) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in frame.iter_rows(named=True)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_contract(df: pl.DataFrame, prompts: pl.DataFrame, n: int, max_tokens: int) -> None:
    """The candidates contract plus what sampling promises: n rows per prompt, ids 0..n-1."""
    from prefwork.pipeline.schemas import CANDIDATES, validate

    validate(df, CANDIDATES)
    assert df.height == prompts.height * n
    assert set(df["prompt_id"]) == set(prompts["prompt_id"])
    for _, g in df.group_by("prompt_id"):
        assert sorted(g["candidate_id"]) == list(range(n))
    assert set(df["finish_reason"]) <= {"stop", "length"}
    assert df["num_tokens"].min() >= 0 and df["num_tokens"].max() <= max_tokens
    assert (df.filter(pl.col("finish_reason") == "length")["num_tokens"] == max_tokens).all()


class Counting:
    """Wraps an engine: counts generate calls per shard seed, optionally dies after ``die_after`` calls."""

    def __init__(self, inner, die_after: int | None = None):
        self.inner, self.name, self.die_after, self.calls = inner, inner.name, die_after, []

    def generate(self, prompts, cfg, shard_seed):
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls.append(shard_seed)
        return self.inner.generate(prompts, cfg, shard_seed)
