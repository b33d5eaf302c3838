"""Command-line options generated from typed config dataclasses (help text from field metadata)."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def add_dataclass(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add ``--<prefix><field>`` for every field of ``cls`` with its type, default and help."""
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = hints[f.name]
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": default, "help": f.metadata.get("help", "")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            kwargs.update(nargs="*", type=typing.get_args(kind)[0])
        else:
            base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
            kwargs["type"] = base[0] if base[0] in (int, float, str) else str
        group.add_argument(flag, **kwargs)


def from_args(cls: type, args: argparse.Namespace, prefix: str = "", **override: Any):
    """Build ``cls`` from the parsed options that ``add_dataclass`` added."""
    values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls) if hasattr(args, prefix + f.name)}
    values.update(override)
    return cls(**values)
