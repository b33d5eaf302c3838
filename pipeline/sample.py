"""On-policy sampling: N candidates per prompt, in resumable shards, through a pluggable engine.

``sample`` cuts the prompts into shards of ``shard_size``; each finished shard is written
atomically to ``<out>.shards/`` before the next starts, so a killed run restarted with the
same arguments skips finished shards and ends with the same final file. Engines share one
interface (``Engine.generate``); the transformers engine is the no-install fallback and the
vLLM and OpenAI-compatible engines live beside it (``pipeline.engines``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from prefwork.pipeline.checks import check_fields
from prefwork.pipeline.schemas import CANDIDATES, PROMPTS, SchemaError, validate
from prefwork.pipeline.store import content_key, frame_hash, write_json, write_table


#: What ``on_long_prompt`` accepts (every engine, every command that samples).
LONG_PROMPT_CHOICES = ("error", "skip")


@dataclass
class SampleConfig:
    """How candidates are sampled (the same fields for every engine)."""

    n: int = field(default=8, metadata={"help": "candidates per prompt", "min": 1})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (0 = greedy)", "min": 0.0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass", "above": 0.0, "max": 1.0})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per candidate", "min": 1})
    seed: int = field(default=0, metadata={"help": "base seed; each shard and candidate derives its own"})
    stop: list[str] = field(default_factory=list, metadata={"help": "stop strings (cut, finish_reason=stop)"})
    shard_size: int = field(default=128, metadata={"help": "prompts per resumable shard", "min": 1})
    on_long_prompt: str = field(default="error", metadata={
        "help": "a prompt longer than the context window: 'error' stops with its file and row, 'skip' "
                "records it as skipped (<out>.skipped.json) and goes on", "choices": LONG_PROMPT_CHOICES})

    def __post_init__(self):
        check_fields(self)  # every engine, every caller: bad values never reach an engine


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (eos or stop string) or "length"
    num_tokens: int
    seed: int


class Skipped(list):
    """An engine's answer for a prompt it did not sample: no completions, and why.

    It is an empty list, so code that only counts completions keeps working; ``sample``
    records ``reason`` in ``<out>.skipped.json`` (e.g. a prompt longer than the context).
    """

    def __init__(self, reason: str = ""):
        super().__init__()
        self.reason = reason


#: What every too-long-prompt error suggests: the option ``sample``, ``winrate`` and ``loop`` all offer.
LONG_PROMPT_HINT = "skip such prompts with --on-long-prompt skip"


class PromptTooLong(SchemaError):
    """An engine's refusal of a prompt longer than its context window (``on_long_prompt='error'``).

    Engines know only the prompt's text; ``sample`` turns this into a ``SchemaError`` that names
    the prompts file, the row and the prompt_id, with ``LONG_PROMPT_HINT``.
    """

    def __init__(self, prompt: str, reason: str):
        self.prompt, self.reason = prompt, reason
        super().__init__(None, None, "prompt", f"{reason}; {LONG_PROMPT_HINT}")


class Engine(Protocol):
    """What a sampling engine provides: N completions for each prompt of a shard."""

    name: str

    def generate(self, prompts: list[str], cfg: SampleConfig, shard_seed: int) -> list[list[Completion]]: ...


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (base seed, shard index, candidate id ...)."""
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:4], "big") >> 1


def apply_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return (text, was_cut)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _shard_rows(shard: pl.DataFrame, outs: list[list[Completion]], model: str) -> pl.DataFrame:
    rows = []
    for p, comps in zip(shard.iter_rows(named=True), outs):
        for cid, c in enumerate(comps):
            rows.append({
                "prompt_id": p["prompt_id"], "prompt": p["prompt"], "candidate_id": cid, "text": c.text,
                "model": model, "seed": c.seed, "finish_reason": c.finish_reason, "num_tokens": c.num_tokens,
                "task": p.get("task"), "meta": p.get("meta"),
            })
    return pl.DataFrame(rows, schema={**CANDIDATES.required, **CANDIDATES.optional})


