"""Results history and reports: one Parquet row per evaluation, shown as the variance
table the GPT-2 DPO replication uses (``Model | Stage | Date | Win Rate | STD | Min | Max``).

The history stores rates as fractions in [0, 1] (as ``evaluators.winrate`` computes them);
tables show win rate, min and max as percentages with one decimal (``53.0%``) and STD in
percentage points (``2.9``), matching the replication's ``53.0% ± 2.9 (49–57)``.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import polars as pl
from rich.table import Table

from prefwork.pipeline.store import atomic_write_bytes, read_table, write_table

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


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal: 0.53 -> '53.0%'; missing -> '—'."""
    return "—" if _missing(x) else f"{100 * x:.1f}%"


def points(x: float | None) -> str:
    """A spread of rates in percentage points with one decimal: 0.029 -> '2.9'; missing -> '—'."""
    return "—" if _missing(x) else f"{100 * x:.1f}"


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
    headers, rows = _history_rows(history, extras)
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < 3 else "right")
    for cells in rows:
        table.add_row(*cells)
    return table


def history_markdown(history: pl.DataFrame, *, extras: tuple[str, ...] = ()) -> str:
    """The same table as GitHub markdown; the header is exactly the replication's columns first."""
    headers, rows = _history_rows(history, extras)
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def summary_table(rows: list[dict], title: str | None = None) -> Table:
    """A rich table from a list of dicts: columns are the keys in first-seen order; floats as 4 sig. digits."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    table = Table(title=title)
    for c in columns:
        table.add_column(str(c))
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in columns))
    return table


def write_report_md(path: str | os.PathLike, sections: list[tuple[str, str]], *,
                    title: str | None = None) -> Path:
    """Write a markdown report (one ``## heading`` per section, optional ``# title``) atomically."""
    parts = [f"# {title}\n"] if title else []
    parts += [f"## {heading}\n\n{body.rstrip()}\n" for heading, body in sections]
    return atomic_write_bytes(path, "\n".join(parts).encode())
