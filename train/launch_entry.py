"""The process that trains: ``python -m prefwork.train.launch_entry --config RUN_DIR/config.json``.

``accelerate launch`` starts one of these per rank (``launch_training`` runs ``run_spec``
directly for in-process runs). It dispatches to ``train_sft``, ``train_dpo`` or
``train_sdpo`` and, on rank 0 only, writes ``RUN_DIR/result.json`` naming the final model.
Work that must happen once (splitting pairs into chunks, the reference pass) is done by
rank 0 first and read back by the other ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from prefwork.train.launch_config import RESULT_FILE, TrainSpec


def _state():
    """The accelerate process state, started first: on a machine without CUDA the ranks are
    gloo CPU processes (accelerate only does that when asked with ``cpu=True``)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def _chunks_of(spec: TrainSpec, table, run_dir: Path, state):
    """The CHUNKS table to train over: the file's own, or the pairs split into ``spec.chunks``."""
    from prefwork.pipeline.curriculum import ChunkConfig
    from prefwork.pipeline.schemas import CHUNKS, PAIRS
    from prefwork.pipeline.store import read_table, write_table
    from prefwork.train.difficulty import chunk_pairs

    if "chunk" in table.columns and not spec.chunks:
        return table
    path = run_dir / "chunks.parquet"
    with state.main_process_first():  # rank 0 measures difficulty and writes; the others read it
        if not path.exists():
            pairs = table.select([c for c in table.columns if c in PAIRS.columns])
            cfg = ChunkConfig(chunks=max(spec.chunks, 1), method=spec.curriculum, seed=spec.dpo.seed)
            write_table(chunk_pairs(pairs, spec.model, cfg, max_length=spec.dpo.max_length), path, CHUNKS)
        chunks = read_table(path, CHUNKS)
    return chunks


def run_spec(spec: TrainSpec) -> Path:
    """Train ``spec`` into ``spec.run_dir``; return the final model directory."""
    state = _state()
    run_dir = Path(spec.run_dir)
    t0 = time.time()
    if spec.kind == "sft":
        from prefwork.train.sft import load_corpus, train_sft
        final = train_sft(spec.model, load_corpus(spec.data), run_dir / "model", spec.sft)
        metrics = {}
    else:
        import polars as pl

        from prefwork.pipeline.schemas import PAIRS
        from prefwork.pipeline.store import read_table
        from prefwork.train.dpo import train_dpo
        from prefwork.pipeline.run import read_metrics
        from prefwork.train.sdpo import train_sdpo

        table = pl.read_parquet(spec.data)
        if "chunk" in table.columns or spec.chunks:
            chunks = _chunks_of(spec, table, run_dir, state)
            final = train_sdpo(spec.model, chunks, run_dir / "train", spec.dpo, schedule=spec.schedule or "sdpo")
        else:
            final = train_dpo(spec.model, read_table(spec.data, PAIRS), run_dir / "train", spec.dpo,
                              reference_dir=spec.reference)
        last = read_metrics(final.parent)
        metrics = last[-1] if last else {}
    if state.is_main_process:
        from prefwork.pipeline.store import write_json
        write_json(run_dir / RESULT_FILE, {
            "kind": spec.kind, "final_model": str(Path(final).resolve()), "run_dir": str(run_dir),
            "schedule": spec.schedule, "world_size": state.num_processes, "train_s": round(time.time() - t0, 2),
            "last_metrics": metrics})
    state.wait_for_everyone()
    return Path(final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train one resolved prefwork config (one process per rank)")
    parser.add_argument("--config", required=True, help="the run directory's resolved config.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raw = json.loads(Path(args.config).read_text())
    run_spec(TrainSpec.from_dict(raw, args.config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
