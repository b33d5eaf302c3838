"""Prompt sets: load JSONL or Parquet, give every prompt a stable id, check the contract.

Errors name the file, the row (1-based; for JSONL the line number) and the field, and
loading happens before any stage writes, so bad input never leaves partial output.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from prefwork.pipeline.schemas import KNOWN_TASKS, PROMPTS, SchemaError, validate
from prefwork.pipeline.store import iter_jsonl


def prompt_id_for(prompt: str, task: str | None = None, meta: str | None = None) -> str:
    """Stable content hash of a prompt (its text, task and constraints)."""
    blob = json.dumps([prompt, task, meta], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_jsonl(path: Path) -> list[dict]:
    return [{**obj, "__row": lineno} for lineno, obj in iter_jsonl(path)]


def _normalise(rows: list[dict], path: Path) -> pl.DataFrame:
    out = []
    for i, obj in enumerate(rows, start=1):
        row = obj.pop("__row", i)
        prompt = obj.get("prompt")
        if prompt is None:
            raise SchemaError(str(path), row, "prompt", "missing required field")
        if isinstance(prompt, list):  # chat messages are stored as a JSON string
            prompt = json.dumps(prompt, ensure_ascii=False)
        if not isinstance(prompt, str) or not prompt.strip():
            raise SchemaError(str(path), row, "prompt", "must be a non-empty string or a list of chat messages")
        task = obj.get("task")
        if task is not None and task not in KNOWN_TASKS:
            raise SchemaError(str(path), row, "task", f"unknown task {task!r} (known: {', '.join(KNOWN_TASKS)})")
        meta = obj.get("meta")
        if isinstance(meta, dict):
            meta = json.dumps(meta, ensure_ascii=False, sort_keys=True)
        elif meta is not None:
            if not isinstance(meta, str):
                raise SchemaError(str(path), row, "meta", "must be a JSON object or a JSON string")
            try:
                json.loads(meta)
            except json.JSONDecodeError:
                raise SchemaError(str(path), row, "meta", "is not valid JSON") from None
        pid = obj.get("prompt_id")
        out.append({
            "prompt_id": str(pid) if pid is not None else prompt_id_for(prompt, task, meta),
            "prompt": prompt, "task": task, "meta": meta,
            "reference": obj.get("reference"), "split": obj.get("split"),
        })
    return pl.DataFrame(out, schema={c: pl.String for c in PROMPTS.columns})


def load_prompts(path: str | Path) -> pl.DataFrame:
    """Load a prompts file (``.jsonl``/``.json`` lines or ``.parquet``) into the prompts contract."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(str(path), None, None, "file does not exist")
    if path.suffix == ".parquet":
        try:
            df = pl.read_parquet(path)
        except Exception as exc:
            raise SchemaError(str(path), None, None, f"is not a readable Parquet file ({exc})") from exc
        if "prompt" not in df.columns:
            raise SchemaError(str(path), None, "prompt", "missing required column")
        rows = [dict(r, __row=i) for i, r in enumerate(df.iter_rows(named=True), start=1)]
    elif path.suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(path)
    else:
        raise SchemaError(str(path), None, None, "unsupported prompts format (use .jsonl or .parquet)")
    if not rows:
        raise SchemaError(str(path), None, None, "is empty: no prompts to work on")
    return validate(_normalise(rows, path), PROMPTS, str(path))  # a repeated prompt_id: the contract's key


def prompt_row(path: str | Path, prompt_id: str) -> int | None:
    """The row (for JSONL: the line) of ``prompt_id`` in a prompts file, for error messages; ``None`` if
    the file (or a directory of them) does not say."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            rows = [dict(r, __row=i) for i, r in enumerate(pl.read_parquet(path).iter_rows(named=True), start=1)]
        elif path.suffix in (".jsonl", ".json", ".ndjson"):
            rows = _read_jsonl(path)
        else:
            return None
        lines = [r["__row"] for r in rows]
        ids = _normalise(rows, path)["prompt_id"].to_list()
        return lines[ids.index(prompt_id)]
    except (OSError, SchemaError, ValueError):
        return None
