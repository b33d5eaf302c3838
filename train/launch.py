"""Start a training run the same way everywhere: in this process, ``accelerate launch``, or a template.

``launch_training(config)`` is the one entry point for the CLI, the loop and the flows:

- ``launcher.mode: local`` (default) trains in this process (CPU or one GPU);
- ``accelerate`` runs ``accelerate launch [--config_file F] --num_processes N ... -m prefwork.train.launch_entry
  --config RUN_DIR/config.json`` (FSDP, DDP, multi-process CPU);
- ``command`` runs a shell template (``{accelerate}``, ``{config}``, ``{run_dir}`` ...), e.g. an
  ``sbatch --wait`` wrapper for a cluster scheduler.

Either way the run directory gets ``config.json`` (the resolved config, no secrets),
``provenance.json``, ``train.log`` (the streamed output), the trainer's files under ``train/``
(``model/`` for SFT) and ``result.json`` naming the final checkpoint. ``dry_run=True`` validates
everything (files, names, the accelerate command line) and returns the commands without training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prefwork.pipeline.models import check_model_ref, default_cache_root, resolve_model
from prefwork.pipeline.pairs import drop_identical
from prefwork.pipeline.procs import stop_process_group
from prefwork.pipeline.run import RunDir, redact
from prefwork.pipeline.schemas import CHUNKS, PAIRS, SchemaError
from prefwork.pipeline.store import file_hash, read_jsonl, read_table, write_json
from prefwork.train.launch_commands import PLACEHOLDERS, accelerate_command, check_accelerate_command, command_for
from prefwork.train.launch_config import RESULT_FILE, ConfigError, TrainSpec, load_config_file, load_spec



@dataclass
class TrainResult:
    """What a launch produced (or, for a dry run, would run)."""

    run_dir: Path | None
    final_model: Path | None
    command: list[str] | str | None
    config: dict[str, Any]
    dry_run: bool = False
    returncode: int | None = None
    log: Path | None = None
    notes: list[str] = field(default_factory=list)


# -- validation -----------------------------------------------------------------------------------

def _check_model(path: str | None, src: str, name: str, notes: list[str]) -> None:
    """A model reference the resolver accepts (``pipeline.models``), checked without converting or downloading."""
    if not path:
        return
    try:
        notes.append(f"{name}: {check_model_ref(path)}")
    except ValueError as exc:
        raise ConfigError(f"{src}: field '{name}': {exc}") from None


def _resolved(spec: TrainSpec) -> TrainSpec:
    """The spec with its model references turned into local folders (a .gguf is converted once, a hub
    id downloaded), so the launched process, on this host or another, loads plain folders."""
    fix = lambda ref: str(resolve_model(ref, default_cache_root())) if ref else ref  # noqa: E731
    return dataclasses.replace(spec, model=fix(spec.model), reference=fix(spec.reference))


def validate_spec(spec: TrainSpec) -> list[str]:
    """Check the files and settings a run needs; return human notes. Raises ConfigError naming the field."""
    src, notes = spec.source, []
    _check_model(spec.model, src, "model", notes)
    _check_model(spec.reference, src, "reference", notes)
    data = Path(spec.data)
    if not data.is_file():
        raise ConfigError(f"{src}: field 'data': file not found: {data}")
    if spec.kind == "sft":
        try:  # UTF-8 with or without a byte-order mark, as every JSONL reader here (pipeline.store.iter_jsonl)
            rec = next(iter(read_jsonl(data, limit=1)), None)
        except SchemaError as exc:
            raise ConfigError(f"{src}: field 'data': {exc}") from None
        if not isinstance(rec, dict) or not {"prompt", "response"} <= set(rec):
            raise ConfigError(f"{src}: field 'data': {data} must be JSONL of {{prompt, response}} records")
        notes.append(f"data: SFT records in {data}")
    else:
        import polars as pl
        has_chunk = "chunk" in pl.read_parquet_schema(data)
        table = read_table(data, CHUNKS if has_chunk else PAIRS)
        if table.height == 0:
            raise ConfigError(f"{src}: field 'data': {data} has no rows")
        same = drop_identical(table)[1]  # rule (c): such pairs teach nothing; train_dpo drops them
        if same == table.height:
            raise ConfigError(f"{src}: field 'data': {same} of {table.height} pairs in {data} have the same chosen "
                              "and rejected text: nothing to train on")
        if same:
            notes.append(f"warning: {same} of {table.height} pairs in {data} have the same chosen and rejected "
                         "text; they are dropped (they carry no preference)")
        if spec.reference and (has_chunk or spec.chunks):
            raise ConfigError(f"{src}: field 'reference': sDPO sets each step's reference itself; "
                              "give 'reference' only for a single DPO run")
        plan = ("sDPO over the file's chunks" if has_chunk and not spec.chunks else
                f"sDPO over {spec.chunks} {spec.curriculum} chunks" if spec.chunks else "one DPO run")
        notes.append(f"data: {table.height} {'chunk' if has_chunk else 'pair'} rows in {data}; "
                     f"{plan} (schedule {spec.schedule or ('sdpo' if has_chunk or spec.chunks else 'dpo')})")
    acc = spec.launcher.accelerate_config
    if acc:
        cfg = load_config_file(acc)
        if "distributed_type" not in cfg:
            raise ConfigError(f"{acc}: field 'distributed_type': required in an accelerate config")
        notes.append(f"accelerate config: {acc} ({cfg['distributed_type']})")
    if spec.launcher.command:
        for _, name, _, _ in string.Formatter().parse(spec.launcher.command):
            if name is not None and name not in PLACEHOLDERS:
                raise ConfigError(f"{src}: field 'launcher.command': unknown placeholder {{{name}}} "
                                  f"(valid: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
    return notes


# -- running -------------------------------------------------------------------------------------

class _Tee:
    """A text stream that writes to several streams (terminal + train.log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def _stream(cmd: list[str] | str, env: dict[str, str], log_path: Path, echo: Callable[[str], None] | None) -> int:
    """Run ``cmd`` (a list, or a shell string), copy each output line to ``echo`` and the log."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {cmd if isinstance(cmd, str) else shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), env=env, text=True, bufsize=1,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if echo:
                    echo(line.rstrip("\n"))
            return proc.wait()
        except KeyboardInterrupt:  # the ranks and workers the command started go down with it
            stop_process_group(proc)
            raise


def _tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log, indented, for an error message that explains itself."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def _inputs(spec: TrainSpec) -> dict[str, str]:
    found = {spec.data: file_hash(spec.data)}
    for path in (spec.model, spec.reference):
        if path and (Path(path) / "config.json").is_file():
            found[str(Path(path) / "config.json")] = file_hash(Path(path) / "config.json")
    return found


def _absolute(spec: TrainSpec) -> TrainSpec:
    """Local paths made absolute: the launched process may start elsewhere (a GPU host's cwd)."""
    def fix(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p and Path(p).exists() else p
    la = dataclasses.replace(spec.launcher, accelerate_config=fix(spec.launcher.accelerate_config))
    return dataclasses.replace(spec, model=fix(spec.model), reference=fix(spec.reference), data=fix(spec.data),
                               launcher=la)


def launch_training(config: str | Path | dict | TrainSpec, *, overrides: dict[str, Any] | None = None,
                    kind: str | None = None, run_dir: str | Path | None = None, dry_run: bool = False,
                    echo: Callable[[str], None] | None = print) -> TrainResult:
    """Train as ``config`` says (a YAML/JSON path, a mapping or a TrainSpec) and return the result.

    ``overrides`` replace config fields (``launcher.mode`` style keys for the launcher);
    ``run_dir`` fixes the run directory (default: a new ``OUT/<stamp>-<name>``); ``echo``
    receives every log line (None: quiet; the log file is written anyway). Raises
    ``ConfigError`` for a bad config and ``RuntimeError`` when the launched command fails.
    """
    spec = _absolute(load_spec(config, overrides, kind))
    notes = validate_spec(spec)
    target = Path(run_dir or spec.run_dir or Path(spec.out) / f"<timestamp>-{spec.name}")
    if dry_run:
        spec = dataclasses.replace(spec, run_dir=str(target))
        cmd = command_for(spec, target)
        if spec.launcher.mode != "local":
            check_accelerate_command(accelerate_command(spec, target / "config.json"), spec.source)
        load_spec(redact(spec.to_dict()))  # the resolved config.json reads back as the entry will read it
        return TrainResult(target, None, cmd, redact(spec.to_dict()), dry_run=True, notes=notes)
    spec = _resolved(spec)
    rd = RunDir(target) if (run_dir or spec.run_dir) else RunDir.create(spec.out, spec.name)
    spec = dataclasses.replace(spec, run_dir=str(rd.path.resolve()))
    resolved = redact(spec.to_dict())
    rd.write_metadata(resolved, _inputs(spec))
    log_path = rd.path / "train.log"
    cmd = command_for(spec, rd.path)
    t0 = time.time()
    if cmd is None:
        from prefwork.train.launch_entry import run_spec
        with open(log_path, "a", encoding="utf-8") as log, _capture(log, echo):
            run_spec(spec)
        rc = 0
    else:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.launcher.env}
        if spec.launcher.cpu:
            env["ACCELERATE_USE_CPU"] = "true"
        rc = _stream(cmd, env, log_path, echo)
        if rc != 0:
            raise RuntimeError(f"training command failed with exit code {rc}; see {log_path}; its last lines:\n"
                               + _tail(log_path))
    result_path = rd.path / RESULT_FILE
    if not result_path.exists():  # e.g. a scheduler that returned before the job ran (use sbatch --wait)
        raise RuntimeError(f"the training command returned without writing {result_path}; see {log_path}")
    result = json.loads(result_path.read_text())
    final = Path(result["final_model"])
    if not (final / "config.json").is_file():
        raise RuntimeError(f"{result_path} names {final}, which holds no model")
    result["launch"] = {"mode": spec.launcher.mode, "returncode": rc, "wall_s": round(time.time() - t0, 2),
                        "command": cmd if isinstance(cmd, (str, type(None))) else shlex.join(cmd), "log": str(log_path)}
    write_json(result_path, result)
    return TrainResult(rd.path, final, cmd, resolved, returncode=rc, log=log_path, notes=notes)


@contextlib.contextmanager
def _capture(log, echo):
    """Copy this process's stdout/stderr and log records into ``log`` while training in-process."""
    import logging

    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, ours = logging.getLogger(), logging.getLogger("train")
    root.addHandler(handler)
    old_level = ours.level
    ours.setLevel(logging.INFO)
    streams = (sys.stdout, sys.stderr)
    sys.stdout = _Tee(streams[0], log) if echo else _Tee(log)
    sys.stderr = _Tee(streams[1], log) if echo else _Tee(log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        root.removeHandler(handler)
        ours.setLevel(old_level)
