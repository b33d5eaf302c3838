"""The training config file of ``prefwork train`` and ``launch_training``: load, merge, validate.

A config is YAML or JSON. Top-level keys are the run's (``kind``, ``model``, ``data``,
``out``, ``name``, ``run_dir``, ``reference``, ``schedule``, ``chunks``, ``curriculum``),
the trainer's fields (``DPOConfig`` for ``kind: dpo``, ``SFTConfig`` for ``kind: sft``), and a
``launcher:`` section (``LauncherConfig``). Sections read by other stages of a recipe
(``sample``, ``judge``, ``loop``, ``eval``, ``policy``) are allowed and ignored here.
Any other key, a wrong type or an unknown name (loss, schedule, curriculum, launcher mode)
is a ``ConfigError`` that names the file and the field, so a typo fails before a GPU starts.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefwork.pipeline.curriculum import METHODS
from prefwork.pipeline.engines_factory import ENGINES, EngineOptions
from prefwork.pipeline.sample import SampleConfig
from prefwork.train.configs import DPOConfig, LauncherConfig, SFTConfig
from prefwork.train.losses import LOSSES
from prefwork.train.sdpo import SCHEDULES

#: The file a training run writes last in its run directory, naming the final model (rank 0 of
#: ``train.launch_entry`` writes it; ``train.launch`` reads it).
RESULT_FILE = "result.json"
KINDS = ("dpo", "sft")
MODES = ("local", "accelerate", "command")
#: Recipe sections that belong to other stages (sampling, judging, the loop); train ignores them.
FOREIGN_SECTIONS = ("sample", "judge", "loop", "eval", "policy")


class ConfigError(ValueError):
    """A bad training config: the message names the file and the field."""


@dataclass
class TrainSpec:
    """One resolved training run (what ``launch_training`` takes and ``config.json`` records)."""

    kind: str = "dpo"
    model: str = ""
    data: str = ""
    out: str = "runs"
    name: str = "train"
    run_dir: str | None = None
    reference: str | None = None
    schedule: str | None = None
    chunks: int = 0
    curriculum: str = "logp_margin"
    dpo: DPOConfig = field(default_factory=DPOConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    source: str = "<config>"

    def trainer_config(self):
        return self.dpo if self.kind == "dpo" else self.sft

    def to_dict(self) -> dict[str, Any]:
        """The flat, JSON-able form (``config.json``) a launched process reads back with ``from_dict``:
        the one serialisation of a typed spec on its way to the trainer."""
        d = {k: getattr(self, k) for k in _RUN_KEYS}
        d.update(dataclasses.asdict(self.trainer_config()))
        d["launcher"] = dataclasses.asdict(self.launcher)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> "TrainSpec":
        """The typed spec back from ``to_dict``'s form (or a user's config mapping), validated."""
        return spec_from_dict(raw, source)


_RUN_KEYS = ("kind", "model", "data", "out", "name", "run_dir", "reference", "schedule", "chunks", "curriculum")
_RUN_TYPES = {"kind": str, "model": str, "data": str, "out": str, "name": str, "run_dir": str | None,
              "reference": str | None, "schedule": str | None, "chunks": int, "curriculum": str}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (.yaml/.yml) or JSON file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def _check_type(value: Any, kind: Any, source: str, name: str) -> Any:
    """``value`` checked against the annotated ``kind`` (an int is accepted for a float), or a ConfigError."""
    origin = typing.get_origin(kind)
    optional = origin in (typing.Union, types.UnionType)
    base = [a for a in typing.get_args(kind) if a is not type(None)][0] if optional else (origin or kind)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: field '{name}': must not be null")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is not bool and isinstance(value, bool)):
        raise ConfigError(f"{source}: field '{name}': expected {base.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], source: str, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"{source}: unknown field '{prefix}{key}' (valid: {', '.join(sorted(names))})")
    return cls(**{k: _check_type(v, hints[k], source, prefix + k) for k, v in values.items()})


def spec_from_dict(raw: dict[str, Any], source: str = "<config>", overrides: dict[str, Any] | None = None,
                   kind: str | None = None) -> TrainSpec:
    """Validate a config mapping (+ ``overrides``, e.g. CLI flags; ``launcher.x`` keys allowed) into a TrainSpec."""
    check_stage_sections(raw, source)
    raw = {k: v for k, v in raw.items() if k not in FOREIGN_SECTIONS and k != "source"}
    for key, value in (overrides or {}).items():
        if key.startswith("launcher."):
            raw.setdefault("launcher", {})
            raw["launcher"] = {**(raw["launcher"] or {}), key.split(".", 1)[1]: value}
        else:
            raw[key] = value
    if kind is not None:
        if raw.get("kind", kind) != kind:
            raise ConfigError(f"{source}: field 'kind': the file says {raw['kind']!r} but this is `train {kind}`")
        raw["kind"] = kind
    launcher = raw.pop("launcher", None) or {}
    if not isinstance(launcher, dict):
        raise ConfigError(f"{source}: field 'launcher': expected a mapping, got {launcher!r}")
    run = {k: _check_type(raw.pop(k), _RUN_TYPES[k], source, k) for k in list(raw) if k in _RUN_KEYS}
    spec_kind = run.get("kind", "dpo")
    if spec_kind not in KINDS:
        raise ConfigError(f"{source}: field 'kind': unknown kind {spec_kind!r} (valid: {', '.join(KINDS)})")
    cls = DPOConfig if spec_kind == "dpo" else SFTConfig
    trainer = _build(cls, raw, source)
    spec = TrainSpec(**run, launcher=_build(LauncherConfig, launcher, source, "launcher."), source=source,
                     **({"dpo": trainer} if spec_kind == "dpo" else {"sft": trainer}))
    check_names(spec)
    return spec


def check_stage_sections(raw: dict[str, Any], source: str) -> None:
    """The recipe's ``sample`` / ``judge`` sections use only the fields their stages know."""
    engine_fields = {f.name for f in dataclasses.fields(EngineOptions)}
    known = {"sample": {"engine", "model"} | engine_fields | {f.name for f in dataclasses.fields(SampleConfig)},
             "judge": {"engine", "model", "prompt", "rubric", "temperature", "max_tokens"} | engine_fields}
    for section, names in known.items():
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: field '{section}': expected a mapping, got {values!r}")
        for key in values:
            if key not in names:
                raise ConfigError(f"{source}: unknown field '{section}.{key}' (valid: {', '.join(sorted(names))})")
        if "engine" in values and values["engine"] not in ENGINES:
            raise ConfigError(f"{source}: field '{section}.engine': unknown engine {values['engine']!r} "
                              f"(valid: {', '.join(ENGINES)})")


