"""The report family's shared parts: number formats, tables (rich, markdown), report.md, Prefect artifacts.

The family, one module per role (the numbers all come from ``evaluators.winrate``; reports only format):

- ``report`` (this module): ``pct``/``points``, ``rich_table``/``md_table`` built from the same cells,
  ``write_report_md``, and ``publish``, which shows a report's tables in the Prefect UI (as artifacts of
  the flow run) when it runs inside one, so flow users see results where they look;
- ``report_history``: the results history file and its replication-style table;
- ``report_winrate``: what a win-rate evaluation prints and leaves behind (``prefwork winrate``, the
  ``winrate_report`` flow);
- ``report_loop``: what a loop run prints and leaves behind (``prefwork loop``, the ``iterative_dpo`` flow);
- ``report_plots``: the charts (PNG).

Rates print as percentages with one decimal (``53.0%``), spreads (STD, SE) in percentage points (``2.9``).
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from prefwork.pipeline.store import atomic_write_bytes


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal: 0.53 -> '53.0%'; missing -> '—'."""
    return "—" if _missing(x) else f"{100 * x:.1f}%"


def points(x: float | None) -> str:
    """A spread of rates in percentage points with one decimal: 0.029 -> '2.9'; missing -> '—'."""
    return "—" if _missing(x) else f"{100 * x:.1f}"


def rich_table(head: list[str] | tuple[str, ...], rows: list[list[str]], *, title: str | None = None,
               left: int = 1) -> Table:
    """A rich table of formatted cells; the first ``left`` columns (labels) left-aligned, numbers right."""
    table = Table(title=title)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i < left else "right")
    for r in rows:
        table.add_row(*r)
    return table


def md_table(head: list[str] | tuple[str, ...], rows: list[list[str]], *, left: int = 1) -> str:
    """The same cells as a GitHub markdown table (``|`` in a cell escaped), numbers right-aligned."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(head))) + "|"
    lines = ["| " + " | ".join(head) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]) + "\n"


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
    return rich_table(columns, [[_cell(r.get(c)) for c in columns] for r in rows], title=title, left=len(columns))


def write_report_md(path: str | os.PathLike, sections: list[tuple[str, str]], *,
                    title: str | None = None) -> Path:
    """Write a markdown report (one ``## heading`` per section, optional ``# title``) atomically."""
    parts = [f"# {title}\n"] if title else []
    parts += [f"## {heading}\n\n{body.rstrip()}\n" for heading, body in sections]
    return atomic_write_bytes(path, "\n".join(parts).encode())


# --- Prefect artifacts --------------------------------------------------------------------------

def in_prefect_run() -> bool:
    """Whether this code runs inside a Prefect flow or task run (never imports Prefect to find out)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext, TaskRunContext
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(text: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from any label."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:100] or "report"


def publish(key: str, *, markdown: str | None = None, head: list[str] | tuple[str, ...] | None = None,
            rows: list[list[str]] | None = None, description: str | None = None) -> list:
    """Show a report in the Prefect UI: ``markdown`` as a markdown artifact, ``head``/``rows`` as a table
    artifact (key ``<key>-table``). Outside a flow or task run it does nothing; returns the artifact ids."""
    if not in_prefect_run():
        return []
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    ids = []
    if markdown is not None:
        ids.append(create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description))
    if head is not None and rows is not None:
        table = [dict(zip(head, r)) for r in rows]
        ids.append(create_table_artifact(table=table, key=artifact_key(f"{key}-table"), description=description))
    return ids
