"""The results history: one Parquet row per evaluation (``prefwork winrate`` and every loop round),
shown as the variance table the GPT-2 DPO replication uses (``Model | Stage | Date | Win Rate | STD | Min | Max``).

The history stores rates as fractions in [0, 1] (as ``evaluators.winrate`` computes them);
tables show win rate, min and max as percentages with one decimal (``53.0%``) and STD in
percentage points (``2.9``), matching the replication's ``53.0% ± 2.9 (49–57)``. Part of the report
family (``evaluators.report``).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import polars as pl
from rich.table import Table

from prefwork.evaluators.report import md_table, pct, points, rich_table
from prefwork.pipeline.store import read_table, write_table

#: Columns of the history file, in order, with their dtypes.
HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "model": pl.String, "stage": pl.String, "judge": pl.String, "date": pl.String,
    "prompts_hash": pl.String, "k": pl.Int64, "n": pl.Int64,
    "win_rate": pl.Float64, "std": pl.Float64, "min": pl.Float64, "max": pl.Float64,
    "se": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "lc_win_rate": pl.Float64,
    "n_errors": pl.Int64, "run_dir": pl.String, "recorded_at": pl.String,
}
#: Summary fields copied into a history row.
_SUMMARY_FIELDS = ("win_rate", "std", "min", "max", "se", "ci_low", "ci_high", "lc_win_rate", "n_errors")

#: The replication's variance table, in this exact order.
HISTORY_HEADERS = ("Model", "Stage", "Date", "Win Rate", "STD", "Min", "Max")


#: Optional columns after the fixed ones: name -> (header, history column, formatter).
EXTRA_COLUMNS = {
    "lc": ("LC Win Rate", "lc_win_rate", pct),
    "se": ("SE", "se", points),
    "ci": ("95% CI", None, None),
    "n": ("n", "n", lambda v: "—" if v is None else str(v)),
    "k": ("k", "k", lambda v: "—" if v is None else str(v)),
    "judge": ("Judge", "judge", lambda v: v or "—"),
}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` so two appends cannot lose each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _summary_dict(summary: Any) -> Mapping[str, Any]:
    return summary.to_dict() if hasattr(summary, "to_dict") else summary


def append_history(history_path: str | os.PathLike, *, model: str, stage: str, judge: str,
                   prompts_hash: str, k: int, n: int, summary: Any, date: str | None = None,
                   run_dir: str | os.PathLike | None = None) -> pl.DataFrame:
    """Append one evaluation (``k`` repeats over ``n`` prompts) to the history; return the new history.

    ``summary`` is a ``WinRateSummary`` or its ``to_dict()``. ``date`` defaults to today
    (UTC, ISO). The file is read, extended and rewritten atomically under a lock file, so
    a reader never sees half a file and concurrent appends keep every row.
    """
    s = _summary_dict(summary)
    now = _dt.datetime.now(_dt.timezone.utc)
    row = {
        "model": model, "stage": stage, "judge": judge, "date": date or now.date().isoformat(),
        "prompts_hash": prompts_hash, "k": k, "n": n, **{f: s.get(f) for f in _SUMMARY_FIELDS},
        "run_dir": None if run_dir is None else str(run_dir), "recorded_at": now.isoformat(timespec="seconds"),
    }
    new = pl.DataFrame([row], schema=HISTORY_SCHEMA)
    path = Path(history_path)
    with _locked(path):
        history = pl.concat([load_history(path), new], how="diagonal_relaxed") if path.exists() else new
        write_table(history, path)
    return history


def load_history(path: str | os.PathLike) -> pl.DataFrame:
    """The history as a polars DataFrame (empty, with the history schema, if there is none yet)."""
    path = Path(path)
    if not path.exists():
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    return read_table(path)


def _history_rows(history: pl.DataFrame, extras: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells shared by the rich and the markdown tables."""
    unknown = [e for e in extras if e not in EXTRA_COLUMNS]
    if unknown:
        raise ValueError(f"unknown extra column(s) {unknown}; valid: {sorted(EXTRA_COLUMNS)}")
    headers = list(HISTORY_HEADERS) + [EXTRA_COLUMNS[e][0] for e in extras]
    rows = []
    for r in history.to_dicts():
        cells = [r.get("model") or "—", r.get("stage") or "—", r.get("date") or "—",
                 pct(r.get("win_rate")), points(r.get("std")), pct(r.get("min")), pct(r.get("max"))]
        for e in extras:
            _, col, fmt = EXTRA_COLUMNS[e]
            cells.append(f"{pct(r.get('ci_low'))}–{pct(r.get('ci_high'))}" if e == "ci" else fmt(r.get(col)))
        rows.append(cells)
    return headers, rows


def history_table(history: pl.DataFrame, *, extras: tuple[str, ...] = (),
                  title: str | None = "Win rates") -> Table:
    """A rich table ``Model | Stage | Date | Win Rate | STD | Min | Max`` (+ ``extras``, e.g. ("lc", "n"))."""
    return rich_table(*_history_rows(history, extras), title=title, left=3)


def history_markdown(history: pl.DataFrame, *, extras: tuple[str, ...] = ()) -> str:
    """The same table as GitHub markdown; the header is exactly the replication's columns first."""
    return md_table(*_history_rows(history, extras), left=3)
