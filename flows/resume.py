"""Resumable Prefect tasks, one mechanism for every flow: our stage cache decides, Prefect shows it.

Every stage of the loop, the refresh and the win-rate flow runs behind ``pipeline.store.StageCache``
(key = stage + its inputs' content hashes + its config; DESIGN.md), so a re-run, ``--resume`` or a
retried flow run redoes no finished work, even with a fresh Prefect home. A task whose stage the
cache served returns ``cached(value, True)``: a ``Completed`` state named ``Cached``, so Prefect's UI
and API show which task runs were reused. Deleting ``<workspace>/.cache`` clears it all.

Why not Prefect's own cache policies as well: two caches would have to agree on every key, and a
task Prefect skips never reaches the stage that logs it in ``metrics.jsonl``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.states import Completed, State

from prefwork.pipeline.store import hash_of


def cached(value: Any, hit: bool):
    """What a stage task returns: ``value`` itself, or, when the stage cache served it, a Completed
    state named "Cached" holding it (Prefect records the task run as Cached)."""
    return Completed(name="Cached", data=value, message="served from the workspace stage cache") if hit else value


def value_of(out: Any) -> Any:
    """What a stage task produced: calling a task that returned a state gives the state itself."""
    return out.result() if isinstance(out, State) else out


def hash_inputs(value: Any) -> Any:
    """Content hash of a path (or of each path in a list/dict); other values (e.g. 'reference') as they are."""
    if isinstance(value, (list, tuple)):
        return [hash_inputs(v) for v in value]
    if isinstance(value, dict):
        return {k: hash_inputs(v) for k, v in sorted(value.items())}
    if value is None or not Path(str(value)).exists():
        return value
    return hash_of(value)
