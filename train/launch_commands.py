"""The command line that starts a training run: ``accelerate launch ...`` or a user's template.

``train.launch`` runs what ``command_for`` returns (``None``: train in this process). Apart
so that how a run is started can be read (and checked with accelerate's own parser) in one place.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path

from prefwork.train.launch_config import ConfigError, TrainSpec

ENTRY = ("-m", "prefwork.train.launch_entry")
PLACEHOLDERS = ("accelerate", "entry", "config", "run_dir", "python", "log", "num_processes")


def accelerate_command(spec: TrainSpec, config_path: Path) -> list[str]:
    """``accelerate launch ... -m prefwork.train.launch_entry --config CONFIG`` for this spec.

    With ``cpu`` and N > 1 processes the command uses ``--multi_gpu`` (torchrun) and the entry
    starts gloo CPU processes: accelerate 1.x's ``--cpu`` alone runs a single process. Without an
    accelerate config a multi-process run asks for ``--main_process_port 0`` (a free port) instead
    of torchrun's fixed 29500, so two runs on one host (two CI jobs, a loop and a sweep) do not
    race for the same rendezvous port.
    """
    la = spec.launcher
    exe = Path(sys.executable).with_name("accelerate")
    cmd = [str(exe) if exe.exists() else "accelerate", "launch"]
    if la.accelerate_config:
        cmd += ["--config_file", str(Path(la.accelerate_config).resolve())]
    if la.cpu:
        cmd += ["--multi_gpu"] if (la.num_processes or 1) > 1 else ["--cpu"]
    if la.num_processes is not None:
        cmd += ["--num_processes", str(la.num_processes)]
    if not la.accelerate_config:
        cmd += ["--num_machines", "1", "--dynamo_backend", "no"]
        cmd += ["--mixed_precision", la.mixed_precision or "no"]
        if (la.num_processes or 1) > 1 and "--main_process_port" not in la.extra_args:
            cmd += ["--main_process_port", "0"]
    elif la.mixed_precision:
        cmd += ["--mixed_precision", la.mixed_precision]
    return cmd + list(la.extra_args) + [*ENTRY, "--config", str(config_path)]


def check_accelerate_command(cmd: list[str], src: str) -> None:
    """Parse ``cmd`` with accelerate's own ``launch`` parser: a bad flag fails here, not on the GPU host."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    parser.exit_on_error = False
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            parser.parse_args(cmd[2:])
    except (SystemExit, argparse.ArgumentError) as exc:  # argparse exits on a bad flag
        raise ConfigError(f"{src}: field 'launcher': accelerate rejects the command {shlex.join(cmd)} ({exc})") from exc


def command_for(spec: TrainSpec, run_dir: Path) -> list[str] | str | None:
    """The command that trains ``spec`` into ``run_dir`` (None: in-process)."""
    config = run_dir / "config.json"
    if spec.launcher.mode == "local":
        return None
    acc = accelerate_command(spec, config)
    if spec.launcher.mode == "accelerate":
        return acc
    values = {"accelerate": shlex.join(acc), "entry": shlex.join([sys.executable, *ENTRY, "--config", str(config)]),
              "config": shlex.quote(str(config)), "run_dir": shlex.quote(str(run_dir)),
              "python": shlex.quote(sys.executable), "log": shlex.quote(str(run_dir / "train.log")),
              "num_processes": str(spec.launcher.num_processes or 1)}
    return spec.launcher.command.format(**values)
