"""Command-line options generated from typed config dataclasses (help text from field metadata).

Bounds in a field's metadata (``min``, ``max``, ``above``, ``choices``: ``pipeline.checks``) become
argparse checks, so a bad value is refused with the option's name before any work starts.
A config may carry other configs (``carried``: the loop holds a ``DPOConfig``); their fields
appear as flat options (``--beta``) and land in the carried object (``from_args``).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Mapping

from prefwork.pipeline.checks import field_problem


def add_dataclass(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add ``--<prefix><option>`` for every option of ``cls`` (``options_of``) with its type, default and help."""
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None)
    for o in options_of(cls):
        if o.name in skip:
            continue
        flag = "--" + (prefix + o.name).replace("_", "-")
        # argparse %-formats help texts: a literal % (e.g. "7%") must be doubled or --help crashes
        help_ = o.meta.get("help", "").replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": prefix + o.name, "default": o.default, "help": help_}
        if o.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(o.kind) is list:
            kwargs.update(nargs="*", type=typing.get_args(o.kind)[0])
        else:
            base = [a for a in typing.get_args(o.kind) if a is not type(None)] or [o.kind]
            kwargs["type"] = _checked(base[0] if base[0] in (int, float, str) else str, o.meta)
            if "choices" in o.meta:
                kwargs["choices"] = tuple(o.meta["choices"])
        group.add_argument(flag, **kwargs)


def _checked(convert, meta):
    """``convert`` plus the field's bounds (``pipeline.checks``): argparse rejects a bad value itself."""
    if not any(k in meta for k in ("min", "max", "above")):
        return convert

    def parse(text: str):
        value = convert(text)
        problem = field_problem(meta, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    parse.__name__ = convert.__name__  # argparse names the type in "invalid int value"
    return parse


def from_args(cls: type, args: argparse.Namespace, prefix: str = "", **override: Any):
    """Build ``cls`` from the parsed options that ``add_dataclass`` added (carried configs included)."""
    values: dict[str, Any] = {}
    for o in options_of(cls):
        if hasattr(args, prefix + o.name):
            value = getattr(args, prefix + o.name)
            if o.inner is None:
                values[o.outer] = value
            else:
                values.setdefault(o.outer, {})[o.inner] = value
    values.update(override)
    return config_from_dict(cls, values)


# -- configs that carry other configs ----------------------------------------------------------

def carried(factory: Callable[[], Any], options: dict[str, str | tuple[str, str] | None]):
    """A config field that holds another config (the loop's ``DPOConfig``, ``SampleConfig`` ...)
    instead of copying its fields, so the typed object travels on unchanged.

    ``options`` lists the inner fields the command line shows as flat options, in order:
    ``option -> help`` (``None``: the inner field's own help) or ``option -> (inner field, help)``
    where the option is spelled otherwise (``--curriculum`` sets ``ChunkConfig.method``). Bounds
    (``pipeline.checks``) come from the inner field; the default from ``factory()``.
    """
    return dataclasses.field(default_factory=factory, metadata={"carried": options})


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option of a config: a plain field (``inner`` None) or a carried config's field."""

    name: str
    outer: str
    inner: str | None
    kind: Any
    default: Any
    meta: Mapping[str, Any]


def options_of(cls: type) -> list[Option]:
    """The options of config class ``cls`` in field order, a carried config's options at its place."""
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if "carried" not in f.metadata:
            out.append(Option(f.name, f.name, None, hints[f.name], default, f.metadata))
            continue
        inner_hints = typing.get_type_hints(type(default))
        inner_fields = {g.name: g for g in dataclasses.fields(default)}
        for option, spec in f.metadata["carried"].items():
            name, help_ = spec if isinstance(spec, tuple) else (option, spec)
            meta = {**inner_fields[name].metadata, **({"help": help_} if help_ else {})}
            out.append(Option(option, f.name, name, inner_hints[name], getattr(default, name), meta))
    return out


def option_values(config: Any) -> dict[str, Any]:
    """Option name -> current value of a config object (``--beta`` reads ``config.train.beta``)."""
    return {o.name: getattr(getattr(config, o.outer), o.inner) if o.inner else getattr(config, o.outer)
            for o in options_of(type(config))}


def config_from_dict(cls: type, data: Mapping[str, Any]):
    """``cls`` from a mapping: its carried configs as mappings (``dataclasses.asdict``) or as flat
    option names (``{"beta": 0.3}``, as the command line and runs saved before configs were carried
    spell them); a carried config starts from its field's default. Unknown keys are a ``TypeError``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    flat = {o.name: o for o in options_of(cls) if o.inner is not None and o.name not in fields}
    top: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    for key, value in data.items():  # flat names first: a carried mapping below wins over them
        if key in flat:
            inner.setdefault(flat[key].outer, {})[flat[key].inner] = value
        elif not (key in fields and "carried" in fields[key].metadata and isinstance(value, Mapping)):
            top[key] = value
    for key, value in data.items():
        if key in fields and "carried" in fields[key].metadata and isinstance(value, Mapping):
            inner.setdefault(key, {}).update(value)
    for key, values in inner.items():
        top[key] = dataclasses.replace(fields[key].default_factory(), **values)  # type: ignore[misc]
    return cls(**top)


class CarriesConfigs:
    """Base of a config that carries other configs: its one serialised form and the way back."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The config ``to_dict`` wrote (a flow parameter, a run's config.json) or flat option names
        (``{"beta": 0.3}``: runs saved before the configs were carried)."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, carried configs as mappings (``from_dict`` reads it back)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]
