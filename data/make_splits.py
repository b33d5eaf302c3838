"""Derived prompt files: a dev/test split of the held-out prompts, and a small mixed training set.

Why: settings are chosen on ``heldout_dev.jsonl`` and results reported on ``heldout_test.jsonl``,
so a reported figure carries no selection (the default loop keeps reporting on all of
``heldout.jsonl``, as its README table always has). ``train_small.jsonl`` is a task-balanced
subset of ``train.jsonl`` for loops on models far slower than the tiny policy (the SmolLM2 recipe).

Every file interleaves the tasks (slogan, poem, slogan, ...), so its first N prompts are balanced
too. Deterministic: ``python data/make_splits.py`` rewrites the same bytes.

    python data/make_splits.py                 # writes data/prompts/{heldout_dev,heldout_test,train_small}.jsonl
    python data/make_splits.py --check         # exit 1 if a shipped file differs from what it would write
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

PROMPTS = Path(__file__).resolve().parent / "prompts"


def read(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_task(lines: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for line in lines:
        groups.setdefault(json.loads(line)["task"], []).append(line)
    return groups


def interleave(groups: list[list[str]]) -> list[str]:
    """One of each task in turn (slogan, poem, ...), then what the longer lists have left."""
    return [x for row in itertools.zip_longest(*groups) for x in row if x is not None]


def split_heldout(lines: list[str], dev_every: int = 3) -> tuple[list[str], list[str]]:
    """Every ``dev_every``-th prompt of each task (counting from the first) to dev, the rest to test."""
    groups = by_task(lines)
    dev = [[x for i, x in enumerate(g) if i % dev_every == 0] for g in groups.values()]
    test = [[x for i, x in enumerate(g) if i % dev_every != 0] for g in groups.values()]
    return interleave(dev), interleave(test)


def small_train(lines: list[str], per_task: int = 48) -> list[str]:
    """``per_task`` prompts of each task, spread evenly over the task's prompts."""
    picked = []
    for g in by_task(lines).values():
        step = max(1, len(g) // per_task)
        picked.append(g[::step][:per_task])
    return interleave(picked)


def outputs() -> dict[Path, list[str]]:
    dev, test = split_heldout(read(PROMPTS / "heldout.jsonl"))
    return {PROMPTS / "heldout_dev.jsonl": dev, PROMPTS / "heldout_test.jsonl": test,
            PROMPTS / "train_small.jsonl": small_train(read(PROMPTS / "train.jsonl"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for path, lines in outputs().items():
        text = "\n".join(lines) + "\n"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({len(lines)} prompts)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python data/make_splits.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