def check_names(spec: TrainSpec) -> None:
    """Names that must come from a fixed set (loss, schedule, curriculum, launcher mode)."""
    src = spec.source
    if spec.kind == "dpo" and spec.dpo.loss not in LOSSES:
        raise ConfigError(f"{src}: field 'loss': unknown loss {spec.dpo.loss!r} (valid: {', '.join(sorted(LOSSES))})")
    if spec.schedule is not None and spec.schedule not in SCHEDULES:
        raise ConfigError(f"{src}: field 'schedule': unknown schedule {spec.schedule!r} "
                          f"(valid: {', '.join(SCHEDULES)})")
    if spec.curriculum not in METHODS:
        raise ConfigError(f"{src}: field 'curriculum': unknown method {spec.curriculum!r} (valid: {', '.join(METHODS)})")
    if spec.chunks < 0:
        raise ConfigError(f"{src}: field 'chunks': must be >= 0, got {spec.chunks}")
    mode = spec.launcher.mode
    if mode not in MODES:
        raise ConfigError(f"{src}: field 'launcher.mode': unknown mode {mode!r} (valid: {', '.join(MODES)})")
    if mode == "command" and not spec.launcher.command:
        raise ConfigError(f"{src}: field 'launcher.command': mode 'command' needs a command template")
    if spec.launcher.num_processes is not None and spec.launcher.num_processes < 1:
        raise ConfigError(f"{src}: field 'launcher.num_processes': must be >= 1")
    if not spec.model:
        raise ConfigError(f"{src}: field 'model': required (a model directory or hub id)")
    if not spec.data:
        raise ConfigError(f"{src}: field 'data': required (pairs/chunks Parquet, or SFT JSONL)")


def load_spec(config: str | Path | dict | TrainSpec | None, overrides: dict[str, Any] | None = None,
              kind: str | None = None) -> TrainSpec:
    """A TrainSpec from a file path, a mapping or a TrainSpec (re-validated with ``overrides``)."""
    if isinstance(config, TrainSpec) and not overrides:  # typed already: checked, not converted
        if kind is not None and config.kind != kind:
            raise ConfigError(f"{config.source}: field 'kind': the spec says {config.kind!r} but this is `train {kind}`")
        check_names(config)
        return config
    if isinstance(config, TrainSpec):
        return spec_from_dict(config.to_dict(), config.source, overrides, kind)
    if config is None:
        return spec_from_dict({}, "<command line>", overrides, kind)
    if isinstance(config, dict):
        return spec_from_dict(config, "<config>", overrides, kind)
    return spec_from_dict(load_config_file(config), str(config), overrides, kind)
