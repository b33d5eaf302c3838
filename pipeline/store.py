"""Files between stages: atomic Parquet/JSON writes, validated reads, content hashes,
and the content-addressed stage cache that lets a re-run or ``--resume`` skip finished work.

Every file written here gets the ordinary mode (0666 less the umask: 0644 as a rule), never the
0600 of a temp file; JSONL is read as UTF-8 with or without a byte-order mark (``iter_jsonl``);
an empty result never replaces an existing output unless asked (``guard_empty``).

A stage's cache key is ``sha256(stage name, its inputs' content hashes, its config)``;
its output lives in ``<workspace>/cache/<stage>/<key>/`` and appears only when complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import polars as pl

from prefwork.pipeline.schemas import Contract, SchemaError, validate


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


#: Mode of every file we write: what ``open(path, "w")`` would give (mkstemp's own is 0600).
FILE_MODE = 0o666 & ~_umask()


def _tmp_beside(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename: readers never see half a file."""
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table(df: pl.DataFrame, path: str | os.PathLike, contract: Contract | None = None) -> Path:
    """Validate ``df`` (if a contract is given) and write it atomically as Parquet."""
    path = Path(path)
    if contract is not None:
        df = validate(df, contract, str(path))
    tmp = _tmp_beside(path, ".parquet")
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def guard_empty(path: str | os.PathLike, rows: int, allow_empty: bool) -> None:
    """Refuse to replace an existing output with an empty result (0 rows) unless ``allow_empty``.

    The one home of the rule: a command whose inputs matched nothing (no candidates, scores for
    other prompts) must not wipe a good file from an earlier run and exit 0.
    """
    if rows == 0 and not allow_empty and Path(path).exists():
        raise SchemaError(str(path), None, None, "exists and the new result is empty (0 rows): the file is kept "
                          "as it was (pass --allow-empty to replace it with an empty table)")


def write_output(df: pl.DataFrame, path: str | os.PathLike, contract: Contract | None = None, *,
                 allow_empty: bool = False) -> Path:
    """A command's output: ``write_table`` behind ``guard_empty``."""
    guard_empty(path, df.height, allow_empty)
    return write_table(df, path, contract)


def iter_jsonl(path: str | os.PathLike, limit: int | None = None):
    """``(line number, object)`` for each non-blank line of a JSONL file (1-based line numbers).

    UTF-8 with or without a byte-order mark (as ``utf-8-sig`` reads it); a line that is not UTF-8,
    not JSON or not an object is a ``SchemaError`` naming the file and the line. ``limit``: stop
    after that many objects.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(str(path), None, None, "file does not exist")
    seen = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SchemaError(str(path), lineno, None, f"line is not valid UTF-8 (byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SchemaError(str(path), lineno, None, f"line is not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise SchemaError(str(path), lineno, None, "line is not a JSON object")
            yield lineno, obj
            seen += 1
            if limit is not None and seen >= limit:
                return


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The objects of a JSONL file (``iter_jsonl``)."""
    return [obj for _, obj in iter_jsonl(path, limit)]


def read_table(path: str | os.PathLike, contract: Contract | None = None) -> pl.DataFrame:
    """Read a stage's Parquet file and check it against its contract."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(str(path), None, None, "file does not exist")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise SchemaError(str(path), None, None, f"is not a readable Parquet file ({exc})") from exc
    return validate(df, contract, str(path)) if contract is not None else df


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (or of a directory's files, sorted by relative path)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


_HASHES: dict[tuple[str, float], str] = {}


def hash_of(path: str | os.PathLike) -> str:
    """``file_hash`` memoised by path and modification time: stage cache keys hash the same
    model directory or table many times in a run, and a directory hash reads every file."""
    p = Path(path)
    stamp = max((f.stat().st_mtime for f in p.rglob("*") if f.is_file()), default=0.0) if p.is_dir() else p.stat().st_mtime
    key = (str(p.resolve()), stamp)
    if key not in _HASHES:
        _HASHES[key] = file_hash(p)
    return _HASHES[key]


def frame_hash(df: pl.DataFrame, columns: list[str] | None = None) -> str:
    """sha256 of a table's rows (order-sensitive), stable across processes and versions.

    Rows are serialised as NDJSON, so the hash depends on values, not on Parquet encoding.
    """
    cols = [c for c in (columns or df.columns) if c in df.columns]
    h = hashlib.sha256(json.dumps(cols).encode())
    h.update(df.select(cols).write_ndjson().encode())
    return h.hexdigest()


def content_key(stage: str, inputs: dict[str, str], config: dict[str, Any]) -> str:
    """Cache key of a stage: its name, its inputs' hashes and its config, canonically hashed."""
    blob = json.dumps({"stage": stage, "inputs": inputs, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class StageCache:
    """Content-addressed store of finished stage outputs under ``<root>/<stage>/<key>/``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.entry(stage, key) / "_DONE").exists()

    def run(self, stage: str, key: str, produce: Callable[[Path], None]) -> tuple[Path, bool]:
        """Return ``(entry dir, was_cached)``; call ``produce(work_dir)`` only on a miss.

        ``produce`` writes into ``<key>.partial/``, which is renamed into place when it
        returns, so readers never see half an entry. The partial directory is stable: a
        stage killed mid-way finds its finished pieces there (sample shards, training
        checkpoints) when it runs again, and resumes instead of starting over.
        """
        final = self.entry(stage, key)
        if self.has(stage, key):
            return final, True
        work = final.with_name(key + ".partial")
        work.mkdir(parents=True, exist_ok=True)
        produce(work)
        (work / "_DONE").write_text(key)
        if final.exists():  # an unfinished entry from an older layout
            shutil.rmtree(final)
        os.replace(work, final)
        return final, False
