"""Progress bars for long stages, shown by the CLI with rich (silent when none is active)."""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def table_console() -> Console:
    """A console for result tables on stdout; piped output gets a wide fixed width, so wide
    tables stay whole in logs and files instead of wrapping at 80 columns."""
    return Console(width=None if sys.stdout.isatty() else 220)
_active: Progress | None = None
_lock = threading.Lock()


@contextlib.contextmanager
def bars() -> Iterator[Progress]:
    """Show progress bars for the duration of the block (used by the CLI)."""
    global _active
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False)
    with progress:
        _active = progress
        try:
            yield progress
        finally:
            _active = None


def sampling_bar(description: str, total: int) -> Callable[[int, int], None] | None:
    """A callback ``(prompts_done, tokens_done)`` advancing a prompts bar with prompts/s and tokens/s."""
    if _active is None:
        return None
    import time
    with _lock:
        task = _active.add_task(description, total=total, rate="")
    start, seen = time.time(), {"prompts": 0, "tokens": 0}

    def advance(prompts: int, tokens: int) -> None:
        seen["prompts"] += prompts
        seen["tokens"] += tokens
        dt = max(time.time() - start, 1e-6)
        _active.update(task, advance=prompts,
                       rate=f"{seen['prompts'] / dt:.1f} prompts/s, {seen['tokens'] / dt:.0f} tok/s")
    return advance


@contextlib.contextmanager
def stage(description: str) -> Iterator[None]:
    """A spinner line for a stage with no natural count (training, judging)."""
    if _active is None:
        yield
        return
    with _lock:
        task = _active.add_task(description, total=None, rate="")
    try:
        yield
    finally:
        _active.update(task, total=1, completed=1)
