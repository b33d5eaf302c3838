"""``prefwork init-policy``: build the embedded tiny policy (no download), cached."""
from __future__ import annotations

import argparse

from prefwork.flows.loop_config import LoopConfig

NAME = "init-policy"
HELP = "build the tiny default policy (BPE tokenizer + small Llama, SFT on data/corpus); cached"


def register(parser: argparse.ArgumentParser) -> None:
    d = LoopConfig()
    parser.add_argument("--workspace", default=d.workspace, help="run root; the policy is cached in WORKSPACE/.cache")
    parser.add_argument("--corpus", default=d.corpus, help="SFT corpus (JSONL of {prompt, response})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prefwork.train.sft import init_policy
    path = init_policy(Path(args.workspace) / ".cache", args.corpus)
    print(path)
    return 0