def sample(prompts: pl.DataFrame, engine: Engine, out_path: str | Path, cfg: SampleConfig,
           model_name: str, progress=None, *, source: str | Path | None = None, allow_empty: bool = True) -> Path:
    """Sample ``cfg.n`` candidates for every prompt into ``out_path`` (candidates contract).

    Shards live in ``<out_path>.shards/<run key>/``; the run key hashes the prompts, the
    model and the config, so a restart with the same arguments reuses them and a changed
    argument never mixes old shards in. ``progress`` is an optional callable
    ``(prompts_done, tokens_done)`` for a progress bar; shards reused from an earlier run
    go to its ``resumed`` method instead when it has one (so rates count only new work).
    Prompts an engine skipped (an empty list) are listed with their reason in
    ``<out>.skipped.json``. The final file is streamed from the shards: memory stays flat
    in the number of prompts. ``source``: the prompts file, named (with the row) by a too-long
    prompt's error. ``allow_empty=False``: when every prompt was skipped, raise instead of
    writing an empty table (an existing ``out_path`` stays as it was).
    """
    prompts = validate(prompts, PROMPTS)
    out_path = Path(out_path)
    key = content_key("sample", {"prompts": frame_hash(prompts), "model": model_name}, asdict(cfg))
    shard_dir = out_path.parent / f"{out_path.name}.shards" / key
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = [prompts.slice(start, cfg.shard_size) for start in range(0, prompts.height, cfg.shard_size)]
    paths = [shard_dir / f"shard-{idx:05d}.parquet" for idx in range(len(shards))]
    fresh = {idx for idx, path in enumerate(paths) if not path.exists()}
    results = _generate(engine, ((shards[i]["prompt"].to_list(), derive_seed(cfg.seed, i)) for i in sorted(fresh)), cfg)
    try:
        for idx, (shard, path) in enumerate(zip(shards, paths)):
            is_fresh = idx in fresh
            if is_fresh:
                _write_shard(shard, next(results), path, model_name)
            if progress is not None:
                report = progress if is_fresh else getattr(progress, "resumed", progress)
                report(shard.height, _shard_tokens(path))
    except PromptTooLong as exc:
        raise _located(exc, prompts, source) from None
    finally:
        results.close()  # an engine that streams shards aborts what it still had queued
    skipped = _write_skipped(paths, out_path.with_suffix(".skipped.json"))
    if not allow_empty and skipped and len(skipped) >= prompts.height:
        raise SchemaError(str(out_path), None, None, f"all {prompts.height} prompts were skipped (first: "
                          f"{skipped[0]['reason'][:200]}; all listed in {out_path.with_suffix('.skipped.json')}): "
                          "nothing written (--allow-empty writes the empty table)")
    if not paths:
        return write_table(pl.DataFrame(schema=CANDIDATES.required), out_path, CANDIDATES)
    tmp = out_path.with_name(f".{out_path.name}.tmp.parquet")
    try:  # streamed shard by shard; the shards were checked against the contract when written
        pl.scan_parquet(paths).sink_parquet(tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _generate(engine: Engine, jobs, cfg: SampleConfig):
    """Completions of each ``(prompts, shard_seed)`` job, in order.

    An engine with ``generate_shards`` (vLLM) gets every job at once so it can keep its batch
    full across shard boundaries; any other engine is called shard by shard.
    """
    if hasattr(engine, "generate_shards"):
        yield from engine.generate_shards(jobs, cfg)
    else:
        for prompts, seed in jobs:
            yield engine.generate(prompts, cfg, seed)


def _write_shard(shard: pl.DataFrame, outs: list[list[Completion]], path: Path, model_name: str) -> None:
    """Write one finished shard atomically, its skip record (if any) first."""
    skips = [{"prompt_id": pid, "reason": getattr(c, "reason", "") or "engine returned no candidates"}
             for pid, c in zip(shard["prompt_id"], outs) if not c]
    skip_path = path.with_suffix(".skipped.json")
    if skips:  # written before the shard, so a finished shard always has its record
        write_json(skip_path, skips)
    else:
        skip_path.unlink(missing_ok=True)
    write_table(_shard_rows(shard, outs, model_name), path, CANDIDATES)


def _write_skipped(paths: list[Path], dest: Path) -> list[dict]:
    """Gather the shards' skip records into ``dest`` (removed when nothing was skipped); return them."""
    skips = []
    for p in paths:
        if (s := p.with_suffix(".skipped.json")).exists():
            skips.extend(json.loads(s.read_text()))
    if skips:
        write_json(dest, skips)
    else:
        dest.unlink(missing_ok=True)
    return skips


def _located(exc: PromptTooLong, prompts: pl.DataFrame, source: str | Path | None) -> SchemaError:
    """The engine's too-long-prompt error with the prompts file, its row and the prompt_id."""
    hits = (prompts["prompt"] == exc.prompt).arg_true()
    if not len(hits):
        return exc
    pid = prompts["prompt_id"][int(hits[0])]
    row = int(hits[0]) + 1
    if source is not None:
        from prefwork.pipeline.prompts import prompt_row

        row = prompt_row(source, pid) or row
    return SchemaError(str(source) if source is not None else None, row, "prompt",
                       f"prompt_id {pid!r}: {exc.reason}; {LONG_PROMPT_HINT}")


def _shard_tokens(path: Path) -> int:
    return int(pl.scan_parquet(path).select(pl.col("num_tokens").sum()).collect().item() or 0)
