"""How a command ends when some or all of its units of work failed (issue 19, rule d).

The one home of the rule, used by ``judge`` (rows), ``sample`` (prompts) and ``winrate`` (judgments):

- every unit failed: ``CommandFailed`` before the output is written (an earlier good file stays as it
  was), so the CLI prints one ``error:`` line with the count and the first reason and exits 1;
- some failed: the output is written, a ``warning:`` line gives the counts, exit 0;
- ``--strict``: any failure exits 1 (after writing what did succeed).

A script or a Prefect task can therefore tell "nothing worked" from "most worked" by the exit code.
The companion rule (e), never replacing an existing output with an empty result unless
``--allow-empty``, lives in ``pipeline.store.guard_empty``; both options are added here.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass


class CommandFailed(RuntimeError):
    """A command's work failed as a whole (or partly, under ``--strict``); the message says how."""


def add_outcome_options(parser: argparse.ArgumentParser, *, strict: bool = True, allow_empty: bool = True) -> None:
    """``--strict`` (rule d) and ``--allow-empty`` (rule e) for a command."""
    if strict:
        parser.add_argument("--strict", action="store_true",
                            help="exit 1 when any unit of work failed (default: only when every one did; "
                                 "partial failures are counted in a warning line)")
    if allow_empty:
        parser.add_argument("--allow-empty", action="store_true",
                            help="accept an empty result: write it even over an existing output file")


@dataclass
class Outcome:
    """``failed`` of ``total`` units (``unit`` in the plural: rows, prompts, judgments) did not succeed."""

    unit: str
    total: int
    failed: int
    verb: str = "failed"
    first_error: str | None = None
    where: str = ""  # where the written output lists the failures, e.g. "the error column of scores.parquet"

    @property
    def all_failed(self) -> bool:
        return self.total > 0 and self.failed >= self.total

    def _text(self) -> str:
        head = (f"all {self.total} {self.unit} {self.verb}" if self.all_failed
                else f"{self.failed} of {self.total} {self.unit} {self.verb}")
        if self.first_error:
            head += f" (first: {' '.join(str(self.first_error).split())[:300]})"
        return head + (f"; listed in {self.where}" if self.where and not self.all_failed else "")

    def check_not_all_failed(self, nothing_written: str = "") -> None:
        """Raise ``CommandFailed`` when every unit failed (call it before writing the output)."""
        if self.all_failed:
            raise CommandFailed(self._text() + (f"; {nothing_written}" if nothing_written else ""))

    def finish(self, console, strict: bool) -> int:
        """After the output is written: count partial failures; ``--strict`` makes them exit 1."""
        self.check_not_all_failed()
        if not self.failed:
            return 0
        if strict:
            raise CommandFailed(self._text() + " (--strict)")
        console.print(f"[bold yellow]warning:[/] {self._text()}", highlight=False, soft_wrap=True)
        return 0
