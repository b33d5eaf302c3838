"""Versioned preference datasets: immutable versions in a local store under the workspace.

``<workspace>/datasets/<name>/vNNNN/`` holds one published version:

- ``pairs.parquet``: every pair of the version (pairs contract, plus ``chunk``/``difficulty``
  when the publisher chunked them, and ``added_in``: the version that first published the row);
  ``datasets.load_dataset("parquet", data_files=...)`` and ``polars.read_parquet`` read it;
- ``hf/``: the same rows written by ``datasets.Dataset.save_to_disk`` (``datasets.load_from_disk``);
- ``prompts.parquet``: the ``prompt_id`` of every prompt this version processed (with or
  without a resulting pair), so a refresh never samples a prompt an earlier version holds;
- ``manifest.json``: content hash, parent version, mode (append/replace), config, row counts,
  judge and policy used, source of the prompts.

A version is written into a temporary directory and renamed into place; the rename also
claims the version number (renaming onto an existing version fails), so concurrent
publishers never overwrite each other, readers never see half a version, and files are
made read-only once published. Publishing the same content on the same parent twice
returns the existing version (a re-run after a crash does not duplicate it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prefwork.pipeline.prompts import load_prompts
from prefwork.pipeline.schemas import PAIRS, PROMPTS, SchemaError, validate
from prefwork.pipeline.store import frame_hash, read_table, write_json, write_table

MODES = ("append", "replace")
_VERSION = re.compile(r"^v(\d{4,})$")
#: Columns that identify a pair when versions are compared.
PAIR_KEY = ("prompt_id", "chosen", "rejected")


@dataclass(frozen=True)
class Version:
    """One published, immutable dataset version."""

    name: str
    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def pairs_path(self) -> Path:
        return self.path / "pairs.parquet"

    @property
    def hf_path(self) -> Path:
        return self.path / "hf"

    def pairs(self) -> pl.DataFrame:
        """The version's pairs as a polars DataFrame, checked against the pairs contract."""
        return read_table(self.pairs_path, PAIRS)

    def prompt_ids(self) -> set[str]:
        return set(pl.read_parquet(self.path / "prompts.parquet")["prompt_id"].to_list())

    def to_hf(self):
        """The version as a ``datasets.Dataset`` (``load_from_disk``)."""
        import datasets

        return datasets.load_from_disk(str(self.hf_path))


def _number(name: str) -> int:
    return int(_VERSION.match(name).group(1))  # type: ignore[union-attr]


