"""Resumable Prefect tasks: cache policies keyed on our content hashes, results kept in the workspace.

A task decorated with ``cache_policy=content_policy(stage, paths=..., config=...)`` gets the
Prefect cache key ``content_key(stage, {input file hashes}, {config inputs})`` -- the same
kind of key as our ``StageCache`` (DESIGN.md). Its return value (an output path) is persisted
under ``<workspace>/.cache/prefect-results``, so a re-run of a failed flow run finds the
finished tasks' records and Prefect ends those task runs in the state ``Cached`` without
calling them: the skipped work is visible in the UI and the API. Underneath, each stage
still goes through ``StageCache``, so even without Prefect's records (a fresh Prefect
home) nothing finished is recomputed. Deleting ``<workspace>/.cache`` clears both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy

from prefwork.flows.stages import hash_of
from prefwork.pipeline.store import content_key


def hash_inputs(value: Any) -> Any:
    """Content hash of a path (or of each path in a list/dict); other values (e.g. 'reference') as they are."""
    if isinstance(value, (list, tuple)):
        return [hash_inputs(v) for v in value]
    if isinstance(value, dict):
        return {k: hash_inputs(v) for k, v in sorted(value.items())}
    if value is None or not Path(str(value)).exists():
        return value
    return hash_of(value)


def content_policy(stage: str, paths: tuple[str, ...] = (), config: tuple[str, ...] = ()) -> CacheKeyFnPolicy:
    """A cache policy over the content of the file/dir inputs ``paths`` and the plain inputs ``config``."""

    def key(_ctx, inputs: dict[str, Any]) -> str:
        return content_key(stage, {p: hash_inputs(inputs[p]) for p in paths}, {c: inputs.get(c) for c in config})

    return CacheKeyFnPolicy(cache_key_fn=key)


def result_storage(workspace: str | Path) -> Path:
    """Where a workspace's Prefect task results (and cache records) live."""
    return Path(workspace).resolve() / ".cache" / "prefect-results"


def bind(workspace: str | Path, *tasks):
    """The given tasks with their result storage in ``workspace`` (one copy per flow run)."""
    store = result_storage(workspace)
    return [t.with_options(result_storage=store) for t in tasks]
