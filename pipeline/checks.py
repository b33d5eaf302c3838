"""Option bounds declared once, on the config dataclasses' fields, and checked before any work.

A field says what it accepts in its metadata, beside its help text::

    n: int = field(default=8, metadata={"help": "candidates per prompt", "min": 1})
    on_long_prompt: str = field(default="error", metadata={"help": "...", "choices": ("error", "skip")})

Keys: ``min`` / ``max`` (inclusive), ``above`` (exclusive lower bound), ``choices``. Two consumers
read the same metadata: ``flows.options.add_dataclass`` turns it into argparse ``choices`` and a
checking ``type``, so the command line refuses a bad value before anything starts; and
``check_fields`` (called from each config's ``__post_init__``) refuses it in code paths that build
a config without the command line (flows, the loop, a saved config). ``None`` is always allowed
for optional fields.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def field_problem(meta: Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with ``value`` for a field with metadata ``meta``; ``None`` if nothing."""
    if value is None:
        return None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if "min" in meta and value < meta["min"]:
        return f"must be at least {meta['min']}, got {value}"
    if "above" in meta and not value > meta["above"]:
        return (f"must be positive, got {value}" if meta["above"] == 0
                else f"must be greater than {meta['above']}, got {value}")
    if "max" in meta and value > meta["max"]:
        return f"must be at most {meta['max']}, got {value}"
    return None


def option_name(name: str, prefix: str = "") -> str:
    """The command-line spelling of a field: ``shard_size`` -> ``--shard-size``."""
    return "--" + (prefix + name).replace("_", "-")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the field and its option for the first field of the dataclass ``obj``
    out of bounds, e.g. ``shard_size (--shard-size) must be at least 1, got 0``."""
    for f in dataclasses.fields(obj):
        problem = field_problem(f.metadata, getattr(obj, f.name))
        if problem:
            raise ValueError(f"{f.name} ({option_name(f.name, prefix)}) {problem}")