def _readonly(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            f.chmod(0o444)


def _save_hf(df: pl.DataFrame, dest: Path) -> None:
    import datasets

    datasets.Dataset.from_polars(df).save_to_disk(str(dest))


class DatasetStore:
    """The versions of one named dataset under ``<workspace>/datasets/<name>``."""

    def __init__(self, workspace: str | os.PathLike, name: str = "prefs"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"dataset name {name!r}: use letters, digits, '_', '-', '.'")
        self.name = name
        self.root = Path(workspace) / "datasets" / name

    # -- reading -----------------------------------------------------------------------
    def versions(self) -> list[Version]:
        """Published versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [Version(p.name, p) for p in self.root.iterdir()
                 if p.is_dir() and _VERSION.match(p.name) and (p / "manifest.json").exists()]
        return sorted(found, key=lambda v: _number(v.name))

    def latest(self) -> Version | None:
        vs = self.versions()
        return vs[-1] if vs else None

    def get(self, ref: str = "latest") -> Version:
        """A version by name (``v0003``), number (``3``), ``latest``, or a content-hash prefix."""
        vs = self.versions()
        if not vs:
            raise FileNotFoundError(f"{self.root}: dataset {self.name!r} has no published version yet")
        if ref == "latest":
            return vs[-1]
        for v in vs:
            if ref in (v.name, str(_number(v.name)), f"v{_number(v.name)}"):
                return v
        if len(ref) >= 6:
            hits = [v for v in vs if v.manifest["content_hash"].startswith(ref)]
            if len(hits) == 1:
                return hits[0]
        raise FileNotFoundError(f"dataset {self.name!r} has no version {ref!r}; versions: "
                                + ", ".join(v.name for v in vs) + " (or 'latest')")

    def held_prompt_ids(self) -> set[str]:
        """Every prompt_id that any published version processed."""
        held: set[str] = set()
        for v in self.versions():
            held |= v.prompt_ids()
        return held

    # -- writing -----------------------------------------------------------------------
    def compose(self, new_pairs: pl.DataFrame, mode: str = "append") -> pl.DataFrame:
        """The next version's pairs: the latest version's pairs + ``new_pairs`` (append), or
        ``new_pairs`` alone (replace). New rows have ``added_in`` null until published."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        new = validate(new_pairs, PAIRS).with_columns(added_in=pl.lit(None, pl.String))
        parent = self.latest()
        if mode == "replace" or parent is None:
            return new
        old = parent.pairs().drop(["chunk", "difficulty"], strict=False)  # chunks are redone over the whole set
        return pl.concat([old, new], how="diagonal_relaxed")

    def publish(self, pairs: pl.DataFrame, prompt_ids: list[str], *, mode: str = "append",
                config: dict[str, Any] | None = None, judge: str = "rules", policy: dict[str, Any] | None = None,
                source: str | None = None, parent: str | None | type[Ellipsis] = ...) -> Version:
        """Publish ``pairs`` (usually from ``compose``) as the next immutable version.

        ``prompt_ids``: the prompts this version processed. Rows whose ``added_in`` is null
        are stamped with the new version's name. ``parent``: the version ``pairs`` was composed
        on (default: the latest); publishing the same content on the same parent again returns
        the version already published (a retry after a crash), and a parent that is no longer
        the latest (someone published meanwhile) is an error instead of a silent fork.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        pairs = validate(pairs, PAIRS)
        if "added_in" not in pairs.columns:
            pairs = pairs.with_columns(added_in=pl.lit(None, pl.String))
        latest = self.latest()
        base = (latest.name if latest else None) if parent is ... else parent
        publish_key = hashlib.sha256(json.dumps([base, frame_hash(pairs), sorted(prompt_ids), mode]).encode()
                                     ).hexdigest()[:24]
        for v in reversed(self.versions()):
            if v.manifest.get("publish_key") == publish_key:
                return v  # the same publish already happened (a retry after a crash)
        if base != (latest.name if latest else None):
            raise ValueError(f"dataset {self.name!r} moved on: its latest version is "
                             f"{latest.name if latest else 'none'}, these pairs were composed on {base or 'none'}; "
                             "run the refresh again")
        parent = latest
        self.root.mkdir(parents=True, exist_ok=True)
        number = _number(parent.name) + 1 if parent else 1
        while True:
            name = f"v{number:04d}"
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
            tmp.chmod(0o755)
            try:
                self._write(tmp, name, pairs, prompt_ids, parent, mode, publish_key, config, judge, policy, source)
                os.rename(tmp, self.root / name)  # fails if another publisher took the number
                return Version(name, self.root / name)
            except OSError:
                if not (self.root / name).exists():
                    raise
                number += 1
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)

    def _write(self, tmp: Path, name: str, pairs: pl.DataFrame, prompt_ids: list[str], parent: Version | None,
               mode: str, publish_key: str, config, judge, policy, source) -> None:
        table = pairs.with_columns(added_in=pl.col("added_in").fill_null(name))
        write_table(table, tmp / "pairs.parquet", PAIRS)
        write_table(pl.DataFrame({"prompt_id": sorted(set(prompt_ids))}, schema={"prompt_id": pl.String}),
                    tmp / "prompts.parquet")
        _save_hf(table, tmp / "hf")
        new_rows = int((table["added_in"] == name).sum())
        write_json(tmp / "manifest.json", {
            "dataset": self.name, "version": name, "content_hash": frame_hash(table),
            "parent": parent.name if parent else None, "mode": mode, "publish_key": publish_key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": config or {}, "judge": judge,
            "policy": policy or {}, "source": source,
            "rows": {"pairs": table.height, "new_pairs": new_rows, "kept_pairs": table.height - new_rows,
                     "prompts": len(set(prompt_ids)), "pair_prompts": table["prompt_id"].n_unique()},
            "files": {"parquet": "pairs.parquet", "hf": "hf", "prompts": "prompts.parquet"},
        })
        _readonly(tmp)


PROMPT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet")


def load_prompt_source(source: str, *, split: str = "train", prompt_field: str = "prompt") -> pl.DataFrame:
    """Prompts from a file, a directory of ``.jsonl``/``.parquet`` files, or ``hf:NAME`` (a Hugging Face
    dataset via ``datasets.load_dataset``); the prompts contract, one row per distinct ``prompt_id``."""
    if source.startswith("hf:"):
        return _load_hf(source[3:], split, prompt_field)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in PROMPT_SUFFIXES)
        if not files:
            raise SchemaError(str(path), None, None, "directory holds no .jsonl/.parquet prompt files")
        return pl.concat([load_prompts(f) for f in files]).unique("prompt_id", keep="first", maintain_order=True)
    return load_prompts(path)


def _load_hf(name: str, split: str, prompt_field: str) -> pl.DataFrame:
    import datasets

    ds = datasets.load_dataset(name, split=split)
    if prompt_field != "prompt":
        if prompt_field not in ds.column_names:
            raise SchemaError(f"hf:{name}", None, prompt_field, f"no such column (has: {', '.join(ds.column_names)})")
        ds = ds.remove_columns([c for c in ("prompt",) if c in ds.column_names]).rename_column(prompt_field, "prompt")
    ds = ds.select_columns([c for c in ds.column_names if c in PROMPTS.columns])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name.replace('/', '__')}.parquet"
        ds.to_parquet(str(path))
        return load_prompts(path)


def pair_key_frame(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(list(PAIR_KEY)).unique()


def diff(a: Version, b: Version) -> dict[str, Any]:
    """What changed from version ``a`` to ``b``: pairs added/removed (by prompt, chosen, rejected)."""
    pa, pb = a.pairs(), b.pairs()
    added = pb.join(pair_key_frame(pa), on=list(PAIR_KEY), how="anti")
    removed = pa.join(pair_key_frame(pb), on=list(PAIR_KEY), how="anti")
    ma, mb = a.manifest, b.manifest
    config_changes = {k: (ma["config"].get(k), mb["config"].get(k))
                      for k in sorted(set(ma["config"]) | set(mb["config"]))
                      if ma["config"].get(k) != mb["config"].get(k)}
    return {"a": a.name, "b": b.name, "pairs_a": pa.height, "pairs_b": pb.height, "added": added,
            "removed": removed, "common": pb.height - added.height, "config_changes": config_changes,
            "policy_changed": ma.get("policy") != mb.get("policy")}


def push_to_hub(version: Version, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a version to the Hugging Face Hub (``datasets.Dataset.push_to_hub``); needs network and a token.

    The token comes from ``token`` or the usual Hugging Face login/``HF_TOKEN``; it is never stored.
    """
    if not version.hf_path.exists():
        raise SchemaError(str(version.hf_path), None, None, "version has no saved Hugging Face dataset")
    ds = version.to_hf()
    ds.push_to_hub(repo_id, private=private, token=token,
                   commit_message=f"prefwork {version.manifest['dataset']} {version.name} "
                                  f"({version.manifest['content_hash'][:12]})")
    return f"https://huggingface.co/datasets/{repo_id}"
